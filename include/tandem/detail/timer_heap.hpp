// tandem — the loop's timer queue. Layer: detail.
//
// A node lives inside the awaiter that sleeps, so arming a timer allocates nothing beyond
// the queue's reused arrays. The heap is 4-ary and holds its sort keys inline, so a sift
// compares contiguous entries. Entries name a *slot*, not a node: a sift never writes to the
// nodes (at a million timers each such write was a cache miss, about 45% of the cost).
// An entry is 16 bytes and the array is laid out so that the four children of a node fill
// exactly one 64-byte cache line: a sift touches one line per level, and it asks for the
// next level's four candidate lines while it compares this one (at a million timers a pop
// was a chain of cache misses, one or two per level).
// Cancelling a timer empties its slot in O(1); the dead entry is dropped when it reaches the
// top, and the heap is compacted whenever dead entries outnumber live ones, so memory stays
// proportional to the live timers.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
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
    std::size_t size() const noexcept { return m_size - m_dead; }
    /// Heap entries including cancelled ones not yet dropped (bounded by about 2 × size()).
    std::size_t entries() const noexcept { return m_size; }
    bool empty() noexcept {
        drop_dead_top();
        return m_size == 0;
    }
    /// Deadline of the earliest armed timer; the queue must not be empty().
    timer_node::clock::time_point next_deadline() noexcept {
        drop_dead_top();
        return timer_node::clock::time_point(timer_node::clock::duration(heap()[0].deadline));
    }

    void push(timer_node& node) {
        if (m_size + pad >= m_capacity) grow(); // first: a failure leaves everything as it was
        const std::uint32_t slot = take_slot();
        m_slots[slot] = &node;
        node.slot = slot;
        if (m_next_sequence == std::numeric_limits<std::uint32_t>::max()) renumber();
        heap()[m_size] = entry{node.deadline.time_since_epoch().count(), m_next_sequence++, slot};
        sift_up(m_size++);
    }

    /// Disarms a timer; O(1).
    void erase(timer_node& node) noexcept {
        if (!node.queued()) return;
        m_slots[node.slot] = nullptr; // the entry stays until it surfaces or a compaction
        node.slot = timer_node::no_slot;
        if (++m_dead > m_size / 2 && m_dead >= min_compaction) compact();
    }

    /// Removes and returns the earliest armed timer; the queue must not be empty().
    timer_node& pop() noexcept {
        drop_dead_top();
        const std::uint32_t slot = heap()[0].slot;
        timer_node& node = *m_slots[slot];
        node.slot = timer_node::no_slot;
        remove_top();
        release_slot(slot);
        if (m_size >= prefetch_from) {
            // Pops come in runs (every due timer of a turn): start the next pop's loads now.
            // The next top's slot was asked for by the pop before (it was a child of the
            // root), so its node can be; the one after is among the root's children.
            const entry* h = heap();
            if (timer_node* next = m_slots[h[0].slot]) __builtin_prefetch(next);
            for (std::size_t c = 1; c <= arity && c < m_size; ++c) __builtin_prefetch(&m_slots[h[c].slot]);
        }
        return node;
    }

    /// Test hook: the arming counter wraps after 2^32 timers; this brings that moment near.
    void skip_sequence_to(std::uint32_t next) noexcept {
        renumber();
        if (next > m_next_sequence) m_next_sequence = next;
    }

private:
    static constexpr std::size_t arity = 4; // 8 measured slower at a million timers
    static constexpr std::size_t min_compaction = 1024;
    static constexpr std::size_t line = 64;
    static constexpr std::size_t group = arity * 16; // bytes of one node's children
    // The root sits at index `pad` of the buffer, so the children of logical node i,
    // 4i+1 … 4i+4, start at byte 64(i+1): one aligned line.
    static constexpr std::size_t pad = arity - 1;
    // Below this many entries the heap lives in the nearest caches and prefetching is noise.
    static constexpr std::size_t prefetch_from = 4096;

    struct entry {
        std::int64_t deadline; // steady_clock ticks
        std::uint32_t sequence; // equal deadlines fire in arming order
        std::uint32_t slot;
    };
    static_assert(sizeof(entry) * arity == group);
    static constexpr std::size_t alignment = group < line ? line : group;

    struct aligned_delete {
        void operator()(entry* p) const noexcept { ::operator delete[](p, std::align_val_t{alignment}); }
    };

    static bool before(const entry& a, const entry& b) noexcept {
        return a.deadline < b.deadline || (a.deadline == b.deadline && a.sequence < b.sequence);
    }

    entry* heap() const noexcept { return m_buffer.get() + pad; }

    void grow() {
        const std::size_t capacity = m_capacity == 0 ? 256 : 2 * m_capacity;
        std::unique_ptr<entry[], aligned_delete> bigger(
            static_cast<entry*>(::operator new[](capacity * sizeof(entry), std::align_val_t{alignment})));
        if (m_size != 0) std::memcpy(bigger.get() + pad, heap(), m_size * sizeof(entry));
        m_buffer = std::move(bigger);
        m_capacity = capacity;
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
        while (m_size != 0 && dead(heap()[0])) {
            const std::uint32_t slot = heap()[0].slot;
            remove_top();
            --m_dead;
            release_slot(slot);
        }
    }

    void remove_top() noexcept {
        entry* h = heap();
        const entry last = h[--m_size];
        if (m_size == 0) return;
        h[0] = last;
        sift_down(0);
    }

    /// Drops every dead entry and rebuilds the heap bottom-up: O(n), amortized over the
    /// at least n/2 cancellations that triggered it.
    void compact() noexcept {
        drop_dead();
        for (std::size_t i = m_size / arity + 1; i-- > 0;)
            if (i < m_size) sift_down(i);
    }
    void drop_dead() noexcept {
        entry* h = heap();
        std::size_t kept = 0;
        for (std::size_t i = 0; i < m_size; ++i) {
            if (dead(h[i])) release_slot(h[i].slot);
            else h[kept++] = h[i];
        }
        m_size = kept;
        m_dead = 0;
    }

    /// The arming counter is about to wrap: number the live entries afresh, in firing order.
    /// A sorted array is a heap. O(n log n) once per 2^32 timers armed.
    void renumber() noexcept {
        if (m_size != 0) {
            drop_dead();
            entry* h = heap();
            std::sort(h, h + m_size, before);
            for (std::size_t i = 0; i < m_size; ++i) h[i].sequence = static_cast<std::uint32_t>(i);
        }
        m_next_sequence = static_cast<std::uint32_t>(m_size);
    }

    void sift_up(std::size_t i) noexcept {
        entry* h = heap();
        const entry e = h[i];
        while (i > 0) {
            const std::size_t parent = (i - 1) / arity;
            if (!before(e, h[parent])) break;
            h[i] = h[parent];
            i = parent;
        }
        h[i] = e;
    }
    void sift_down(std::size_t i) noexcept {
        entry* h = heap();
        const entry e = h[i];
        const std::size_t count = m_size;
        const bool prefetch = count >= prefetch_from;
        for (;;) {
            const std::size_t first = arity * i + 1;
            if (first >= count) break;
            if (prefetch) { // the grandchildren: whichever child wins, its line is on its way
                for (std::size_t g = arity * first + 1, k = 0; k < arity && g < count; ++k, g += arity)
                    for (std::size_t b = 0; b < group; b += line) __builtin_prefetch(reinterpret_cast<const char*>(h + g) + b);
            }
            std::size_t best = first;
            const std::size_t end = std::min(first + arity, count);
            for (std::size_t c = first + 1; c < end; ++c)
                if (before(h[c], h[best])) best = c;
            if (!before(h[best], e)) break;
            h[i] = h[best];
            i = best;
        }
        h[i] = e;
    }

    std::unique_ptr<entry[], aligned_delete> m_buffer; // `pad` unused entries, then the heap
    std::size_t m_capacity = 0;                         // entries in m_buffer, pad included
    std::size_t m_size = 0;
    std::vector<timer_node*> m_slots; // slot → node; nullptr once cancelled
    std::vector<std::uint32_t> m_free;
    std::size_t m_dead = 0;
    std::uint32_t m_next_sequence = 0;
};

} // namespace tandem::detail
