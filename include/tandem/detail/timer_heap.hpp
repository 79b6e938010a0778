// tandem — min-heap of intrusive timer nodes with O(log n) removal. Layer: detail.
//
// A node lives inside the awaiter that sleeps, so arming a timer allocates nothing beyond
// the heap's (reused) array. The array holds the sort keys inline and is 4-ary: a sift
// compares contiguous entries instead of chasing node pointers (with a million timers every
// pointer chase is a cache miss), and the tree is half as deep as a binary heap.
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
    std::size_t heap_index = not_queued;
    void (*on_expire)(timer_node*) noexcept = nullptr;

    bool queued() const noexcept { return heap_index != not_queued; }
};

class timer_heap {
public:
    bool empty() const noexcept { return m_heap.empty(); }
    std::size_t size() const noexcept { return m_heap.size(); }
    timer_node::clock::time_point next_deadline() const noexcept { return m_heap.front().deadline; }

    void push(timer_node& node) {
        const std::size_t i = m_heap.size();
        m_heap.push_back(entry{node.deadline, m_next_sequence++, &node});
        node.heap_index = i;
        sift_up(i);
    }

    void erase(timer_node& node) noexcept {
        if (!node.queued()) return;
        const std::size_t i = node.heap_index;
        node.heap_index = timer_node::not_queued;
        const entry last = m_heap.back();
        m_heap.pop_back();
        if (i == m_heap.size()) return; // it was the last entry
        m_heap[i] = last;
        last.node->heap_index = i;
        if (i > 0 && before(last, m_heap[(i - 1) / arity])) sift_up(i);
        else sift_down(i);
    }

    timer_node& pop() noexcept {
        timer_node& node = *m_heap.front().node;
        erase(node);
        return node;
    }

private:
    static constexpr std::size_t arity = 4;

    struct entry {
        timer_node::clock::time_point deadline;
        std::uint64_t sequence; // equal deadlines fire in arming order
        timer_node* node;
    };

    static bool before(const entry& a, const entry& b) noexcept {
        return a.deadline < b.deadline || (a.deadline == b.deadline && a.sequence < b.sequence);
    }
    void place(std::size_t i, const entry& e) noexcept {
        m_heap[i] = e;
        e.node->heap_index = i;
    }
    void sift_up(std::size_t i) noexcept {
        const entry e = m_heap[i];
        while (i > 0) {
            const std::size_t parent = (i - 1) / arity;
            if (!before(e, m_heap[parent])) break;
            place(i, m_heap[parent]);
            i = parent;
        }
        place(i, e);
    }
    void sift_down(std::size_t i) noexcept {
        const entry e = m_heap[i];
        const std::size_t count = m_heap.size();
        for (;;) {
            const std::size_t first = arity * i + 1;
            if (first >= count) break;
            std::size_t best = first;
            const std::size_t end = first + arity < count ? first + arity : count;
            for (std::size_t c = first + 1; c < end; ++c)
                if (before(m_heap[c], m_heap[best])) best = c;
            if (!before(m_heap[best], e)) break;
            place(i, m_heap[best]);
            i = best;
        }
        place(i, e);
    }

    std::vector<entry> m_heap;
    std::uint64_t m_next_sequence = 0;
};

} // namespace tandem::detail
