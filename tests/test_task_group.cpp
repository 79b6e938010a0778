#include "tandem/task_group.hpp"

#include "catch.hpp"
#include "tandem/time.hpp"

#include <chrono>
#include <stdexcept>

using namespace std::chrono_literals;

namespace {
tandem::task<> sleep_then_count(std::chrono::milliseconds d, int& done) {
    co_await tandem::sleep_for(d);
    ++done;
}
tandem::task<> forever(int& cancelled) {
    try {
        co_await tandem::sleep_for(1h);
    } catch (const tandem::cancelled&) {
        ++cancelled;
        throw;
    }
}
} // namespace

TEST_CASE("join waits for every child of the group", "[task_group]") {
    auto body = []() -> tandem::task<> {
        int done = 0;
        tandem::task_group group;
        for (int i = 0; i < 10; ++i) group.spawn(sleep_then_count(std::chrono::milliseconds(i), done));
        CHECK(group.size() == 10);
        co_await group.join();
        CHECK(done == 10);
        CHECK(group.empty());
        co_await group.join(); // joining an empty group returns at once
    };
    tandem::sync_wait(body());
}

TEST_CASE("the first failing child cancels its siblings and join rethrows it", "[task_group]") {
    auto body = []() -> tandem::task<> {
        int cancelled = 0;
        tandem::task_group group;
        group.spawn(forever(cancelled));
        group.spawn(forever(cancelled));
        group.spawn([]() -> tandem::task<> {
            co_await tandem::sleep_for(2ms);
            throw std::domain_error("child broke");
        }());
        CHECK_THROWS_AS(co_await group.join(), std::domain_error);
        CHECK(cancelled == 2);
        CHECK(group.empty());
    };
    tandem::sync_wait(body());
}

TEST_CASE("cancelling the task in join cancels the children and still waits for them", "[task_group]") {
    auto body = []() -> tandem::task<> {
        int cancelled = 0;
        auto parent = [](int& c) -> tandem::task<> {
            tandem::task_group group;
            group.spawn(forever(c));
            group.spawn(forever(c));
            co_await group.join();
        };
        auto h = tandem::spawn(parent(cancelled));
        co_await tandem::sleep_for(1ms);
        h.cancel();
        CHECK_THROWS_AS(co_await h, tandem::cancelled);
        CHECK(cancelled == 2); // both unwound before the parent finished
    };
    tandem::sync_wait(body());
}

TEST_CASE("a group destroyed without join cancels its children", "[task_group]") {
    auto body = []() -> tandem::task<> {
        int cancelled = 0;
        {
            tandem::task_group group;
            group.spawn(forever(cancelled));
            co_await tandem::yield();
        }
        co_await tandem::sleep_for(1ms);
        CHECK(cancelled == 1);
        CHECK(tandem::this_loop().task_count() == 1); // only this task is left
    };
    tandem::sync_wait(body());
}
