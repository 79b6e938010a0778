#include "tandem/cancel.hpp"

#include "catch.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"

#include <atomic>
#include <chrono>
#include <stop_token>
#include <thread>

using namespace std::chrono_literals;

namespace {
tandem::task<int> sleep_forever(bool& unwound) {
    try {
        co_await tandem::sleep_for(1h);
    } catch (const tandem::cancelled&) {
        unwound = true;
        throw;
    }
    co_return 0;
}
} // namespace

TEST_CASE("a stop request from another thread cancels the task", "[cancel]") {
    std::stop_source source;
    bool unwound = false;
    auto body = [](std::stop_source& src, bool& u) -> tandem::task<> {
        auto h = tandem::spawn(tandem::cancel_on(src.get_token(), sleep_forever(u)));
        co_await tandem::yield();
        std::thread requester([&src] { src.request_stop(); });
        try {
            (void)co_await h;
            FAIL("expected cancellation");
        } catch (const tandem::cancelled&) {
        }
        requester.join();
    };
    tandem::sync_wait(body(source, unwound));
    CHECK(unwound);
}

TEST_CASE("a token already stopped cancels before the task starts", "[cancel]") {
    std::stop_source source;
    source.request_stop();
    bool started = false;
    auto body = [](std::stop_token token, bool& s) -> tandem::task<> {
        auto inner = [](bool& st) -> tandem::task<> {
            st = true;
            co_return;
        };
        CHECK_THROWS_AS(co_await tandem::cancel_on(token, inner(s)), tandem::cancelled);
    };
    tandem::sync_wait(body(source.get_token(), started));
    CHECK_FALSE(started);
}

TEST_CASE("a task that finishes first returns its value and a later stop is harmless", "[cancel]") {
    std::stop_source source;
    auto body = [](std::stop_token token) -> tandem::task<int> {
        auto quick = []() -> tandem::task<int> {
            co_await tandem::sleep_for(1ms);
            co_return 9;
        };
        co_return co_await tandem::cancel_on(token, quick());
    };
    CHECK(tandem::sync_wait(body(source.get_token())) == 9);
    source.request_stop();
}

TEST_CASE("a stop request on the loop thread cancels too", "[cancel]") {
    auto body = []() -> tandem::task<> {
        std::stop_source source;
        bool unwound = false;
        auto h = tandem::spawn(tandem::cancel_on(source.get_token(), sleep_forever(unwound)));
        co_await tandem::yield();
        source.request_stop();
        CHECK_THROWS_AS(co_await h, tandem::cancelled);
        CHECK(unwound);
    };
    tandem::sync_wait(body());
}

// yield() is a suspension point like any other: with_timeout and cancel() reach a task that
// only ever yields (issue 14: it ran on for 2 s).
TEST_CASE("with_timeout ends a loop that only yields", "[cancel][yield]") {
    const auto started = std::chrono::steady_clock::now();
    std::size_t rounds = 0;
    bool timed_out = false;
    tandem::sync_wait([](std::size_t& n, bool& out) -> tandem::task<> {
        auto spin = [](std::size_t& count) -> tandem::task<> {
            for (;;) {
                ++count;
                co_await tandem::yield();
            }
        };
        try {
            co_await tandem::with_timeout(10ms, spin(n));
        } catch (const tandem::timed_out&) {
            out = true;
        }
    }(rounds, timed_out));
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(timed_out);
    CHECK(rounds > 0);
    CHECK(took < 1s);
}

TEST_CASE("cancel reaches a task that only yields and one already cancelled yields no more", "[cancel][yield]") {
    std::size_t rounds = 0;
    bool unwound = false;
    tandem::sync_wait([](std::size_t& n, bool& u) -> tandem::task<> {
        auto spin = [](std::size_t& count, bool& unwound_flag) -> tandem::task<> {
            try {
                for (;;) {
                    ++count;
                    co_await tandem::yield();
                }
            } catch (const tandem::cancelled&) {
                unwound_flag = true;
                throw;
            }
        };
        auto h = tandem::spawn(spin(n, u));
        for (int i = 0; i < 5; ++i) co_await tandem::yield();
        h.cancel();
        CHECK_THROWS_AS(co_await h, tandem::cancelled);
        // A task cancelled before it ever suspends throws at its first yield.
        std::size_t later = 0;
        bool later_unwound = false;
        auto h2 = tandem::spawn(spin(later, later_unwound));
        h2.cancel();
        CHECK_THROWS_AS(co_await h2, tandem::cancelled);
        CHECK(later == 1);
        CHECK(later_unwound);
    }(rounds, unwound));
    CHECK(unwound);
    CHECK(rounds >= 1);
}

// The stop_source is made on first ask, on the loop thread; its token then crosses to another
// thread, which registers callbacks while the loop requests the stop (run under TSan).
TEST_CASE("a task's stop token on another thread sees its cancellation however they race", "[cancel][stop_token]") {
    using namespace std::chrono_literals;
    for (int round = 0; round < 200; ++round) {
        std::atomic<int> called{0};
        auto body = [&called, round]() -> tandem::task<void> {
            std::stop_token token = co_await tandem::this_task::stop_token();
            std::thread watcher([token, &called, round] {
                if (round % 2) std::this_thread::yield();
                std::stop_callback cb(token, [&called] { called.fetch_add(1); });
                while (!token.stop_requested()) std::this_thread::yield();
            });
            try {
                co_await tandem::sleep_for(std::chrono::hours(1));
            } catch (...) {
                watcher.join();
                throw;
            }
        };
        auto outer = [&]() -> tandem::task<bool> {
            try {
                co_await tandem::with_timeout(std::chrono::microseconds(round % 5 * 50), body());
            } catch (const tandem::timed_out&) {
                co_return true;
            }
            co_return false;
        };
        CHECK(tandem::sync_wait(outer()));
        CHECK(called.load() == 1);
    }
}

TEST_CASE("a stop token first asked for after cancellation is already stopped", "[cancel][stop_token]") {
    using namespace std::chrono_literals;
    auto body = []() -> tandem::task<bool> {
        try {
            co_await tandem::sleep_for(std::chrono::hours(1));
        } catch (const tandem::cancelled&) {
        }
        std::stop_token token = co_await tandem::this_task::stop_token();
        co_return token.stop_requested();
    };
    auto outer = [&]() -> tandem::task<bool> {
        auto t = tandem::spawn(body());
        co_await tandem::yield();
        t.cancel();
        co_return co_await t;
    };
    CHECK(tandem::sync_wait(outer()));
}
