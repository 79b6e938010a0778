#include "tandem/sync.hpp"

#include "catch.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"
#include "tandem/when.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("async_mutex gives exclusive access across suspensions", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::async_mutex mutex;
        int inside = 0, max_inside = 0;
        auto worker = [&]() -> tandem::task<> {
            for (int i = 0; i < 5; ++i) {
                auto lock = co_await mutex.scoped_lock();
                max_inside = std::max(max_inside, ++inside);
                co_await tandem::yield();
                --inside;
            }
        };
        co_await tandem::when_all(worker(), worker(), worker(), worker());
        CHECK(max_inside == 1);
        CHECK(mutex.try_lock());
        mutex.unlock();
    };
    tandem::sync_wait(body());
}

TEST_CASE("async_mutex is fair: waiters get it in arrival order", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::async_mutex mutex;
        std::vector<int> order;
        co_await mutex.lock();
        auto waiter = [&](int id) -> tandem::task<> {
            auto lock = co_await mutex.scoped_lock();
            order.push_back(id);
        };
        std::vector<tandem::join_handle<void>> hs;
        for (int i = 0; i < 5; ++i) {
            hs.push_back(tandem::spawn(waiter(i)));
            co_await tandem::yield();
        }
        mutex.unlock();
        for (auto& h : hs) co_await h;
        CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
    };
    tandem::sync_wait(body());
}

TEST_CASE("a cancelled mutex waiter leaves the queue without the lock", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::async_mutex mutex;
        co_await mutex.lock();
        auto h = tandem::spawn([](tandem::async_mutex& m) -> tandem::task<> { auto l = co_await m.scoped_lock(); }(mutex));
        co_await tandem::yield();
        h.cancel();
        CHECK_THROWS_AS(co_await h, tandem::cancelled);
        mutex.unlock();
        CHECK(mutex.try_lock()); // nobody took it
        mutex.unlock();
    };
    tandem::sync_wait(body());
}

TEST_CASE("semaphore bounds concurrency", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::semaphore sem(3);
        int running = 0, peak = 0;
        auto job = [&]() -> tandem::task<> {
            co_await sem.acquire();
            peak = std::max(peak, ++running);
            co_await tandem::sleep_for(1ms);
            --running;
            sem.release();
        };
        std::vector<tandem::task<>> jobs;
        for (int i = 0; i < 20; ++i) jobs.push_back(job());
        co_await tandem::when_all(std::move(jobs));
        CHECK(peak == 3);
        CHECK(sem.available() == 3);
    };
    tandem::sync_wait(body());
}

TEST_CASE("event wakes every waiter and stays set until reset", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::event ev;
        int woken = 0;
        auto waiter = [&]() -> tandem::task<> {
            co_await ev.wait();
            ++woken;
        };
        auto all = tandem::spawn(tandem::when_all(waiter(), waiter(), waiter()));
        co_await tandem::yield();
        CHECK(woken == 0);
        ev.set();
        co_await all;
        CHECK(woken == 3);
        co_await ev.wait(); // already set: no suspension
        ev.reset();
        CHECK_FALSE(ev.is_set());
    };
    tandem::sync_wait(body());
}

TEST_CASE("a full channel suspends the sender until a receiver makes room", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::channel<int> ch(2);
        int sent = 0;
        auto producer = tandem::spawn([](tandem::channel<int>& c, int& s) -> tandem::task<> {
            for (int i = 0; i < 10; ++i) {
                co_await c.send(i);
                ++s;
            }
            c.close();
        }(ch, sent));
        co_await tandem::sleep_for(1ms);
        CHECK(sent == 2); // capacity reached: backpressure
        CHECK(ch.size() == 2);
        std::vector<int> got;
        while (auto v = co_await ch.receive()) got.push_back(*v);
        co_await producer;
        CHECK(got == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    };
    tandem::sync_wait(body());
}

TEST_CASE("a closed channel drains, then yields nullopt, and refuses sends", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::channel<std::unique_ptr<std::string>> ch(4);
        co_await ch.send(std::make_unique<std::string>("a"));
        CHECK(ch.try_send(std::make_unique<std::string>("b")));
        ch.close();
        CHECK_THROWS_AS(co_await ch.send(std::make_unique<std::string>("c")), tandem::channel_closed);
        auto a = co_await ch.receive();
        REQUIRE(a);
        CHECK(**a == "a");
        auto b = ch.try_receive();
        REQUIRE(b);
        CHECK(**b == "b");
        {
            auto awaited = co_await ch.receive();
            CHECK_FALSE(awaited);
        }
    };
    tandem::sync_wait(body());
}

TEST_CASE("closing a channel wakes suspended senders and receivers", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::channel<int> full(1), empty(1);
        co_await full.send(1);
        auto sender = tandem::spawn([](tandem::channel<int>& c) -> tandem::task<> { co_await c.send(2); }(full));
        auto receiver = tandem::spawn([](tandem::channel<int>& c) -> tandem::task<bool> {
            co_return (co_await c.receive()).has_value();
        }(empty));
        co_await tandem::yield();
        full.close();
        empty.close();
        CHECK_THROWS_AS(co_await sender, tandem::channel_closed);
        {
            auto awaited = co_await receiver;
            CHECK_FALSE(awaited);
        }
    };
    tandem::sync_wait(body());
}

TEST_CASE("a cancelled channel receiver does not lose a value", "[sync]") {
    auto body = []() -> tandem::task<> {
        tandem::channel<int> ch(1);
        auto r = tandem::spawn([](tandem::channel<int>& c) -> tandem::task<> { (void)co_await c.receive(); }(ch));
        co_await tandem::yield();
        r.cancel();
        CHECK_THROWS_AS(co_await r, tandem::cancelled);
        co_await ch.send(5);
        auto v = co_await ch.receive();
        REQUIRE(v);
        CHECK(*v == 5);
    };
    tandem::sync_wait(body());
}

TEST_CASE("channel capacity must be positive", "[sync]") {
    CHECK_THROWS_AS(tandem::channel<int>(0), std::invalid_argument);
}

// Cancel safety (issue 14): a receive that loses a race against a timer leaves its value in
// the channel. 20,000 values through when_any(receive, sleep_for(50us)): none is lost.
TEST_CASE("receive raced against a timeout loses no value", "[sync][channel][cancel]") {
    constexpr int count = 20'000;
    long long sum = 0;
    int received = 0, timeouts = 0;
    tandem::sync_wait([](long long& total, int& got, int& misses) -> tandem::task<> {
        tandem::channel<int> ch(4);
        auto sender = [](tandem::channel<int>& c) -> tandem::task<> {
            for (int i = 1; i <= count; ++i) {
                co_await c.send(int(i));
                if (i % 7 == 0) co_await tandem::sleep_for(std::chrono::microseconds(i % 90));
            }
            c.close();
        };
        auto h = tandem::spawn(sender(ch));
        auto receive = [](tandem::channel<int>& c) -> tandem::task<std::optional<int>> { co_return co_await c.receive(); };
        auto nap = []() -> tandem::task<> { co_await tandem::sleep_for(std::chrono::microseconds(50)); };
        for (;;) {
            auto r = co_await tandem::when_any(receive(ch), nap());
            if (r.index() == 1) {
                ++misses;
                continue;
            }
            const std::optional<int> v = std::get<0>(r);
            if (!v) break;
            total += *v;
            ++got;
        }
        co_await h;
    }(sum, received, timeouts));
    INFO("timeouts " << timeouts);
    CHECK(received == count);
    CHECK(sum == static_cast<long long>(count) * (count + 1) / 2);
}

TEST_CASE("a woken receiver that is cancelled passes its value to the next receiver", "[sync][channel][cancel]") {
    tandem::sync_wait([]() -> tandem::task<> {
        tandem::channel<int> ch(1);
        auto receive = [](tandem::channel<int>& c) -> tandem::task<std::optional<int>> { co_return co_await c.receive(); };
        auto first = tandem::spawn(receive(ch));
        auto second = tandem::spawn(receive(ch));
        co_await tandem::yield(); // both wait
        CHECK(ch.try_send(42));   // wakes the first...
        first.cancel();           // ...which is cancelled before it runs
        CHECK_THROWS_AS(co_await first, tandem::cancelled);
        const std::optional<int> v = co_await second;
        CHECK(v == 42);
        CHECK(ch.size() == 0);
    }());
}
