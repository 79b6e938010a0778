#include "tandem/spawn.hpp"

#include "catch.hpp"
#include "tandem/time.hpp"

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("a spawned task runs concurrently and its handle yields the value", "[spawn]") {
    auto body = []() -> tandem::task<> {
        std::vector<int> order;
        auto child = [&]() -> tandem::task<int> {
            order.push_back(1);
            co_await tandem::sleep_for(1ms);
            order.push_back(3);
            co_return 7;
        };
        auto h = tandem::spawn(child());
        order.push_back(0); // spawn does not run the child inline
        co_await tandem::yield();
        order.push_back(2);
        {
            auto awaited = co_await h;
            CHECK(awaited == 7);
        }
        CHECK(h.done());
        CHECK(order == std::vector<int>{0, 1, 2, 3});
    };
    tandem::sync_wait(body());
}

TEST_CASE("awaiting a join_handle rethrows the task's exception", "[spawn]") {
    auto body = []() -> tandem::task<> {
        auto h = tandem::spawn([]() -> tandem::task<> {
            co_await tandem::yield();
            throw std::out_of_range("child");
        }());
        CHECK_THROWS_AS(co_await h, std::out_of_range);
    };
    tandem::sync_wait(body());
}

TEST_CASE("a detached task keeps running after its handle is dropped", "[spawn]") {
    auto body = []() -> tandem::task<> {
        bool finished = false;
        tandem::spawn([](bool& f) -> tandem::task<> {
            co_await tandem::sleep_for(2ms);
            f = true;
        }(finished)).detach();
        co_await tandem::sleep_for(20ms);
        CHECK(finished);
    };
    tandem::sync_wait(body());
}

TEST_CASE("an exception escaping a detached task is rethrown by run by default", "[spawn]") {
    tandem::event_loop loop;
    auto body = []() -> tandem::task<> {
        tandem::spawn([]() -> tandem::task<> {
            co_await tandem::yield();
            throw std::runtime_error("lost?");
        }()).detach();
        co_await tandem::sleep_for(1h);
    };
    CHECK_THROWS_WITH(loop.run(body()), "lost?");
}

TEST_CASE("an unawaited handle dropped after its task failed reports the exception", "[spawn]") {
    tandem::event_loop loop;
    auto body = []() -> tandem::task<> {
        auto h = tandem::spawn([]() -> tandem::task<> { throw std::runtime_error("never awaited"); co_return; }());
        co_await tandem::sleep_for(1ms);
        CHECK(h.done());
    }; // h dropped here, unobserved
    CHECK_THROWS_WITH(loop.run(body()), "never awaited");
}

TEST_CASE("an exception handler receives the task's name and spawn site", "[spawn]") {
    tandem::event_loop loop;
    std::string seen_name, seen_what, seen_file;
    unsigned seen_line = 0;
    loop.set_exception_handler([&](std::exception_ptr e, const tandem::task_info& info) {
        seen_name = info.name;
        seen_file = info.where.file_name();
        seen_line = info.where.line();
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            seen_what = ex.what();
        }
    });
    unsigned spawn_line = 0;
    auto body = [&]() -> tandem::task<> {
        spawn_line = __LINE__ + 1;
        tandem::spawn([]() -> tandem::task<> { throw std::runtime_error("handled"); co_return; }(), "worker-7").detach();
        co_await tandem::sleep_for(1ms);
    };
    loop.run(body()); // the handler took it: nothing is rethrown
    CHECK(seen_what == "handled");
    CHECK(seen_name == "worker-7");
    CHECK(seen_line == spawn_line);
    CHECK(seen_file.find("test_spawn.cpp") != std::string::npos);
}

TEST_CASE("cancel stops a spawned task at its suspension point", "[spawn]") {
    auto body = []() -> tandem::task<> {
        bool cleaned_up = false;
        auto h = tandem::spawn([](bool& c) -> tandem::task<int> {
            struct cleanup {
                bool& flag;
                ~cleanup() { flag = true; }
            } guard{c};
            co_await tandem::sleep_for(1h);
            co_return 1;
        }(cleaned_up));
        co_await tandem::yield();
        h.cancel();
        CHECK_THROWS_AS(co_await h, tandem::cancelled);
        CHECK(cleaned_up);
    };
    tandem::sync_wait(body());
}

TEST_CASE("a cancelled detached task is not reported as unhandled", "[spawn]") {
    tandem::event_loop loop;
    auto body = []() -> tandem::task<> {
        auto h = tandem::spawn([]() -> tandem::task<> { co_await tandem::sleep_for(1h); }());
        co_await tandem::yield();
        h.cancel();
        h.detach();
        co_await tandem::sleep_for(1ms);
    };
    CHECK_NOTHROW(loop.run(body()));
}

TEST_CASE("cancelling the waiter of a join leaves the spawned task running", "[spawn]") {
    auto body = []() -> tandem::task<> {
        bool finished = false;
        auto target = tandem::spawn([](bool& f) -> tandem::task<> {
            co_await tandem::sleep_for(5ms);
            f = true;
        }(finished));
        auto waiter = tandem::spawn([](tandem::join_handle<void>& t) -> tandem::task<> { co_await t; }(target));
        co_await tandem::yield();
        waiter.cancel();
        CHECK_THROWS_AS(co_await waiter, tandem::cancelled);
        CHECK_FALSE(target.done());
        co_await target;
        CHECK(finished);
    };
    tandem::sync_wait(body());
}

TEST_CASE("spawn outside a running loop throws logic_error", "[spawn]") {
    auto t = []() -> tandem::task<> { co_return; }();
    CHECK_THROWS_AS(tandem::spawn(std::move(t)), std::logic_error);
}

TEST_CASE("spawn onto an explicit loop before it runs", "[spawn]") {
    tandem::event_loop loop;
    int value = 0;
    auto h = tandem::spawn(loop, [](int& v) -> tandem::task<> {
        v = 3;
        co_return;
    }(value));
    CHECK(value == 0);
    loop.run([](tandem::join_handle<void>& j) -> tandem::task<> { co_await j; }(h));
    CHECK(value == 3);
    CHECK(loop.task_count() == 0);
}
