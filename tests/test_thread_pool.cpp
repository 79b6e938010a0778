#include "tandem/thread_pool.hpp"

#include "catch.hpp"
#include "other_tu.hpp"
#include "tandem/fwd.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"
#include "tandem/when.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

/// A door threads wait at until someone opens it (from any thread).
class gate {
public:
    void open() {
        {
            std::lock_guard lock(m_mutex);
            m_open = true;
        }
        m_cv.notify_all();
    }
    void wait() {
        std::unique_lock lock(m_mutex);
        m_cv.wait(lock, [&] { return m_open; });
    }
private:
    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_open = false;
};

/// A gate a stop-aware waiter can leave early (condition_variable_any + stop_token).
class stoppable_gate {
public:
    void open() {
        {
            std::lock_guard lock(m_mutex);
            m_open = true;
        }
        m_cv.notify_all();
    }
    bool wait(std::stop_token stop) {
        std::unique_lock lock(m_mutex);
        return m_cv.wait(lock, stop, [&] { return m_open; });
    }
    void wait() {
        std::unique_lock lock(m_mutex);
        m_cv.wait(lock, [&] { return m_open; });
    }

private:
    std::mutex m_mutex;
    std::condition_variable_any m_cv;
    bool m_open = false;
};

/// Suspends the calling task until `g` opens, by waiting for it on another pool's thread:
/// a test waits on the event, never sleeps for it.
tandem::task<void> until_open(tandem::thread_pool& waiter, gate& g) {
    co_await waiter.run([&g] { g.wait(); });
}

} // namespace

TEST_CASE("run returns the value on the awaiting loop thread the job runs on a worker", "[thread_pool]") {
    tandem::thread_pool pool(2);
    auto body = [&]() -> tandem::task<> {
        const auto loop_thread = std::this_thread::get_id();
        const auto job_thread = co_await pool.run([] { return std::this_thread::get_id(); });
        CHECK(job_thread != loop_thread);
        CHECK(std::this_thread::get_id() == loop_thread);
        const int sum = co_await pool.run([](int a, int b) { return a + b; }, 40, 2);
        CHECK(sum == 42);
        const std::string s = co_await pool.run([](std::string x) { return x + "!"; }, std::string("hi"));
        CHECK(s == "hi!");
        co_await pool.run([] {}); // void
    };
    tandem::sync_wait(body());
}

TEST_CASE("move-only arguments and results and references cross the pool", "[thread_pool]") {
    tandem::thread_pool pool(1);
    static int shared_value = 5;
    auto body = [&]() -> tandem::task<> {
        auto p = co_await pool.run([](std::unique_ptr<int> in) { return std::make_unique<int>(*in * 2); },
                                   std::make_unique<int>(21));
        REQUIRE(p);
        CHECK(*p == 42);
        int& ref = co_await pool.run([]() -> int& { return shared_value; });
        CHECK(&ref == &shared_value);
    };
    tandem::sync_wait(body());
}

TEST_CASE("a pointer to a member is a job called on an object a pointer or a reference_wrapper", "[thread_pool]") {
    struct account {
        int balance = 10;
        int add(int n) { return balance += n; }
        int read() const { return balance; }
    };
    tandem::thread_pool pool(1);
    account a;
    CHECK(pool.submit(&account::add, &a, 5).get() == 15);
    CHECK(pool.submit(&account::add, std::ref(a), 1).get() == 16);
    CHECK(pool.submit(&account::read, a).get() == 16); // a copy, taken at submit
    CHECK(pool.submit(&account::balance, &a).get() == 16);
    auto body = [&]() -> tandem::task<> {
        const int after = co_await pool.run(&account::add, &a, 4);
        CHECK(after == 20);
        int& balance = co_await pool.run(&account::balance, std::ref(a));
        CHECK(&balance == &a.balance);
    };
    tandem::sync_wait(body());
}

TEST_CASE("an exception thrown by the job is rethrown to the awaiter with its type", "[thread_pool]") {
    tandem::thread_pool pool(1);
    auto body = [&]() -> tandem::task<> {
        CHECK_THROWS_AS(co_await pool.run([] { throw std::out_of_range("index 7"); }), std::out_of_range);
        CHECK_THROWS_WITH(co_await pool.run([]() -> int { throw std::runtime_error("boom"); }), "boom");
        const int after = co_await pool.run([] { return 1; }); // the pool is fine afterwards
        CHECK(after == 1);
    };
    tandem::sync_wait(body());
}

TEST_CASE("100 000 offloads from 4 loops in 4 threads share one pool", "[thread_pool]") {
    tandem::thread_pool pool(3);
    constexpr int loops = 4;
    constexpr int per_loop = 25'000;
    std::atomic<long> total{0};
    std::atomic<int> wrong_thread{0};
    std::vector<std::thread> threads;
    for (int l = 0; l < loops; ++l) {
        threads.emplace_back([&] {
            auto chain = [&](int n) -> tandem::task<long> {
                long sum = 0;
                const auto me = std::this_thread::get_id();
                for (int i = 0; i < n; ++i) {
                    sum += co_await pool.run([](int x) { return x + 1; }, i);
                    if (std::this_thread::get_id() != me) ++wrong_thread;
                }
                co_return sum;
            };
            auto body = [&]() -> tandem::task<long> {
                // 16 chains per loop: many jobs in flight from every loop at once.
                std::vector<tandem::task<long>> chains;
                for (int c = 0; c < 16; ++c) chains.push_back(chain(per_loop / 16));
                long sum = 0;
                for (long s : co_await tandem::when_all(std::move(chains))) sum += s;
                co_return sum;
            };
            total += tandem::sync_wait(body());
        });
    }
    for (auto& t : threads) t.join();
    constexpr long per_chain = per_loop / 16;
    CHECK(total.load() == loops * 16 * (per_chain * (per_chain + 1) / 2));
    CHECK(wrong_thread.load() == 0);
}

TEST_CASE("cancelling a job that has not started removes it: it never runs", "[thread_pool][cancel]") {
    tandem::thread_pool pool(1);
    tandem::thread_pool waiter(1);
    gate busy_started, release_busy;
    std::atomic<bool> queued_job_ran{false};
    auto body = [&]() -> tandem::task<> {
        auto busy = tandem::spawn(pool.run([&] {
            busy_started.open();
            release_busy.wait();
        }));
        co_await until_open(waiter, busy_started); // the only worker is taken
        auto queued = tandem::spawn(pool.run([&] { queued_job_ran = true; }));
        co_await tandem::yield(); // let it reach the queue
        CHECK(pool.queued() == 1);
        queued.cancel();
        CHECK_THROWS_AS(co_await queued, tandem::cancelled); // resumes while the worker is still busy
        CHECK(pool.queued() == 0);
        release_busy.open();
        co_await busy;
        co_await pool.run([] {}); // everything queued before this has run or was removed
    };
    tandem::sync_wait(body());
    CHECK_FALSE(queued_job_ran.load());
}

TEST_CASE("cancelling a running job stops a stop_token-aware callable and resumes at once", "[thread_pool][cancel]") {
    tandem::thread_pool pool(1);
    tandem::thread_pool waiter(1);
    gate started;
    std::atomic<bool> saw_stop{false};
    auto body = [&]() -> tandem::task<> {
        auto job = tandem::spawn(pool.run([&](std::stop_token stop) {
            started.open();
            stoppable_gate never;
            saw_stop = !never.wait(stop); // returns only when stopped
            return 1;
        }));
        co_await until_open(waiter, started);
        job.cancel();
        CHECK_THROWS_AS(co_await job, tandem::cancelled);
        co_await pool.run([] {}); // the worker is free again: the job did stop
    };
    tandem::sync_wait(body());
    CHECK(saw_stop.load());
}

TEST_CASE("cancelling a running job that ignores stop_token still resumes the awaiter promptly",
          "[thread_pool][cancel]") {
    tandem::thread_pool pool(1);
    tandem::thread_pool waiter(1);
    gate started, release;
    std::atomic<bool> finished{false};
    auto body = [&]() -> tandem::task<> {
        auto job = tandem::spawn(pool.run([&started, &release, &finished] {
            started.open();
            release.wait();
            finished = true;
            return std::string(1000, 'x'); // a result nobody will take: freed by the worker
        }));
        co_await until_open(waiter, started);
        job.cancel();
        CHECK_THROWS_AS(co_await job, tandem::cancelled);
        CHECK_FALSE(finished.load()); // we did not wait for it
        release.open();
        co_await pool.run([] {});
    };
    tandem::sync_wait(body());
    CHECK(finished.load());
}

TEST_CASE("with_timeout around an offloaded job throws timed_out", "[thread_pool][cancel]") {
    tandem::thread_pool pool(1);
    auto body = [&]() -> tandem::task<> {
        auto slow = pool.run([](std::stop_token stop) {
            stoppable_gate never;
            never.wait(stop);
        });
        CHECK_THROWS_AS(co_await tandem::with_timeout(20ms, std::move(slow)), tandem::timed_out);
    };
    tandem::sync_wait(body());
}

TEST_CASE("a bounded queue suspends run() callers until a worker frees a slot", "[thread_pool][backpressure]") {
    tandem::thread_pool pool(tandem::thread_pool_options{.threads = 1, .max_queued = 2});
    tandem::thread_pool waiter(1);
    gate started, release;
    std::vector<int> order;
    auto body = [&]() -> tandem::task<> {
        auto busy = tandem::spawn(pool.run([&] {
            started.open();
            release.wait();
        }));
        co_await until_open(waiter, started);
        std::vector<tandem::join_handle<int>> jobs;
        for (int i = 0; i < 5; ++i) jobs.push_back(tandem::spawn(pool.run([i] { return i; })));
        co_await tandem::yield();
        CHECK(pool.queued() == 2);             // the bound holds
        CHECK(pool.waiting_for_space() == 3);  // the rest wait, suspended
        release.open();
        for (auto& j : jobs) {
            const int v = co_await j;
            order.push_back(v);
        }
        co_await busy;
        CHECK(pool.queued() == 0);
        CHECK(pool.waiting_for_space() == 0);
    };
    tandem::sync_wait(body());
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("a caller waiting for queue space can be cancelled", "[thread_pool][backpressure][cancel]") {
    tandem::thread_pool pool(tandem::thread_pool_options{.threads = 1, .max_queued = 1});
    tandem::thread_pool waiter(1);
    gate started, release;
    std::atomic<int> ran{0};
    auto body = [&]() -> tandem::task<> {
        auto busy = tandem::spawn(pool.run([&] {
            started.open();
            release.wait();
        }));
        co_await until_open(waiter, started);
        auto first = tandem::spawn(pool.run([&] { ++ran; }));
        auto parked = tandem::spawn(pool.run([&] { ran += 100; }));
        co_await tandem::yield();
        CHECK(pool.waiting_for_space() == 1);
        parked.cancel();
        CHECK_THROWS_AS(co_await parked, tandem::cancelled);
        CHECK(pool.waiting_for_space() == 0);
        release.open();
        co_await first;
        co_await busy;
    };
    tandem::sync_wait(body());
    CHECK(ran.load() == 1);
}

TEST_CASE("submit() and post() from threads with no loop respect the queue bound", "[thread_pool][backpressure]") {
    tandem::thread_pool pool(tandem::thread_pool_options{.threads = 1, .max_queued = 2});
    std::atomic<std::size_t> worst{0};
    std::vector<std::thread> producers;
    std::vector<std::future<int>> futures[4];
    for (int t = 0; t < 4; ++t) {
        producers.emplace_back([&, t] {
            for (int i = 0; i < 50; ++i) {
                futures[t].push_back(pool.submit([&pool, &worst, i] {
                    const std::size_t q = pool.queued();
                    std::size_t seen = worst.load();
                    while (q > seen && !worst.compare_exchange_weak(seen, q)) {
                    }
                    return i;
                }));
            }
        });
    }
    for (auto& p : producers) p.join();
    int sum = 0;
    for (auto& list : futures)
        for (auto& f : list) sum += f.get();
    CHECK(sum == 4 * (49 * 50 / 2));
    CHECK(worst.load() <= 2);

    std::promise<void> done;
    std::atomic<int> count{0};
    for (int i = 0; i < 10; ++i)
        pool.post([&] {
            if (++count == 10) done.set_value();
        });
    done.get_future().wait();
    CHECK(count.load() == 10);
}

TEST_CASE("submit() futures carry values void and exceptions", "[thread_pool]") {
    tandem::thread_pool pool(2);
    auto a = pool.submit([](int x) { return x * 2; }, 21);
    auto b = pool.submit([] {});
    auto c = pool.submit([]() -> int { throw std::invalid_argument("bad"); });
    CHECK(a.get() == 42);
    b.get();
    CHECK_THROWS_AS(c.get(), std::invalid_argument);
}

TEST_CASE("destroying a pool cancels queued jobs stops and waits for running ones", "[thread_pool]") {
    auto pool = std::make_unique<tandem::thread_pool>(tandem::thread_pool_options{.threads = 1});
    tandem::thread_pool waiter(1);
    gate started;
    std::atomic<bool> queued_ran{false};
    std::future<int> queued_future;
    auto body = [&]() -> tandem::task<> {
        auto running = tandem::spawn(pool->run([&](std::stop_token stop) {
            started.open();
            stoppable_gate never;
            never.wait(stop); // ends when the destructor asks
            return 7;
        }));
        co_await until_open(waiter, started);
        auto queued = tandem::spawn(pool->run([&] { queued_ran = true; }));
        queued_future = pool->submit([&] {
            queued_ran = true;
            return 1;
        });
        co_await tandem::yield();
        pool.reset(); // returns once the running job has stopped and the threads are joined
        const int r = co_await running;
        CHECK(r == 7); // it finished: its result is delivered
        CHECK_THROWS_AS(co_await queued, tandem::cancelled);
    };
    tandem::sync_wait(body());
    CHECK_THROWS_AS(queued_future.get(), tandem::cancelled);
    CHECK_FALSE(queued_ran.load());
}

TEST_CASE("destroying a loop while its job runs: the job finishes without touching the loop", "[thread_pool]") {
    tandem::thread_pool pool(1);
    tandem::thread_pool waiter(1);
    gate started, release;
    std::promise<void> finished;
    {
        tandem::event_loop loop;
        auto job = [&]() -> tandem::task<> {
            co_await pool.run([&] {
                started.open();
                release.wait();
                finished.set_value();
                return std::vector<int>(100, 1);
            });
        };
        auto main = [&]() -> tandem::task<> {
            tandem::spawn(job()).detach();
            co_await until_open(waiter, started);
        };
        loop.run(main());
    } // the loop dies with the job's awaiter suspended in it
    release.open();
    finished.get_future().wait();
    pool.submit([] {}).get(); // the worker has left the job; ASan would see a use after free
}

TEST_CASE("offload() uses a default pool sized by TANDEM_THREADPOOL_SIZE", "[thread_pool]") {
    ::setenv("TANDEM_THREADPOOL_SIZE", "3", 1);
    CHECK(tandem::detail::default_pool_size() == 3);
    ::setenv("TANDEM_THREADPOOL_SIZE", "many", 1);
    CHECK(tandem::detail::default_pool_size() == tandem::detail::hardware_threads());
    ::setenv("TANDEM_THREADPOOL_SIZE", "0", 1);
    CHECK(tandem::detail::default_pool_size() == tandem::detail::hardware_threads());
    ::unsetenv("TANDEM_THREADPOOL_SIZE");
    auto body = []() -> tandem::task<> {
        const double r = co_await tandem::offload([](double x) { return x * 2; }, 1.5);
        CHECK(r == 3.0);
    };
    tandem::sync_wait(body());
    CHECK(tandem::default_thread_pool().size() >= 1);
}

TEST_CASE("a pool with polling off still delivers (workers and loop sleep in the kernel)", "[thread_pool]") {
    tandem::thread_pool pool(tandem::thread_pool_options{.threads = 2, .spin = 0us});
    auto body = [&]() -> tandem::task<> {
        long sum = 0;
        for (int i = 0; i < 2000; ++i) sum += co_await pool.run([](int x) { return x; }, i);
        CHECK(sum == 1999L * 2000 / 2);
    };
    tandem::sync_wait(body());
}

TEST_CASE("a task still awaiting a destroyed pool is destroyed with its loop without touching the pool", "[thread_pool][lifecycle]") {
    // The pool lives in storage the test scribbles over once it is destroyed: an awaiter that
    // reached into the dead pool (its mutex) would fail loudly instead of by chance.
    alignas(tandem::thread_pool) unsigned char storage[sizeof(tandem::thread_pool)];
    gate started;
    {
        tandem::event_loop loop;
        auto* pool = new (storage) tandem::thread_pool(tandem::thread_pool_options{.threads = 1});
        loop.run([&]() -> tandem::task<> {
            tandem::spawn(pool->run([&](std::stop_token stop) {
                started.open();
                stoppable_gate never;
                never.wait(stop);
                return 1;
            })).detach();
            tandem::spawn(pool->run([] { return 2; })).detach(); // queued behind it
            co_await tandem::yield();                            // both jobs are with the pool
        }());
        started.wait();
        pool->~thread_pool(); // the running job stops, the queued one is cancelled: both posted, not resumed
        std::memset(storage, 0xff, sizeof storage);
    } // the loop destroys both suspended tasks
    SUCCEED();
}

TEST_CASE("a forked copy of the program can neither use nor tear down its parent's pool", "[thread_pool][fork]") {
    tandem::thread_pool pool(2);
    CHECK(pool.submit([] { return 1; }).get() == 1); // its threads run, and sleep
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::alarm(20);
        int code = 0;
        try {
            (void)pool.submit([] { return 2; }); // no thread here would ever run it
            code = 1;
        } catch (const std::logic_error&) {
        }
        pool.~thread_pool(); // what exit() does to a static pool: must not wait for threads it lacks
        std::_Exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(pool.submit([] { return 3; }).get() == 3);
}

// The pools are class templates behind aliases (so that including them compiles none of their
// bodies: bench/README.md, "Include cost"); fwd.hpp names them the same way, and the public
// name works where a class name is needed, as in pool.~thread_pool() above.
static_assert(std::is_same_v<tandem::thread_pool, tandem::basic_thread_pool<>>);
static std::size_t threads_of(tandem::thread_pool& pool) { return pool.size(); }

TEST_CASE("thread_pool is the one instantiation of basic_thread_pool that fwd.hpp declares", "[thread_pool]") {
    tandem::thread_pool pool(2);
    CHECK(threads_of(pool) == 2);
    CHECK(&tandem::default_thread_pool() == &tandem::default_thread_pool<>());
}

TEST_CASE("default_thread_pool is one pool per program across translation units", "[thread_pool]") {
    // A function template's static lives once per program (vague linkage), like an inline
    // function's; other_tu.cpp is a second translation unit that includes thread_pool.hpp.
    CHECK(&other_tu::default_pool() == &tandem::default_thread_pool());
    tandem::thread_pool pool(3);
    CHECK(other_tu::size_of(pool) == 3);
}

// The forms a user writes with a class name, which an alias of a class template must keep
// working (README, "Include cost"): deriving with inherited constructors, a friend, the
// pool as a member, in optional and smart pointers, a typed pointer to default_thread_pool.
namespace {
struct derived_pool : tandem::thread_pool {
    using thread_pool::thread_pool;
};
class befriends {
    friend tandem::thread_pool;
};
struct owns_pools {
    tandem::thread_pool member{1};
    std::optional<tandem::thread_pool> maybe;
    std::unique_ptr<tandem::thread_pool> unique;
    std::shared_ptr<tandem::thread_pool> shared;
};
} // namespace

TEST_CASE("thread_pool works where a class name is written", "[thread_pool]") {
    derived_pool derived(tandem::thread_pool_options{.threads = 1});
    owns_pools owner;
    owner.maybe.emplace(1);
    owner.unique = std::make_unique<tandem::thread_pool>(1);
    owner.shared = std::make_shared<tandem::thread_pool>(1);
    tandem::thread_pool& (*typed)() = &tandem::default_thread_pool;
    CHECK(&typed() == &tandem::default_thread_pool());
    CHECK(derived.submit([] { return 1; }).get() + owner.member.submit([] { return 2; }).get() +
              owner.maybe->submit([] { return 3; }).get() + owner.unique->submit([] { return 4; }).get() +
              owner.shared->submit([] { return 5; }).get() ==
          15);
}

namespace {
// Callables of every shape std::invoke accepts: a job calls each as std::invoke(fn&, args&&...)
// would, with the stored callable as an lvalue and the stored arguments as rvalues.
struct ref_qualified {
    int operator()() & { return 1; }
    int operator()() && { return 2; }
    int operator()() const& { return 3; }
};
struct token_taker {
    bool operator()(const std::stop_token& t, int) const { return t.stop_possible(); }
};
struct widget {
    int value = 5;
    int& ref() { return value; }
    int take(std::unique_ptr<int>&& p) const { return *p + value; }
    bool with_token(std::stop_token t) const { return t.stop_possible(); }
};
int& global_ref() {
    static int g = 9;
    return g;
}
int twice(int n) noexcept { return 2 * n; }
std::string moved_from(std::string&& s) { return std::move(s); }
} // namespace

TEST_CASE("jobs call their callable as std::invoke would: a table of callable shapes", "[thread_pool]") {
    tandem::thread_pool pool(1);
    widget w;
    ref_qualified rq;
    // The result types first: what std::invoke on an lvalue callable and rvalue arguments gives.
    STATIC_REQUIRE(std::is_same_v<decltype(pool.submit(&widget::ref, &w)), std::future<int&>>);
    STATIC_REQUIRE(std::is_same_v<decltype(pool.submit(&widget::value, std::ref(w))), std::future<int&>>);
    STATIC_REQUIRE(std::is_same_v<decltype(pool.submit(global_ref)), std::future<int&>>);
    STATIC_REQUIRE(std::is_same_v<decltype(pool.submit(moved_from, std::string())), std::future<std::string>>);
    CHECK(pool.submit(rq).get() == std::invoke(rq));               // the stored copy, an lvalue: 1
    CHECK(pool.submit(std::cref(rq)).get() == std::invoke(std::cref(rq))); // through a const reference: 3
    CHECK(&pool.submit(&widget::ref, &w).get() == &w.value);
    CHECK(&pool.submit(global_ref).get() == &global_ref());
    CHECK(pool.submit(&widget::take, std::cref(w), std::make_unique<int>(1)).get() == 6);
    CHECK(pool.submit(&twice, 21).get() == 42);
    CHECK(pool.submit(moved_from, std::string(100, 'x')).get() == std::string(100, 'x'));
    // A callable that takes a std::stop_token first gets the pool's; a member function that
    // takes one does not (the object comes first), as std::invoke would not.
    CHECK(pool.submit(token_taker{}, 1).get());
    CHECK_FALSE(pool.submit(&widget::with_token, &w, std::stop_token{}).get());
    auto body = [&]() -> tandem::task<> {
        int& r = co_await pool.run(&widget::ref, std::ref(w));
        CHECK(&r == &w.value);
        const int rvalue_or_lvalue = co_await pool.run(ref_qualified{});
        CHECK(rvalue_or_lvalue == 1);
        const bool saw_token = co_await pool.run(token_taker{}, 2);
        CHECK(saw_token);
    };
    tandem::sync_wait(body());
}
