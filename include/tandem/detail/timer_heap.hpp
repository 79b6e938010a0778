// tandem — the loop's timer queue. Layer: detail.
//
// A node lives inside the awaiter that sleeps, so arming a timer allocates nothing beyond
// the queue's reused arrays. The heap is 4-ary and holds its sort keys inline, so a sift
// compares contiguous entries. Entries name a *slot*, not a node: a sift never writes to the
// nodes (at a million timers each such write was a cache miss, about 45% of the cost).
// Cancelling a timer empties its slot in O(1); the dead entry is dropped when it reaches the
// top, and the heap is compacted whenever dead entries outnumber live ones, so memory stays
// proportional to the live timers.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace tandem::detail {

struct timer_node {
    using clock = std::chrono::steady_clock;
    static constexpr std::uint32_t no_slot = std::numeric_limits<std::uint32_t>::max();

    clock::time_point deadline{};
    std::uint32_t slot = no_slot;
    void (*on_expire)(timer_node*) noexcept = nullptr;

    bool queued() const noexcept { return slot != no_slot; }
};

class timer_heap {
public:
    /// Armed (not cancelled) timers.
    std::size_t size() const noexcept { return m_heap.size() - m_dead; }
    /// Heap entries including cancelled ones not yet dropped (bounded by about 2 × size()).
    std::size_t entries() const noexcept { return m_heap.size(); }
    bool empty() noexcept {
        drop_dead_top();
        return m_heap.empty();
    }
    /// Deadline of the earliest armed timer; the queue must not be empty().
    timer_node::clock::time_point next_deadline() noexcept {
        drop_dead_top();
        return m_heap.front().deadline;
    }

    void push(timer_node& node) {
        const std::uint32_t slot = take_slot();
        m_slots[slot] = &node;
        node.slot = slot;
        m_heap.push_back(entry{node.deadline, m_next_sequence++, slot});
        sift_up(m_heap.size() - 1);
    }

    /// Disarms a timer; O(1).
    void erase(timer_node& node) noexcept {
        if (!node.queued()) return;
        m_slots[node.slot] = nullptr; // the entry stays until it surfaces or a compaction
        node.slot = timer_node::no_slot;
        if (++m_dead > m_heap.size() / 2 && m_dead >= min_compaction) compact();
    }

    /// Removes and returns the earliest armed timer; the queue must not be empty().
    timer_node& pop() noexcept {
        drop_dead_top();
        const std::uint32_t slot = m_heap.front().slot;
        timer_node& node = *m_slots[slot];
        node.slot = timer_node::no_slot;
        remove_top();
        release_slot(slot);
        return node;
    }

private:
    static constexpr std::size_t arity = 4;
    static constexpr std::size_t min_compaction = 1024;

    struct entry {
        timer_node::clock::time_point deadline;
        std::uint64_t sequence; // equal deadlines fire in arming order
        std::uint32_t slot;
    };

    static bool before(const entry& a, const entry& b) noexcept {
        return a.deadline < b.deadline || (a.deadline == b.deadline && a.sequence < b.sequence);
    }

    std::uint32_t take_slot() {
        if (!m_free.empty()) {
            const std::uint32_t s = m_free.back();
            m_free.pop_back();
            return s;
        }
        m_slots.push_back(nullptr);
        // Every slot may be free at once: reserve now so release_slot never allocates.
        if (m_free.capacity() < m_slots.size()) m_free.reserve(2 * m_slots.size());
        return static_cast<std::uint32_t>(m_slots.size() - 1);
    }
    void release_slot(std::uint32_t s) noexcept { m_free.push_back(s); }
    bool dead(const entry& e) const noexcept { return m_slots[e.slot] == nullptr; }

    void drop_dead_top() noexcept {
        while (!m_heap.empty() && dead(m_heap.front())) {
            const std::uint32_t slot = m_heap.front().slot;
            remove_top();
            --m_dead;
            release_slot(slot);
        }
    }

    void remove_top() noexcept {
        const entry last = m_heap.back();
        m_heap.pop_back();
        if (m_heap.empty()) return;
        m_heap.front() = last;
        sift_down(0);
    }

    /// Drops every dead entry and rebuilds the heap bottom-up: O(n), amortized over the
    /// at least n/2 cancellations that triggered it.
    void compact() noexcept {
        std::size_t kept = 0;
        for (const entry& e : m_heap) {
            if (dead(e)) release_slot(e.slot);
            else m_heap[kept++] = e;
        }
        m_heap.resize(kept);
        m_dead = 0;
        for (std::size_t i = m_heap.size() / arity + 1; i-- > 0;)
            if (i < m_heap.size()) sift_down(i);
    }

    void sift_up(std::size_t i) noexcept {
        const entry e = m_heap[i];
        while (i > 0) {
            const std::size_t parent = (i - 1) / arity;
            if (!before(e, m_heap[parent])) break;
            m_heap[i] = m_heap[parent];
            i = parent;
        }
        m_heap[i] = e;
    }
    void sift_down(std::size_t i) noexcept {
        const entry e = m_heap[i];
        const std::size_t count = m_heap.size();
        for (;;) {
            const std::size_t first = arity * i + 1;
            if (first >= count) break;
            std::size_t best = first;
            const std::size_t end = std::min(first + arity, count);
            for (std::size_t c = first + 1; c < end; ++c)
                if (before(m_heap[c], m_heap[best])) best = c;
            if (!before(m_heap[best], e)) break;
            m_heap[i] = m_heap[best];
            i = best;
        }
        m_heap[i] = e;
    }

    std::vector<entry> m_heap;
    std::vector<timer_node*> m_slots; // slot → node; nullptr once cancelled
    std::vector<std::uint32_t> m_free;
    std::size_t m_dead = 0;
    std::uint64_t m_next_sequence = 0;
};

} // namespace tandem::detail
