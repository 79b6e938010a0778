#include "tandem/detail/timer_heap.hpp"

#include "catch.hpp"
#include "replace_new.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <algorithm>
#include <utility>
#include <vector>

using tandem::detail::timer_heap;
using tandem::detail::timer_node;

// Memory that runs out on demand, to show the loop's noexcept calls into the queue survive it.
namespace {
bool out_of_memory = false;
} // namespace
bool test_new_allowed(std::size_t) noexcept { return !out_of_memory; }

namespace {
timer_node::clock::time_point at(long ns) { return timer_node::clock::time_point(std::chrono::nanoseconds(ns)); }
} // namespace

TEST_CASE("timer heap pops in deadline order ties in arming order", "[timer_heap]") {
    timer_heap heap;
    std::vector<timer_node> nodes(6);
    const long deadlines[] = {50, 10, 30, 10, 30, 5};
    for (std::size_t i = 0; i < nodes.size(); ++i) {
        nodes[i].deadline = at(deadlines[i]);
        heap.push(nodes[i]);
    }
    std::vector<timer_node*> order;
    while (!heap.empty()) order.push_back(&heap.pop());
    CHECK(order == std::vector<timer_node*>{&nodes[5], &nodes[1], &nodes[3], &nodes[2], &nodes[4], &nodes[0]});
    for (auto& n : nodes) CHECK_FALSE(n.queued());
}

namespace {
/// Random pushes (many equal deadlines), erases and pops against a sorted reference.
void check_against_reference(std::uint64_t seed, std::uint32_t first_sequence, long deadline_range) {
    std::mt19937_64 rng(seed);
    timer_heap heap;
    if (first_sequence != 0) heap.skip_sequence_to(first_sequence);
    constexpr int count = 20'000;
    std::vector<std::unique_ptr<timer_node>> nodes;
    std::multimap<std::pair<long, int>, timer_node*> reference; // (deadline, arming order)
    std::map<timer_node*, std::pair<long, int>> key_of;
    int armed = 0;
    for (int step = 0; step < 200'000; ++step) {
        const auto op = rng() % 10;
        if (op < 5 && nodes.size() < count) {
            nodes.push_back(std::make_unique<timer_node>());
            timer_node& n = *nodes.back();
            const long d = static_cast<long>(rng() % static_cast<std::uint64_t>(deadline_range));
            n.deadline = at(d);
            heap.push(n);
            reference.emplace(std::make_pair(d, armed), &n);
            key_of[&n] = {d, armed++};
        } else if (op < 8 && !key_of.empty()) {
            auto it = key_of.begin();
            std::advance(it, static_cast<long>(rng() % key_of.size()));
            timer_node* n = it->first;
            heap.erase(*n);
            CHECK_FALSE(n->queued());
            reference.erase(reference.find(it->second));
            key_of.erase(it);
        } else if (!reference.empty()) {
            REQUIRE_FALSE(heap.empty());
            CHECK(heap.next_deadline() == at(reference.begin()->first.first));
            timer_node& popped = heap.pop();
            CHECK(&popped == reference.begin()->second);
            key_of.erase(&popped);
            reference.erase(reference.begin());
        }
        REQUIRE(heap.size() == reference.size());
        // Cancelled entries never pile up: compaction keeps them under half the heap.
        REQUIRE(heap.entries() <= 2 * heap.size() + 1024);
    }
    while (!reference.empty()) { // drain: the rest comes out in order too
        REQUIRE(&heap.pop() == reference.begin()->second);
        reference.erase(reference.begin());
    }
    CHECK(heap.empty());
}
} // namespace

TEST_CASE("timer heap matches a reference under random push erase and pop", "[timer_heap]") {
    check_against_reference(12345, 0, 1000);
}

TEST_CASE("timer heap keeps arming order across the wrap of its arming counter", "[timer_heap]") {
    // The counter is 32 bits; near its end the live entries are renumbered in firing order.
    check_against_reference(777, std::numeric_limits<std::uint32_t>::max() - 50'000, 50);
    check_against_reference(778, std::numeric_limits<std::uint32_t>::max() - 3, 1000);
}

TEST_CASE("timer heap of equal deadlines is first in first out at any size", "[timer_heap]") {
    for (std::size_t n : {1u, 3u, 4u, 5u, 17u, 4095u, 4096u, 4097u, 70'000u}) {
        timer_heap heap;
        std::vector<timer_node> nodes(n);
        for (auto& node : nodes) {
            node.deadline = at(42);
            heap.push(node);
        }
        for (auto& node : nodes) REQUIRE(&heap.pop() == &node);
        CHECK(heap.empty());
    }
}

TEST_CASE("cancelling every timer leaves the heap empty and bounded", "[timer_heap]") {
    timer_heap heap;
    std::vector<timer_node> nodes(100'000);
    for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < nodes.size(); ++i) {
            nodes[i].deadline = at(static_cast<long>(i % 977));
            heap.push(nodes[i]);
        }
        for (auto& n : nodes) heap.erase(n);
        CHECK(heap.size() == 0);
        CHECK(heap.entries() <= 1024);
        CHECK(heap.empty());
    }
}

TEST_CASE("property: the arming counter wraps again and again mid-run with extreme deadlines and re-arming from pops", "[timer_heap][property]") {
    for (std::uint64_t seed = 1; seed <= 12; ++seed) {
        INFO("seed " << seed);
        std::mt19937_64 rng(seed);
        timer_heap heap;
        std::vector<std::unique_ptr<timer_node>> nodes;
        std::multimap<std::pair<std::int64_t, std::uint64_t>, timer_node*> reference;
        std::map<timer_node*, std::pair<std::int64_t, std::uint64_t>> key_of;
        std::uint64_t armed = 0;
        const std::int64_t extremes[] = {std::numeric_limits<std::int64_t>::min(), -1, 0, 1,
                                         std::numeric_limits<std::int64_t>::max() - 1, std::numeric_limits<std::int64_t>::max()};
        // Sizes crossing 4 (a group), 64 and 4096 (prefetching) one way and back.
        const std::size_t target = std::size_t{1} << (2 + seed % 11);
        auto arm = [&](timer_node& n, std::int64_t d) {
            n.deadline = timer_node::clock::time_point(timer_node::clock::duration(d));
            heap.push(n);
            reference.emplace(std::make_pair(d, armed), &n);
            key_of[&n] = {d, armed++};
        };
        auto fresh = [&]() -> timer_node& {
            // Reuse a node that is not armed, as a loop reuses an awaiter's node.
            for (int tries = 0; tries < 3 && !nodes.empty(); ++tries) {
                timer_node& n = *nodes[rng() % nodes.size()];
                if (!n.queued()) return n;
            }
            nodes.push_back(std::make_unique<timer_node>());
            return *nodes.back();
        };
        auto deadline = [&]() -> std::int64_t {
            if (rng() % 16 == 0) return extremes[rng() % std::size(extremes)];
            return static_cast<std::int64_t>(rng() % 64);
        };
        for (int step = 0; step < 60'000; ++step) {
            const auto op = rng() % 100;
            if (op == 0) {
                // The counter is about to wrap (again): the live entries get renumbered.
                heap.skip_sequence_to(std::numeric_limits<std::uint32_t>::max() - static_cast<std::uint32_t>(rng() % 8));
            } else if (op < 50 && reference.size() < 2 * target) {
                arm(fresh(), deadline());
            } else if (op < 75 && !key_of.empty()) {
                auto it = key_of.begin();
                std::advance(it, static_cast<long>(rng() % key_of.size()));
                timer_node* n = it->first;
                heap.erase(*n);
                heap.erase(*n); // twice: a no-op
                reference.erase(reference.find(it->second));
                key_of.erase(it);
            } else if (!reference.empty()) {
                REQUIRE_FALSE(heap.empty());
                REQUIRE(heap.next_deadline().time_since_epoch().count() == reference.begin()->first.first);
                timer_node& popped = heap.pop();
                REQUIRE(&popped == reference.begin()->second);
                const std::int64_t at_pop = reference.begin()->first.first;
                key_of.erase(&popped);
                reference.erase(reference.begin());
                // The expiring timer's handler re-arms itself at its own deadline (it fires
                // after every equal one) and cancels another.
                if (rng() % 3 == 0) arm(popped, at_pop);
                if (rng() % 3 == 0 && !key_of.empty()) {
                    auto it = key_of.begin();
                    std::advance(it, static_cast<long>(rng() % key_of.size()));
                    heap.erase(*it->first);
                    reference.erase(reference.find(it->second));
                    key_of.erase(it);
                }
            }
            REQUIRE(heap.size() == reference.size());
            REQUIRE(heap.entries() <= 2 * heap.size() + 1024);
        }
        while (!reference.empty()) {
            REQUIRE(&heap.pop() == reference.begin()->second);
            reference.erase(reference.begin());
        }
        CHECK(heap.empty());
    }
}

TEST_CASE("property: a loop's use of the queue matches a reference with time moving on and memory bounded", "[timer_heap][property]") {
    // Time moves forward; timers are armed around now (some in the past, some at the ends of
    // the clock, many at equal deadlines), cancelled at random, the next deadline is looked
    // at as a loop does before it sleeps, and every due timer is taken. Checked against a
    // multimap keyed by (deadline, arming order).
    std::vector<std::uint64_t> seeds = {1, 2, 3};
    seeds.push_back(std::random_device{}());
    for (const std::uint64_t seed : seeds) {
        std::printf("timer heap loop property: seed %llu\n", static_cast<unsigned long long>(seed));
        INFO("seed " << seed);
        std::mt19937_64 rng(seed);
        timer_heap heap;
        std::vector<std::unique_ptr<timer_node>> pool;
        std::vector<timer_node*> idle;
        std::multimap<std::pair<std::int64_t, std::uint64_t>, timer_node*> reference;
        std::map<timer_node*, std::pair<std::int64_t, std::uint64_t>> key_of;
        std::uint64_t armed = 0;
        std::int64_t now = static_cast<std::int64_t>(rng() % 1'000'000) - 500'000;
        // Phases of different sizes: the lowest bucket is searched in place up to 32 entries.
        const std::size_t live_limit = std::size_t{8} << (seed % 10);
        std::size_t most_entries = 0;
        auto node = [&]() -> timer_node& {
            if (!idle.empty()) {
                timer_node* n = idle.back();
                idle.pop_back();
                return *n;
            }
            pool.push_back(std::make_unique<timer_node>());
            return *pool.back();
        };
        auto arm = [&](std::int64_t d) {
            timer_node& n = node();
            n.deadline = timer_node::clock::time_point(timer_node::clock::duration(d));
            heap.push(n);
            reference.emplace(std::make_pair(d, armed), &n);
            key_of[&n] = {d, armed++};
        };
        auto cancel_one = [&] {
            auto it = key_of.begin();
            std::advance(it, static_cast<long>(rng() % key_of.size()));
            timer_node* n = it->first;
            heap.erase(*n);
            REQUIRE_FALSE(n->queued());
            reference.erase(reference.find(it->second));
            key_of.erase(it);
            idle.push_back(n);
        };
        for (int step = 0; step < 150'000; ++step) {
            const auto op = rng() % 100;
            if (op < 45 && reference.size() < live_limit) {
                std::int64_t d;
                const auto kind = rng() % 20;
                if (kind == 0) d = std::numeric_limits<std::int64_t>::max();
                else if (kind == 1) d = std::numeric_limits<std::int64_t>::min();
                else if (kind == 2) d = now - static_cast<std::int64_t>(rng() % 1000); // in the past
                else if (kind < 8) d = now + static_cast<std::int64_t>(rng() % 16);   // equal ones likely
                else d = now + static_cast<std::int64_t>(rng() % 100'000);
                arm(d);
            } else if (op < 70 && !key_of.empty()) {
                cancel_one();
            } else if (op < 85) {
                // A loop about to sleep looks at its next deadline.
                if (reference.empty()) {
                    REQUIRE(heap.empty());
                } else {
                    REQUIRE_FALSE(heap.empty());
                    REQUIRE(heap.next_deadline().time_since_epoch().count() == reference.begin()->first.first);
                }
            } else {
                now += static_cast<std::int64_t>(rng() % 20'000);
                const auto at = timer_node::clock::time_point(timer_node::clock::duration(now));
                while (timer_node* due = heap.pop_if_due(at)) {
                    REQUIRE_FALSE(reference.empty());
                    REQUIRE(due == reference.begin()->second);
                    REQUIRE_FALSE(due->queued());
                    reference.erase(reference.begin());
                    key_of.erase(due);
                    // A due timer's work cancels another or arms itself again, as work does.
                    if (rng() % 4 == 0 && !key_of.empty()) cancel_one();
                    if (rng() % 4 == 0 && reference.size() < live_limit) {
                        due->deadline = timer_node::clock::time_point(timer_node::clock::duration(now + static_cast<std::int64_t>(rng() % 50)));
                        heap.push(*due);
                        reference.emplace(std::make_pair(due->deadline.time_since_epoch().count(), armed), due);
                        key_of[due] = {due->deadline.time_since_epoch().count(), armed++};
                    } else {
                        idle.push_back(due);
                    }
                }
                REQUIRE((reference.empty() || reference.begin()->first.first > now));
            }
            REQUIRE(heap.size() == reference.size());
            REQUIRE(heap.entries() <= 2 * heap.size() + 1024);
            most_entries = std::max(most_entries, heap.entries());
        }
        // Memory follows the most entries ever held, not the number of operations.
        CHECK(heap.reserved() <= 8 * most_entries + 65 * 4096);
        while (!reference.empty()) {
            REQUIRE(&heap.pop() == reference.begin()->second);
            reference.erase(reference.begin());
        }
        CHECK(heap.empty());
    }
}

TEST_CASE("cancel and re-arm churn far below the next deadline keeps the queue small", "[timer_heap]") {
    // A loop with one far timer (an idle sweep) and request timeouts armed and cancelled
    // under it: a million arms, never more than a few live, memory stays put.
    timer_heap heap;
    timer_node far;
    far.deadline = at(1'000'000'000);
    heap.push(far);
    std::vector<timer_node> nodes(64);
    std::size_t reserved_early = 0;
    for (long i = 0; i < 1'000'000; ++i) {
        timer_node& n = nodes[static_cast<std::size_t>(i) % nodes.size()];
        heap.erase(n);
        n.deadline = at(i + 1000);
        heap.push(n);
        if (i % 7 == 0) REQUIRE(heap.next_deadline() <= at(i + 1000));
        if (i == 100'000) reserved_early = heap.reserved();
    }
    CHECK(heap.size() == nodes.size() + 1);
    CHECK(heap.entries() <= 2 * heap.size() + 1024);
    CHECK(heap.reserved() <= reserved_early + 4096);
}

TEST_CASE("a burst of timers descending through the buckets leaves no room behind", "[timer_heap]") {
    // 200000 sleep_for(1h) armed within 20 ms while a 10 ms ticker keeps taking timers: as
    // the base catches up the burst moves down a bucket per bit, and each bucket it passed
    // used to keep room for all of it (ten times the burst, still held after it fired).
    // Room is measured against the most entries ever held: a few times that, no more.
    {
        timer_heap heap;
        std::vector<timer_node> burst(200'000);
        timer_node tick;
        std::int64_t now = 3'600'000'000'123; // an hour of uptime
        for (std::size_t i = 0; i < burst.size(); ++i) {
            burst[i].deadline = at(now + 3'600'000'000'000 + static_cast<std::int64_t>(i) * 100);
            heap.push(burst[i]);
        }
        const std::size_t peak = heap.entries() + 1;
        tick.deadline = at(now + 10'000'000);
        heap.push(tick);
        std::size_t most_room = 0;
        while (heap.size() > 1) {
            now += 10'000'000;
            while (timer_node* due = heap.pop_if_due(at(now))) {
                if (due == &tick) {
                    tick.deadline = at(now + 10'000'000);
                    heap.push(tick);
                }
            }
            REQUIRE(heap.next_deadline() > at(now));
            most_room = std::max(most_room, heap.reserved());
        }
        CHECK(most_room <= 6 * peak + 65 * 4096);
        CHECK(heap.reserved() <= 4 * peak + 65 * 4096); // kept for the next burst, no more
    }
    {
        // The worst shape: one lone timer per bit in front of the bulk, so the bulk passes
        // through sixty buckets.
        timer_heap heap;
        std::vector<timer_node> nodes(100'000);
        std::size_t i = 0;
        std::uint64_t bits = 0;
        for (int level = 61; level >= 2; --level, ++i) {
            bits |= std::uint64_t{1} << level;
            nodes[i].deadline = at(static_cast<std::int64_t>(bits));
            heap.push(nodes[i]);
        }
        for (; i < nodes.size(); ++i) {
            nodes[i].deadline = at(static_cast<std::int64_t>(bits | 2));
            heap.push(nodes[i]);
        }
        std::size_t most_room = 0;
        for (const timer_node& n : nodes) {
            REQUIRE(&heap.pop() == &n);
            most_room = std::max(most_room, heap.reserved());
        }
        CHECK(heap.empty());
        CHECK(most_room <= 6 * nodes.size() + 65 * 4096);
        CHECK(heap.reserved() <= 4 * nodes.size() + 65 * 4096);
    }
}

TEST_CASE("timers armed under a far base after an idle look go back to the buckets in order", "[timer_heap]") {
    // An idle loop whose only timers are sweeps an hour ahead (more than are searched in
    // place) looks at its next deadline: the base rises to the first sweep. Request timeouts
    // armed after that lie under the base and went to the early heap (a binary heap, slower
    // than the heap the buckets replaced) until the sweeps fired. They must be filed back
    // into the buckets, and still come out in deadline then arming order.
    const std::uint64_t seed = std::random_device{}();
    std::printf("timer heap far base: seed %llu\n", static_cast<unsigned long long>(seed));
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    timer_heap heap;
    const std::int64_t now = 5'000'000'000'000;
    std::vector<timer_node> sweeps(100), requests(100'000);
    std::multimap<std::pair<std::int64_t, std::size_t>, timer_node*> reference;
    std::size_t armed = 0;
    auto arm = [&](timer_node& n, std::int64_t d) {
        n.deadline = at(d);
        heap.push(n);
        reference.emplace(std::make_pair(d, armed++), &n);
    };
    for (std::size_t i = 0; i < sweeps.size(); ++i) arm(sweeps[i], now + 3'600'000'000'000 + static_cast<std::int64_t>(i % 10));
    REQUIRE(heap.next_deadline() == at(now + 3'600'000'000'000));
    std::size_t most_early = 0;
    for (timer_node& n : requests) {
        // Many equal deadlines, some equal to a sweep's, some in the past.
        const auto kind = rng() % 10;
        const std::int64_t d = kind == 0 ? now + 3'600'000'000'000 + static_cast<std::int64_t>(rng() % 10)
                             : kind == 1 ? now - static_cast<std::int64_t>(rng() % 1000)
                                         : now + 30'000'000'000 + static_cast<std::int64_t>(rng() % 2000) * 1000;
        arm(n, d);
        if (rng() % 16 == 0) REQUIRE(heap.next_deadline() == at(reference.begin()->first.first));
        most_early = std::max(most_early, heap.early_entries());
    }
    CHECK(most_early <= 2 * 4096 + 2);
    while (!reference.empty()) {
        REQUIRE(&heap.pop() == reference.begin()->second);
        reference.erase(reference.begin());
    }
    CHECK(heap.empty());
}

TEST_CASE("taking timers when memory runs out keeps them in order", "[timer_heap][edge]") {
    // A look at the next deadline and a pop are noexcept (the loop calls them where it cannot
    // take an exception) yet moving a bucket down may grow another: that growth failing used
    // to end the process. Without the memory the queue searches the bucket where it lies.
    const std::uint64_t seed = std::random_device{}();
    std::printf("timer heap out of memory: seed %llu\n", static_cast<unsigned long long>(seed));
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    timer_heap heap;
    std::vector<timer_node> nodes(20'000);
    std::vector<std::pair<std::int64_t, std::size_t>> order; // (deadline, arming)
    for (std::size_t i = 0; i < nodes.size(); ++i) {
        const std::int64_t d = 1'000'000'000 + static_cast<std::int64_t>(rng() % 5000) * 1000;
        nodes[i].deadline = at(d);
        heap.push(nodes[i]);
        order.emplace_back(d, i);
    }
    for (std::size_t i = 0; i < nodes.size(); i += 3) heap.erase(nodes[i]); // dead entries too
    order.erase(std::remove_if(order.begin(), order.end(), [](const auto& o) { return o.second % 3 == 0; }), order.end());
    std::sort(order.begin(), order.end());
    std::vector<timer_node*> taken;
    taken.reserve(nodes.size());
    std::vector<timer_node::clock::time_point> looked;
    looked.reserve(nodes.size());
    out_of_memory = true;
    for (std::size_t k = 0; k < order.size() / 2; ++k) {
        looked.push_back(heap.next_deadline());
        taken.push_back(&heap.pop());
    }
    while (timer_node* due = heap.pop_if_due(at(1'000'000'000 + 5'000'000))) taken.push_back(due);
    const bool empty = heap.empty();
    out_of_memory = false;
    CHECK(empty);
    REQUIRE(taken.size() == order.size());
    for (std::size_t k = 0; k < order.size(); ++k) {
        REQUIRE(taken[k] == &nodes[order[k].second]);
        if (k < looked.size()) REQUIRE(looked[k] == at(order[k].first));
    }
    // With memory again it goes on as before.
    for (std::size_t i = 0; i < 1000; ++i) {
        nodes[i].deadline = at(static_cast<std::int64_t>(2000 - i / 2));
        heap.push(nodes[i]);
    }
    for (std::size_t k = 0; k < 1000; ++k) REQUIRE(&heap.pop() == &nodes[998 - 2 * (k / 2) + k % 2]); // ties in arming order
}
