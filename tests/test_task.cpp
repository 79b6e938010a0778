#include "tandem/task.hpp"

#include "catch.hpp"
#include "tandem/loop.hpp"

#include <memory>
#include <stdexcept>
#include <string>

namespace {

tandem::task<int> answer() { co_return 42; }
tandem::task<> nothing() { co_return; }
tandem::task<int> add_one(int x) { co_return x + 1; }

tandem::task<std::unique_ptr<std::string>> make_owned(std::string s) {
    co_return std::make_unique<std::string>(std::move(s));
}

int g_shared = 7;
tandem::task<int&> shared_ref() { co_return g_shared; }

tandem::task<int> throws_runtime() {
    throw std::runtime_error("boom");
    co_return 0;
}

} // namespace

TEST_CASE("a task yields its value to the awaiter", "[task]") {
    CHECK(tandem::sync_wait(answer()) == 42);
    auto chain = []() -> tandem::task<int> { co_return co_await add_one(co_await answer()); };
    CHECK(tandem::sync_wait(chain()) == 43);
}

TEST_CASE("a task of void completes", "[task]") {
    bool ran = false;
    auto body = [&]() -> tandem::task<> {
        co_await nothing();
        ran = true;
    };
    tandem::sync_wait(body());
    CHECK(ran);
}

TEST_CASE("a task may return a move-only value", "[task]") {
    auto p = tandem::sync_wait(make_owned("hello"));
    REQUIRE(p);
    CHECK(*p == "hello");
}

TEST_CASE("a task may return a reference", "[task]") {
    auto body = []() -> tandem::task<> {
        int& r = co_await shared_ref();
        r = 99;
    };
    tandem::sync_wait(body());
    CHECK(g_shared == 99);
}

TEST_CASE("an exception thrown in a task reaches its awaiter", "[task]") {
    auto body = []() -> tandem::task<std::string> {
        try {
            co_await throws_runtime();
        } catch (const std::runtime_error& e) {
            co_return e.what();
        }
        co_return "not thrown";
    };
    CHECK(tandem::sync_wait(body()) == "boom");
    CHECK_THROWS_AS(tandem::sync_wait(throws_runtime()), std::runtime_error);
}

TEST_CASE("a task is lazy: nothing runs until it is awaited", "[task]") {
    bool started = false;
    auto body = [&]() -> tandem::task<> {
        started = true;
        co_return;
    };
    {
        auto t = body();
        CHECK_FALSE(started);
        CHECK(t.valid());
        CHECK_FALSE(t.done());
    } // destroyed without running: frame freed (ASan checks)
    CHECK_FALSE(started);
}

TEST_CASE("a million synchronously completing awaits do not overflow the stack", "[task]") {
    auto loop = []() -> tandem::task<long> {
        long sum = 0;
        for (int i = 0; i < 1'000'000; ++i) sum += co_await add_one(0);
        co_return sum;
    };
    CHECK(tandem::sync_wait(loop()) == 1'000'000);
}

TEST_CASE("a task can be awaited as an lvalue", "[task]") {
    auto body = []() -> tandem::task<int> {
        auto t = answer();
        co_return co_await t;
    };
    CHECK(tandem::sync_wait(body()) == 42);
}

TEST_CASE("this_task gives a stop token that follows cancellation", "[task]") {
    auto body = []() -> tandem::task<bool> {
        std::stop_token token = co_await tandem::this_task::stop_token();
        CHECK(token.stop_possible());
        CHECK_FALSE(token.stop_requested());
        {
            auto awaited = co_await tandem::this_task::cancellation_requested();
            CHECK_FALSE(awaited);
        }
        co_return true;
    };
    CHECK(tandem::sync_wait(body()));
}
