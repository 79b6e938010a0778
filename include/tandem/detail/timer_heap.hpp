// tandem — the loop's timer queue. Layer: detail.
//
// A node lives inside the awaiter that sleeps, so arming a timer allocates nothing beyond
// the queue's reused arrays.
//
// The queue is a radix heap (Ahuja, Mehlhorn, Orlin, Tarjan 1990): a loop only ever takes
// timers that are due, so the keys it removes never decrease, and a monotone queue can file
// each key by the highest bit in which it differs from the last key taken (`base`). Arming
// appends to one of 65 buckets; taking the earliest empties the lowest bucket into the
// buckets below it around its minimum. Every move is a sequential read or append: at a
// million timers the 4-ary heap this replaces spent most of its time in dependent cache
// misses, one or two per level of a sift over 16 MiB.
//
// Equal deadlines fire in arming order without a counter: equal keys always share a bucket,
// appends go to the end, and a bucket is emptied in order, so their relative order never
// changes.
//
// A deadline earlier than `base` (a timer armed in the past, or one earlier than the next
// deadline once that was looked at) goes to a small binary heap ordered by (deadline,
// arming counter) instead, so every timer still comes out in exact deadline order. At equal
// keys the early one is the older: a key goes to the buckets only while the base is at or
// below it, and the base passes a bucketed key only once that entry is gone. When the early
// heap outgrows the buckets (a base raised to a far timer by a look, with timeouts armed
// under it), everything is filed again around the least key (rebase).
//
// Entries name a *slot* (and carry the node only to prefetch it). Cancelling a timer empties
// its slot in O(1); the dead entry is dropped when it reaches the front, and everything is
// compacted whenever dead entries outnumber live ones, so entries stay proportional to the
// live timers. When a large bucket empties and the buckets together hold more than a few
// times the room of the most entries ever armed, empty buckets give their memory back and
// sparse ones shrink (see trim).
//
// A look at the next deadline does not move the base (see find_earliest), so a loop that
// looks before it sleeps keeps filing later timers into buckets.
#pragma once

#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/trivial_vector.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

namespace tandem::detail {

struct timer_node {
    using clock = std::chrono::steady_clock;
    static constexpr std::uint32_t no_slot = std::numeric_limits<std::uint32_t>::max();

    clock::time_point deadline{};
    std::uint32_t slot = no_slot;
    void (*on_expire)(timer_node*) noexcept = nullptr;

    bool queued() const noexcept { return slot != no_slot; }
};

/// A class template only so that a translation unit compiles the members it uses (one that
/// arms timers but never runs a loop compiles no pop); timer_heap names the one instantiation.
/// Its arrays are trivial_vectors, not std::vectors: the loop, not a template, holds the
/// queue (trivial_vector.hpp says why that matters).
template <class = void>
class basic_timer_heap {
public:
    basic_timer_heap() = default;
    basic_timer_heap(const basic_timer_heap&) = delete;
    basic_timer_heap& operator=(const basic_timer_heap&) = delete;

    /// Armed (not cancelled) timers.
    std::size_t size() const noexcept { return entries() - m_dead; }
    /// Entries including cancelled ones not yet dropped (bounded by about 2 × size()).
    std::size_t entries() const noexcept { return m_in_buckets + m_early.size(); }
    bool empty() noexcept {
        std::uint64_t key;
        return !find_earliest(key);
    }
    /// Deadline of the earliest armed timer; the queue must not be empty().
    timer_node::clock::time_point next_deadline() noexcept {
        std::uint64_t key = 0;
        find_earliest(key);
        return time_of(key);
    }
    /// Removes and returns the earliest armed timer if its deadline is at or before `now`,
    /// else nullptr: one look at the queue where empty(), next_deadline() and pop() take three.
    timer_node* pop_if_due(timer_node::clock::time_point now) noexcept {
        std::uint64_t key;
        if (!find_earliest(key) || key > key_of(now)) return nullptr;
        return &pop();
    }

    /// Arms `node` at node.deadline. Throws std::bad_alloc and changes nothing if memory runs out.
    void push(timer_node& node) {
        m_compact = &compact_heap;
        if (m_in_buckets == 0) restart_buckets();
        const std::uint64_t key = key_of(node.deadline);
        const auto note = [&]() noexcept {
            if (m_earliest != unknown && key < m_earliest) m_earliest = key; // an equal one fires later
        };
        if (key < m_base) {
            if (m_early.size() == m_early.capacity()) m_early.reserve(std::max<std::size_t>(16, 2 * m_early.size()));
            const std::uint32_t slot = take_slot(node);
            m_early.push_back(early_entry{key, m_next_sequence++, slot});
            m_peak = std::max(m_peak, entries());
            std::push_heap(m_early.begin(), m_early.end(), later);
            note();
            if (m_early.size() > rebase_above && m_early.size() > m_in_buckets) rebase();
            return;
        }
        const unsigned b = bucket_of(key);
        trivial_vector<entry>& bucket = m_buckets[b];
        if (bucket.size() == bucket.capacity()) bucket.reserve(std::max<std::size_t>(16, 2 * bucket.size()));
        bucket.push_back(entry{key, &node, take_slot(node)});
        ++m_in_buckets;
        m_peak = std::max(m_peak, entries());
        if (b != 0) m_filled |= bit(b);
        note();
    }

    /// Disarms a timer; O(1).
    void erase(timer_node& node) noexcept {
        if (!node.queued()) return;
        m_slots[node.slot] = nullptr; // the entry stays until it is dropped or compacted
        node.slot = timer_node::no_slot;
        m_earliest = unknown;
        if (++m_dead > entries() / 2 && m_dead >= min_compaction) m_compact(*this); // set: a timer was armed
    }

    /// Removes and returns the earliest armed timer; the queue must not be empty().
    timer_node& pop() noexcept {
        std::size_t at = 0;
        const unsigned in = settle(at);
        m_earliest = unknown;
        std::uint32_t slot;
        if (in != 0) {
            // No memory to move bucket `in` down: its earliest entry was found where it lies.
            trivial_vector<entry>& bucket = m_buckets[in];
            if (!m_early.empty() && m_early.front().key <= bucket[at].key) { // equal: the early one is older
                slot = m_early.front().slot;
                std::pop_heap(m_early.begin(), m_early.end(), later);
                m_early.pop_back();
            } else {
                slot = bucket[at].slot;
                bucket.erase(bucket.begin() + static_cast<std::ptrdiff_t>(at)); // keeps arming order
                --m_in_buckets;
                if (bucket.empty()) m_filled &= ~bit(in);
            }
        } else if (earliest_is_early()) {
            slot = m_early.front().slot;
            std::pop_heap(m_early.begin(), m_early.end(), later);
            m_early.pop_back();
            release_early_if_oversized();
        } else {
            const trivial_vector<entry>& first = m_buckets[0];
            slot = first[m_head].slot;
            m_floor = m_base; // keys taken never decrease: none below it is armed into a bucket again
            ++m_head;
            --m_in_buckets;
        }
        timer_node& node = *m_slots[slot];
        node.slot = timer_node::no_slot;
        release_slot(slot);
        return node;
    }

    /// Entries the queue's arrays have room for (test hook: memory stays bounded by the
    /// largest number of entries it held, whatever the churn).
    std::size_t reserved() const noexcept {
        std::size_t n = m_early.capacity();
        for (const trivial_vector<entry>& bucket : m_buckets) n += bucket.capacity();
        return n;
    }

    /// Entries in the early heap, cancelled ones included (test hook: deadlines armed under
    /// a far base do not stay there).
    std::size_t early_entries() const noexcept { return m_early.size(); }

    /// Test hook, from the days of a 32-bit arming counter: moves the counter of early
    /// entries forward. It is 64 bits now and cannot wrap.
    void skip_sequence_to(std::uint64_t next) noexcept {
        if (next > m_next_sequence) m_next_sequence = next;
    }

private:
    static constexpr std::size_t min_compaction = 1024;
    static constexpr std::size_t small_bucket = 4096; // entries of room a bucket keeps whatever the churn
    static constexpr std::size_t scan_limit = 32; // entries searched in place by a look at the next deadline
    static constexpr std::size_t rebase_above = 4096; // early entries before they may be filed into buckets
    static constexpr unsigned prefetch_below = 3; // keys within 2^3 ticks of the base
    static constexpr unsigned bucket_count = 65; // a key differs from the base in bit 0 … 63, or not at all

    struct entry {
        std::uint64_t key; // deadline ticks, sign bit flipped: unsigned order is time order
        timer_node* node;  // read only while the slot says it is armed; it is here to be prefetched
        std::uint32_t slot;
    };
    struct early_entry {
        std::uint64_t key;
        std::uint64_t sequence; // equal deadlines fire in arming order
        std::uint32_t slot;
    };
    // A max-heap comparator that puts the earliest (deadline, arming) first.
    static bool later(const early_entry& a, const early_entry& b) noexcept {
        return a.key > b.key || (a.key == b.key && a.sequence > b.sequence);
    }

    static std::uint64_t key_of(timer_node::clock::time_point t) noexcept {
        return static_cast<std::uint64_t>(t.time_since_epoch().count()) ^ (std::uint64_t{1} << 63);
    }
    static timer_node::clock::time_point time_of(std::uint64_t key) noexcept {
        return timer_node::clock::time_point(
            timer_node::clock::duration(static_cast<timer_node::clock::rep>(key ^ (std::uint64_t{1} << 63))));
    }
    static std::uint64_t bit(unsigned b) noexcept { return std::uint64_t{1} << (b - 1); }
    unsigned bucket_of(std::uint64_t key) const noexcept { return bucket_of(key, m_base); }
    static unsigned bucket_of(std::uint64_t key, std::uint64_t base) noexcept {
        const std::uint64_t differ = key ^ base;
        return differ == 0 ? 0 : 64 - static_cast<unsigned>(__builtin_clzll(differ));
    }

    /// Files every entry again around the least key, the early heap's into the buckets. The
    /// base only rises between restarts, so once a look at the next deadline raised it to a
    /// far timer (an idle loop whose only timers are more than `scan_limit` sweeps an hour
    /// ahead), every request timeout armed under it went to the early heap, a binary heap
    /// slower than the 4-ary one the buckets replaced, until the sweeps fired. Called when
    /// the early heap outgrows the buckets, so its O(n) is paid for by the arms that grew
    /// it. An optimisation: without the memory for it, things stay as they are.
    void rebase() noexcept {
        // Sorted by (key, arming), which is still a valid heap if what follows fails. Equal
        // keys are filed early ones first: they were armed before any bucketed one.
        // The heap's own comparator rather than std::sort with a new one: the heap functions
        // are compiled for `later` anyway (bench/README.md, "Include cost").
        std::sort_heap(m_early.begin(), m_early.end(), later); // latest first
        std::reverse(m_early.begin(), m_early.end());
        std::uint64_t least = std::numeric_limits<std::uint64_t>::max();
        std::size_t live = 0;
        const auto look = [&](std::uint64_t key, std::uint32_t slot) noexcept {
            if (dead(slot)) return;
            least = std::min(least, key);
            ++live;
        };
        for (const early_entry& e : m_early) look(e.key, e.slot);
        for (unsigned b = 0; b < bucket_count; ++b)
            for (std::size_t i = b == 0 ? m_head : 0; i < m_buckets[b].size(); ++i) look(m_buckets[b][i].key, m_buckets[b][i].slot);
        if (live == 0) return;
        std::size_t count[bucket_count] = {};
        for (const early_entry& e : m_early)
            if (!dead(e.slot)) ++count[bucket_of(e.key, least)];
        for (unsigned b = 0; b < bucket_count; ++b)
            for (std::size_t i = b == 0 ? m_head : 0; i < m_buckets[b].size(); ++i)
                if (!dead(m_buckets[b][i].slot)) ++count[bucket_of(m_buckets[b][i].key, least)];
        trivial_vector<entry> fresh[bucket_count];
        try {
            for (unsigned b = 0; b < bucket_count; ++b) fresh[b].reserve(count[b]);
        } catch (const std::bad_alloc&) {
            return;
        }
        // Nothing fails from here on: dead entries are dropped on the way.
        const auto file = [&](std::uint64_t key, std::uint32_t slot) noexcept {
            if (dead(slot)) {
                release_slot(slot);
                return;
            }
            fresh[bucket_of(key, least)].push_back(entry{key, m_slots[slot], slot});
        };
        for (const early_entry& e : m_early) file(e.key, e.slot);
        m_early.clear();
        for (unsigned b = 0; b < bucket_count; ++b)
            for (std::size_t i = b == 0 ? m_head : 0; i < m_buckets[b].size(); ++i) file(m_buckets[b][i].key, m_buckets[b][i].slot);
        m_filled = 0;
        for (unsigned b = 0; b < bucket_count; ++b) {
            m_buckets[b].swap(fresh[b]);
            if (b != 0 && !m_buckets[b].empty()) m_filled |= bit(b);
        }
        m_head = 0;
        m_in_buckets = live;
        m_dead = 0;
        m_base = least;
        m_earliest = least;
    }

    std::uint32_t take_slot(timer_node& node) {
        std::uint32_t s;
        if (!m_free.empty()) {
            s = m_free.back();
            m_free.pop_back();
        } else {
            // Every slot may be free at once: reserve first so release_slot never allocates.
            if (m_free.capacity() < m_slots.size() + 1) m_free.reserve(2 * m_slots.size() + 16);
            m_slots.push_back(nullptr);
            s = static_cast<std::uint32_t>(m_slots.size() - 1);
        }
        m_slots[s] = &node;
        node.slot = s;
        return s;
    }
    void release_slot(std::uint32_t s) noexcept { m_free.push_back(s); }
    bool dead(std::uint32_t slot) const noexcept { return m_slots[slot] == nullptr; }

    /// The buckets hold nothing: file from the last key taken again. A base as low as that
    /// sends the fewest deadlines to the early heap.
    void restart_buckets() noexcept {
        m_buckets[0].clear();
        m_head = 0;
        m_filled = 0;
        m_base = m_floor;
    }

    bool earliest_is_early() const noexcept {
        if (m_early.empty()) return false;
        if (m_head == m_buckets[0].size()) return true;
        return m_early.front().key <= m_buckets[0][m_head].key; // equal: the early one is older
    }

    void drop_dead_early() noexcept {
        while (!m_early.empty() && dead(m_early.front().slot)) {
            release_slot(m_early.front().slot);
            std::pop_heap(m_early.begin(), m_early.end(), later);
            m_early.pop_back();
            --m_dead;
        }
    }
    /// Drops the dead entries at the front of bucket 0; false when it has no live one left.
    bool live_head() noexcept {
        trivial_vector<entry>& first = m_buckets[0];
        while (m_head < first.size() && dead(first[m_head].slot)) {
            release_slot(first[m_head].slot);
            ++m_head;
            --m_in_buckets;
            --m_dead;
        }
        if (m_head < first.size()) return true;
        m_head = 0;
        release_if_oversized(first);
        return false;
    }

    /// Drops dead entries from both fronts and brings the earliest bucketed key to the front
    /// of bucket 0 (returns 0). Where memory to move a bucket down runs out, returns that
    /// bucket instead, with its earliest live entry at `at`: slower, still in order.
    unsigned settle(std::size_t& at) noexcept {
        drop_dead_early();
        while (!live_head()) {
            if (m_filled == 0) return 0;
            const unsigned b = lowest_filled();
            if (!redistribute(b) && least_in_place(b, at)) return b;
        }
        return 0;
    }

    /// The first live entry with the least key in bucket b, searched where it lies; dead
    /// entries met on the way are dropped. False (and the bucket marked empty) when none.
    bool least_in_place(unsigned b, std::size_t& at) noexcept {
        // The least key, dead or alive, then its slot: one look at the slot table (a cache
        // miss per entry at a million timers) instead of one per entry.
        trivial_vector<entry>& bucket = m_buckets[b];
        while (!bucket.empty()) {
            at = 0;
            for (std::size_t i = 1; i < bucket.size(); ++i)
                if (bucket[i].key < bucket[at].key) at = i;
            if (!dead(bucket[at].slot)) return true;
            release_slot(bucket[at].slot);
            --m_dead;
            --m_in_buckets;
            bucket.erase(bucket.begin() + static_cast<std::ptrdiff_t>(at)); // keeps arming order
        }
        m_filled &= ~bit(b);
        return false;
    }

    /// The earliest armed key, without moving the base where that is cheap: a loop looks
    /// at its next deadline before it sleeps, and a base raised to a deadline still in the
    /// future would send every timer armed meanwhile with an earlier one to the early heap
    /// (an idle sweep far ahead and request timeouts under it). A lowest bucket of up to
    /// `scan_limit` entries is searched in place; a larger one is redistributed, which pays
    /// for itself. False when no timer is armed.
    bool find_earliest(std::uint64_t& key) noexcept {
        if (m_earliest != unknown) { // a loop looks more than once a turn
            key = m_earliest;
            return true;
        }
        drop_dead_early();
        std::uint64_t least = std::numeric_limits<std::uint64_t>::max();
        bool found = false;
        for (;;) {
            if (live_head()) {
                least = m_buckets[0][m_head].key;
                found = true;
                break;
            }
            if (m_filled == 0) break;
            const unsigned b = lowest_filled();
            if (m_buckets[b].size() > scan_limit && redistribute(b)) continue;
            std::size_t at;
            if (least_in_place(b, at)) { // a small bucket, or no memory to move a large one
                least = m_buckets[b][at].key;
                found = true;
                break;
            }
        }
        if (!m_early.empty() && (!found || m_early.front().key <= least)) {
            key = m_earliest = m_early.front().key;
            return true;
        }
        key = least;
        if (found) m_earliest = least;
        return found;
    }

    unsigned lowest_filled() const noexcept { return static_cast<unsigned>(__builtin_ctzll(m_filled)) + 1; }

    /// Empties bucket b, the lowest one holding entries, into the buckets below it around its
    /// smallest key, which becomes the base. Every bucket below b is empty, so the entries
    /// stay in their order within each bucket. Dead entries move along: looking at their
    /// slots here would cost a cache miss per entry and level; they are dropped when they
    /// reach the front of bucket 0, or by a compaction.
    ///
    /// Moving may need memory (a bucket growing to a size it never had) where the loop cannot
    /// take an exception; without it nothing changes and false says so. The buckets below b
    /// were empty, so undoing is emptying them.
    bool redistribute(unsigned b) noexcept {
        trivial_vector<entry>& from = m_buckets[b];
        if (from.empty()) {
            m_filled &= ~bit(b);
            return true;
        }
        std::uint64_t least = std::numeric_limits<std::uint64_t>::max();
        for (const entry& e : from) least = std::min(least, e.key);
        const std::uint64_t old_base = m_base;
        m_base = least;
        std::uint64_t filled;
        try {
            filled = move_down(from);
        } catch (const std::bad_alloc&) {
            for (unsigned t = 0; t < b; ++t) m_buckets[t].clear();
            m_base = old_base;
            return false;
        }
        m_filled = (m_filled & ~bit(b)) | filled;
        release_if_oversized(from);
        return true;
    }
    /// The bits of the buckets it filled.
    std::uint64_t move_down(const trivial_vector<entry>& from) {
        std::uint64_t filled = 0;
        for (const entry& e : from) {
            const unsigned to = bucket_of(e.key);
            if (to <= prefetch_below) {
                // Among the next few to be taken: their slots and nodes (each a cache miss
                // at a million timers, in deadline order a random walk) start loading now,
                // a few pops before they are needed.
                __builtin_prefetch(e.node);
                __builtin_prefetch(reinterpret_cast<const char*>(e.node) + 64); // an awaiter's own fields follow the node
                __builtin_prefetch(&m_slots[e.slot]);
            }
            // Bucket growth here is the queue's only allocation outside push(); the capacity
            // stays, so it happens while a bucket first grows to its size. If it fails,
            // redistribute() undoes the move.
            m_buckets[to].push_back(e);
            if (to != 0) filled |= bit(to);
        }
        return filled;
    }

    /// An emptied bucket keeps its capacity for next time, unless it is far more than the
    /// entries now, or the queue as a whole holds far more room than the most entries it
    /// ever held. Judging each bucket alone is not enough: a group of
    /// timers armed close together (a burst of sleep_for(1h)) descends through a bucket per
    /// bit as the base catches up, and each bucket it passes kept room for all of it — ten
    /// and more times the burst, kept after the timers fired.
    void release_if_oversized(trivial_vector<entry>& bucket) noexcept {
        bucket.clear();
        if (bucket.capacity() <= small_bucket) return;
        if (bucket.capacity() > 4 * entries() + small_bucket) trivial_vector<entry>().swap(bucket);
        trim();
    }
    void release_early_if_oversized() noexcept {
        if (m_early.empty() && m_early.capacity() > small_bucket) trim();
    }

    /// Gives back the room of empty buckets and shrinks sparse ones when the queue holds more
    /// than a few times the most entries it ever held. Measured against that peak, not the
    /// entries now: a loop that arms and fires bursts of timers reuses the room of the last
    /// one (giving it back after each burst cost a third more page faults), as a heap in one
    /// array would. Only looked at when a large bucket empties or a compaction ran, so its
    /// walk over the buckets costs nothing much.
    void trim() noexcept {
        std::size_t room = m_early.capacity();
        for (const trivial_vector<entry>& bucket : m_buckets) room += bucket.capacity();
        if (room <= 4 * m_peak + 4 * small_bucket) return;
        for (trivial_vector<entry>& bucket : m_buckets) fit(bucket);
        fit(m_early);
    }
    /// shrink_to_fit, non-binding like std::vector's: keeps the room if the smaller copy
    /// cannot be made.
    template <class Entry>
    static void fit(trivial_vector<Entry>& v) noexcept {
        static_assert(std::is_trivially_copyable_v<Entry>);
        if (v.empty()) {
            trivial_vector<Entry>().swap(v);
            return;
        }
        if (v.capacity() <= 2 * v.size() + small_bucket) return;
        try {
            trivial_vector<Entry> smaller;
            smaller.reserve(v.size());
            smaller.resize(v.size());
            std::memcpy(smaller.data(), v.data(), v.size() * sizeof(Entry));
            smaller.swap(v);
        } catch (const std::bad_alloc&) {
        }
    }

    /// Drops every dead entry: O(n), amortized over the at least n/2 cancellations that
    /// triggered it.
    void compact() noexcept {
        trivial_vector<entry>& first = m_buckets[0];
        std::size_t kept = 0;
        for (std::size_t i = m_head; i < first.size(); ++i) {
            if (dead(first[i].slot)) release_slot(first[i].slot);
            else first[kept++] = first[i];
        }
        first.resize(kept);
        m_head = 0;
        m_in_buckets = kept;
        for (unsigned b = 1; b < bucket_count; ++b) {
            trivial_vector<entry>& bucket = m_buckets[b];
            if (bucket.empty()) continue;
            kept = 0;
            for (const entry& e : bucket) {
                if (dead(e.slot)) release_slot(e.slot);
                else bucket[kept++] = e;
            }
            bucket.resize(kept);
            m_in_buckets += kept;
            if (kept == 0) m_filled &= ~bit(b); // its room goes in the trim() below
        }
        kept = 0;
        for (const early_entry& e : m_early) {
            if (dead(e.slot)) release_slot(e.slot);
            else m_early[kept++] = e;
        }
        m_early.resize(kept);
        std::make_heap(m_early.begin(), m_early.end(), later);
        m_dead = 0;
        trim(); // buckets that kept few of many entries
    }

    trivial_vector<entry> m_buckets[bucket_count]; // bucket b: keys whose highest bit differing from m_base is b - 1
    std::size_t m_head = 0;                     // bucket 0 is taken from the front
    std::uint64_t m_filled = 0;                 // bit b - 1: bucket b may hold entries
    std::uint64_t m_base = 0;                   // ≤ every bucketed key
    std::uint64_t m_floor = 0;                  // the last key taken from the buckets
    std::size_t m_in_buckets = 0;               // entries in the buckets from m_head on, dead included
    trivial_vector<early_entry> m_early;           // keys below m_base: a binary heap
    std::uint64_t m_next_sequence = 0;
    trivial_vector<timer_node*> m_slots; // slot → node; nullptr once cancelled
    trivial_vector<std::uint32_t> m_free;
    // erase() compacts through this pointer, which push() sets: a translation unit that only
    // disarms timers (an awaiter's destructor, the loop's non-template hooks) then compiles
    // no compaction.
    void (*m_compact)(basic_timer_heap&) noexcept = nullptr;
    static void compact_heap(basic_timer_heap& self) noexcept { self.compact(); }
    std::size_t m_dead = 0;
    std::size_t m_peak = 0; // the most entries ever held: the measure of the room kept
    // The earliest armed key as last found, kept through arming; `unknown` after a pop or a
    // cancellation. The largest key cannot be cached, so it stands for none: a queue whose
    // earliest key is the end of time searches again, which costs nothing much.
    static constexpr std::uint64_t unknown = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t m_earliest = unknown;
};

using timer_heap = basic_timer_heap<>;

} // namespace tandem::detail
