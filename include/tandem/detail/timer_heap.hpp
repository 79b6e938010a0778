// tandem — min-heap of intrusive timer nodes with O(log n) removal. Layer: detail.
// A node lives inside the awaiter that sleeps, so arming a timer allocates nothing beyond
// the heap's (reused) pointer array.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace tandem::detail {

struct timer_node {
    using clock = std::chrono::steady_clock;
    static constexpr std::size_t not_queued = std::numeric_limits<std::size_t>::max();

    clock::time_point deadline{};
    std::uint64_t sequence = 0;            // equal deadlines fire in arming order
    std::size_t heap_index = not_queued;
    void (*on_expire)(timer_node*) noexcept = nullptr;

    bool queued() const noexcept { return heap_index != not_queued; }
};

class timer_heap {
public:
    bool empty() const noexcept { return m_heap.empty(); }
    std::size_t size() const noexcept { return m_heap.size(); }
    timer_node* top() const noexcept { return m_heap.front(); }

    void push(timer_node& node) {
        node.sequence = m_next_sequence++;
        node.heap_index = m_heap.size();
        m_heap.push_back(&node);
        sift_up(node.heap_index);
    }

    void erase(timer_node& node) noexcept {
        if (!node.queued()) return;
        const std::size_t i = node.heap_index;
        node.heap_index = timer_node::not_queued;
        timer_node* last = m_heap.back();
        m_heap.pop_back();
        if (last == &node) return;
        m_heap[i] = last;
        last->heap_index = i;
        sift_down(i);
        sift_up(last->heap_index);
    }

    timer_node& pop() noexcept {
        timer_node& node = *m_heap.front();
        erase(node);
        return node;
    }

private:
    static bool before(const timer_node* a, const timer_node* b) noexcept {
        return a->deadline < b->deadline || (a->deadline == b->deadline && a->sequence < b->sequence);
    }
    void place(std::size_t i, timer_node* n) noexcept {
        m_heap[i] = n;
        n->heap_index = i;
    }
    void sift_up(std::size_t i) noexcept {
        timer_node* n = m_heap[i];
        while (i > 0) {
            const std::size_t parent = (i - 1) / 2;
            if (!before(n, m_heap[parent])) break;
            place(i, m_heap[parent]);
            i = parent;
        }
        place(i, n);
    }
    void sift_down(std::size_t i) noexcept {
        timer_node* n = m_heap[i];
        const std::size_t count = m_heap.size();
        for (;;) {
            std::size_t child = 2 * i + 1;
            if (child >= count) break;
            if (child + 1 < count && before(m_heap[child + 1], m_heap[child])) ++child;
            if (!before(m_heap[child], n)) break;
            place(i, m_heap[child]);
            i = child;
        }
        place(i, n);
    }

    std::vector<timer_node*> m_heap;
    std::uint64_t m_next_sequence = 0;
};

} // namespace tandem::detail
