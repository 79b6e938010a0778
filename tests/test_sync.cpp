#include "tandem/sync.hpp"

#include "catch.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"
#include "tandem/when.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <random>
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

TEST_CASE("a closed channel drains then yields nullopt and refuses sends", "[sync]") {
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

TEST_CASE("a receive that arrives while a closed channel's last value is promised still ends", "[sync][channel][close]") {
    tandem::sync_wait([]() -> tandem::task<> {
        tandem::channel<int> ch(1);
        auto receive = [](tandem::channel<int>& c) -> tandem::task<std::optional<int>> { co_return co_await c.receive(); };
        auto first = tandem::spawn(receive(ch));
        co_await tandem::yield();                 // first waits
        auto second = tandem::spawn(receive(ch)); // queued: runs before first resumes
        CHECK(ch.try_send(7));                    // promised to first
        ch.close();
        const std::optional<int> a = co_await first;
        // second found the last value promised and waited: the channel must still end it.
        const std::optional<int> b = co_await tandem::with_timeout(5s, [](auto& h) -> tandem::task<std::optional<int>> {
            co_return co_await h;
        }(second));
        CHECK(a == 7);
        CHECK(!b);
    }());
}

TEST_CASE("channel property: every value sent is received exactly once under random cancellation", "[sync][channel][cancel][property]") {
    const unsigned seed = std::random_device{}();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    for (int round = 0; round < 20; ++round) {
        const std::size_t capacity = std::size_t{1} + rng() % 4;
        const int senders = 1 + static_cast<int>(rng() % 5), receivers = 1 + static_cast<int>(rng() % 5);
        const int per_sender = 200 + static_cast<int>(rng() % 300);
        std::vector<int> sent_count(static_cast<std::size_t>(senders * per_sender), 0);
        std::vector<int> received_count(sent_count.size(), 0);
        tandem::sync_wait([](std::mt19937& rng, std::size_t capacity, int senders, int receivers, int per_sender,
                             std::vector<int>& sent, std::vector<int>& got) -> tandem::task<> {
            tandem::channel<int> ch(capacity);
            auto sender = [](tandem::channel<int>& c, int base, int n, unsigned pause, std::vector<int>& s) -> tandem::task<> {
                for (int i = 0; i < n; ++i) {
                    co_await c.send(int(base + i));
                    ++s[static_cast<std::size_t>(base + i)];
                    if (pause != 0 && i % int(pause) == 0) co_await tandem::yield();
                }
            };
            auto receiver = [](tandem::channel<int>& c, unsigned style, std::vector<int>& g) -> tandem::task<> {
                auto receive = [](tandem::channel<int>& ch) -> tandem::task<std::optional<int>> { co_return co_await ch.receive(); };
                auto nap = [](unsigned us) -> tandem::task<> { co_await tandem::sleep_for(std::chrono::microseconds(us)); };
                for (unsigned i = 0;; ++i) {
                    std::optional<int> v;
                    if (style == 0) {
                        v = co_await c.receive();
                    } else if (style == 1) {
                        auto r = co_await tandem::when_any(receive(c), nap(i % 7));
                        if (r.index() == 1) continue;
                        v = std::get<0>(r);
                    } else {
                        try {
                            v = co_await tandem::with_timeout(std::chrono::microseconds(i % 5), receive(c));
                        } catch (const tandem::timed_out&) {
                            continue;
                        }
                    }
                    if (!v) co_return;
                    ++g[static_cast<std::size_t>(*v)];
                }
            };
            std::vector<tandem::join_handle<void>> tx, rx;
            for (int s = 0; s < senders; ++s) tx.push_back(tandem::spawn(sender(ch, s * per_sender, per_sender, rng() % 4, sent)));
            for (int r = 0; r < receivers; ++r) rx.push_back(tandem::spawn(receiver(ch, static_cast<unsigned>(rng() % 3), got)));
            // Random cancellations of senders and receivers while values flow.
            for (int k = 0; k < 30; ++k) {
                co_await tandem::sleep_for(std::chrono::microseconds(rng() % 40));
                if (rng() % 3 == 0) tx[rng() % tx.size()].cancel();
                if (rng() % 3 == 0) rx[rng() % rx.size()].cancel();
            }
            // Let the flow settle, then close: senders still blocked (every receiver may be
            // cancelled by now) fail with channel_closed and sent nothing.
            co_await tandem::sleep_for(std::chrono::microseconds(rng() % 200));
            ch.close();
            for (auto& h : tx) {
                try {
                    co_await h;
                } catch (const tandem::cancelled&) {
                } catch (const tandem::channel_closed&) {
                }
            }
            for (auto& h : rx) {
                try {
                    co_await h;
                } catch (const tandem::cancelled&) {
                }
            }
            while (auto v = ch.try_receive()) ++got[static_cast<std::size_t>(*v)];
            const std::optional<int> last = co_await ch.receive();
            CHECK(!last);
        }(rng, capacity, senders, receivers, per_sender, sent_count, received_count));
        INFO("round " << round << " capacity " << capacity);
        for (std::size_t i = 0; i < sent_count.size(); ++i) {
            if (sent_count[i] > 1 || received_count[i] != sent_count[i]) {
                FAIL("value " << i << " sent " << sent_count[i] << " received " << received_count[i]);
            }
        }
    }
}

TEST_CASE("a when_any loser started after the winner neither receives nor sends", "[sync][channel][cancel]") {
    tandem::sync_wait([]() -> tandem::task<> {
        tandem::channel<int> a(2), b(2);
        CHECK(a.try_send(1));
        CHECK(b.try_send(2));
        auto receive = [](tandem::channel<int>& c) -> tandem::task<std::optional<int>> { co_return co_await c.receive(); };
        // The first child takes a's value at once; the second starts already cancelled.
        auto r = co_await tandem::when_any(receive(a), receive(b));
        CHECK(r.index() == 0);
        CHECK(a.size() == 0);
        CHECK(b.size() == 1); // b's value stayed in the channel

        auto send = [](tandem::channel<int>& c, int v) -> tandem::task<> { co_await c.send(int(v)); };
        auto s = co_await tandem::when_any(send(a, 3), send(b, 4));
        CHECK(s.index() == 0);
        CHECK(a.size() == 1);
        CHECK(b.size() == 1); // the loser did not send
    }());
}

TEST_CASE("a value promised to a receiver torn down with its loop stays in the channel", "[sync][channel][teardown]") {
    tandem::channel<int> ch(2); // outlives the loops
    {
        tandem::event_loop loop;
        loop.run([](tandem::channel<int>& c) -> tandem::task<> {
            auto receive = [](tandem::channel<int>& ch2) -> tandem::task<> { (void)co_await ch2.receive(); };
            auto h = tandem::spawn(receive(c));
            co_await tandem::yield(); // it waits
            CHECK(c.try_send(5));      // promised to it; main ends before it runs
        }(ch));
    } // the loop destroys the queued receiver
    CHECK(ch.size() == 1);
    const std::optional<int> v = ch.try_receive();
    CHECK(v == 5);
}

TEST_CASE("a mutex or semaphore unit handed to a waiter torn down with its loop is given back", "[sync][teardown]") {
    tandem::async_mutex m; // both outlive the loop
    tandem::semaphore sem(1);
    {
        tandem::event_loop loop;
        loop.run([](tandem::async_mutex& mx, tandem::semaphore& s) -> tandem::task<> {
            auto locker = [](tandem::async_mutex& m2) -> tandem::task<> { auto g = co_await m2.scoped_lock(); };
            auto acquirer = [](tandem::semaphore& s2) -> tandem::task<> { co_await s2.acquire(); };
            CHECK(mx.try_lock());
            CHECK(s.try_acquire());
            auto a = tandem::spawn(locker(mx));
            auto b = tandem::spawn(acquirer(s));
            co_await tandem::yield(); // both wait
            mx.unlock();              // ownership handed to the locker...
            s.release();              // ...and the unit to the acquirer; main ends before they run
        }(m, sem));
    }
    CHECK(m.try_lock());
    CHECK(sem.available() == 1);
}
