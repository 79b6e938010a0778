#include "tandem/cancel.hpp"

#include "catch.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"

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
