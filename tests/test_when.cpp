#include "tandem/when.hpp"

#include "catch.hpp"
#include "tandem/spawn.hpp"
#include "tandem/sync.hpp"
#include "tandem/time.hpp"

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

tandem::task<int> after(std::chrono::milliseconds d, int value) {
    co_await tandem::sleep_for(d);
    co_return value;
}

tandem::task<> fail_after(std::chrono::milliseconds d) {
    co_await tandem::sleep_for(d);
    throw std::runtime_error("child failed");
}

/// Sleeps "forever" but records how it ended.
tandem::task<int> wait_forever(int& cancelled_count) {
    try {
        co_await tandem::sleep_for(1h);
    } catch (const tandem::cancelled&) {
        ++cancelled_count;
        throw;
    }
    co_return -1;
}

} // namespace

TEST_CASE("when_all runs tasks concurrently and returns a tuple", "[when]") {
    auto body = []() -> tandem::task<> {
        const auto start = std::chrono::steady_clock::now();
        auto [a, b, c] = co_await tandem::when_all(after(30ms, 1), after(30ms, 2), after(30ms, 3));
        const auto elapsed = std::chrono::steady_clock::now() - start;
        CHECK(a == 1);
        CHECK(b == 2);
        CHECK(c == 3);
        CHECK(elapsed < 1s); // concurrent, not 3 × 30 ms in series (generous bound)
    };
    tandem::sync_wait(body());
}

TEST_CASE("when_all maps void results to monostate", "[when]") {
    auto body = []() -> tandem::task<> {
        auto unit = []() -> tandem::task<> { co_await tandem::sleep_for(1ms); };
        auto [v, x] = co_await tandem::when_all(unit(), after(1ms, 5));
        CHECK(std::is_same_v<decltype(v), std::monostate>);
        CHECK(x == 5);
    };
    tandem::sync_wait(body());
}

TEST_CASE("when_all over a range returns results in order", "[when]") {
    auto body = []() -> tandem::task<> {
        std::vector<tandem::task<int>> tasks;
        for (int i = 0; i < 100; ++i) tasks.push_back(after(std::chrono::milliseconds(100 - i) / 10, i));
        std::vector<int> results = co_await tandem::when_all(std::move(tasks));
        REQUIRE(results.size() == 100);
        for (int i = 0; i < 100; ++i) CHECK(results[i] == i);

        std::vector<tandem::task<>> voids;
        int done = 0;
        for (int i = 0; i < 10; ++i)
            voids.push_back([](int& d) -> tandem::task<> {
                co_await tandem::sleep_for(1ms);
                ++d;
            }(done));
        co_await tandem::when_all(std::move(voids));
        CHECK(done == 10);
    };
    tandem::sync_wait(body());
}

TEST_CASE("when_all: the first failure cancels the siblings and is rethrown", "[when]") {
    auto body = []() -> tandem::task<> {
        int cancelled = 0;
        const auto start = std::chrono::steady_clock::now();
        CHECK_THROWS_WITH(co_await tandem::when_all(wait_forever(cancelled), fail_after(5ms), wait_forever(cancelled)),
                          "child failed");
        CHECK(cancelled == 2);
        CHECK(std::chrono::steady_clock::now() - start < 10s);
    };
    tandem::sync_wait(body());
}

TEST_CASE("when_all of children that complete synchronously", "[when]") {
    auto now = []() -> tandem::task<int> { co_return 3; };
    auto body = [&]() -> tandem::task<int> {
        auto [a, b] = co_await tandem::when_all(now(), now());
        co_return a + b;
    };
    CHECK(tandem::sync_wait(body()) == 6);
}

TEST_CASE("when_any returns the winner and cancels and awaits the losers", "[when]") {
    auto body = []() -> tandem::task<> {
        int cancelled = 0;
        auto result = co_await tandem::when_any(wait_forever(cancelled), after(5ms, 7), wait_forever(cancelled));
        CHECK(result.index() == 1);
        CHECK(std::get<1>(result) == 7);
        CHECK(cancelled == 2); // losers have unwound before when_any returned
    };
    tandem::sync_wait(body());
}

TEST_CASE("when_any rethrows a failing winner", "[when]") {
    auto body = []() -> tandem::task<> {
        int cancelled = 0;
        CHECK_THROWS_AS(co_await tandem::when_any(wait_forever(cancelled), fail_after(1ms)), std::runtime_error);
        CHECK(cancelled == 1);
    };
    tandem::sync_wait(body());
}

TEST_CASE("when_any over a range gives index and value", "[when]") {
    auto body = []() -> tandem::task<> {
        std::vector<tandem::task<int>> tasks;
        tasks.push_back(after(200ms, 0));
        tasks.push_back(after(2ms, 1));
        tasks.push_back(after(300ms, 2));
        auto r = co_await tandem::when_any(std::move(tasks));
        CHECK(r.index == 1);
        CHECK(r.value == 1);
        std::vector<tandem::task<int>> none;
        CHECK_THROWS_AS(co_await tandem::when_any(std::move(none)), std::invalid_argument);
    };
    tandem::sync_wait(body());
}

TEST_CASE("cancelling the awaiter of when_all cancels every child", "[when]") {
    auto body = []() -> tandem::task<> {
        int cancelled = 0;
        auto parent = [](int& c) -> tandem::task<> {
            co_await tandem::when_all(wait_forever(c), wait_forever(c), wait_forever(c));
        };
        auto h = tandem::spawn(parent(cancelled));
        co_await tandem::sleep_for(2ms);
        h.cancel();
        CHECK_THROWS_AS(co_await h, tandem::cancelled);
        CHECK(cancelled == 3);
    };
    tandem::sync_wait(body());
}

namespace {
tandem::task<int> nested_any(int depth, std::uint32_t& state) {
    if (depth == 0) {
        state = state * 1664525u + 1013904223u;
        co_await tandem::sleep_for(std::chrono::microseconds(state % 50));
        co_return 1;
    }
    auto forever = []() -> tandem::task<int> {
        co_await tandem::sleep_for(std::chrono::hours(1));
        co_return 0;
    };
    state = state * 1664525u + 1013904223u;
    if (state % 2 == 0) {
        auto r = co_await tandem::when_any(nested_any(depth - 1, state), forever());
        co_return std::get<0>(r) + 1;
    }
    auto r = co_await tandem::when_any(forever(), nested_any(depth - 1, state));
    co_return std::get<1>(r) + 1;
}
} // namespace

// Each level used to start its children by a nested resume(): SIGSEGV at 100,000 deep.
TEST_CASE("100000 nested when_any do not depend on stack depth", "[when][deep]") {
    std::uint32_t state = 12345;
    CHECK(tandem::sync_wait(nested_any(100'000, state)) == 100'001);
}

namespace {
tandem::task<int> nested_all_sync(int depth) {
    if (depth == 0) co_return 1;
    auto [a, b] = co_await tandem::when_all(nested_all_sync(depth - 1), []() -> tandem::task<int> { co_return 0; }());
    co_return a + b + 1;
}
tandem::task<std::vector<int>> start_order(std::vector<int>& order, int depth, int id) {
    order.push_back(id);
    if (depth == 0) co_return std::vector<int>{};
    co_await tandem::when_all(start_order(order, depth - 1, id * 10 + 1), start_order(order, depth - 1, id * 10 + 2));
    co_return std::vector<int>{};
}
} // namespace

TEST_CASE("100000 nested when_all whose leaves finish at once complete without stack growth", "[when][deep]") {
    CHECK(tandem::sync_wait(nested_all_sync(100'000)) == 100'001);
}

TEST_CASE("nested when_all starts children depth first", "[when]") {
    std::vector<int> order;
    tandem::sync_wait(start_order(order, 2, 1));
    CHECK(order == std::vector<int>{1, 11, 111, 112, 12, 121, 122});
}

namespace {
tandem::task<> self_cancelling_child(tandem::join_handle<void>*& me, int& started, int& unwound, bool canceller) {
    ++started;
    if (canceller) me->cancel(); // the parent's when_all is still starting its children
    try {
        co_await tandem::sleep_for(std::chrono::hours(1));
    } catch (const tandem::cancelled&) {
        ++unwound;
        throw;
    }
}
tandem::task<> self_cancelling_parent(tandem::join_handle<void>*& me, int& started, int& unwound, bool nested) {
    auto inner = [](tandem::join_handle<void>*& m, int& s, int& u) -> tandem::task<> {
        co_await tandem::when_all(self_cancelling_child(m, s, u, false), self_cancelling_child(m, s, u, true));
    };
    if (nested)
        co_await tandem::when_all(self_cancelling_child(me, started, unwound, false), inner(me, started, unwound),
                                  self_cancelling_child(me, started, unwound, false));
    else
        co_await tandem::when_all(self_cancelling_child(me, started, unwound, false),
                                  self_cancelling_child(me, started, unwound, true),
                                  self_cancelling_child(me, started, unwound, false));
}
} // namespace

TEST_CASE("a child that cancels its own task while when_all is starting it", "[when][cancel]") {
    for (const bool nested : {false, true}) {
        int started = 0, unwound = 0;
        tandem::sync_wait([](bool n, int& s, int& u) -> tandem::task<> {
            tandem::join_handle<void>* self = nullptr;
            auto h = tandem::spawn(self_cancelling_parent(self, s, u, n));
            self = &h;
            CHECK_THROWS_AS(co_await h, tandem::cancelled);
        }(nested, started, unwound));
        INFO("nested " << nested);
        CHECK(started == (nested ? 4 : 3));
        CHECK(unwound == started);
    }
}
