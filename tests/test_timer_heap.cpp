#include "tandem/detail/timer_heap.hpp"

#include "catch.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <utility>
#include <vector>

using tandem::detail::timer_heap;
using tandem::detail::timer_node;

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

TEST_CASE("timer heap matches a reference under random push erase and pop", "[timer_heap]") {
    std::mt19937_64 rng(12345);
    timer_heap heap;
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
            const long d = static_cast<long>(rng() % 1000);
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
