// bench_core — the loop's basic costs, tandem and standalone asio side by side in one run.
//
//   build/release/bench/bench_core [--repeat 5] [--quick] [--in-process]
//
// Each measurement alternates tandem and asio (A B A B ...) and reports medians, so a noisy
// neighbour hits both. Measured (see bench/README.md for the figures):
//   spawn+complete       start a trivial coroutine on the loop and run it to completion
//   spawn+suspend once   the same, with one suspension (tandem::yield / asio::post)
//   1M timers            arm and fire a million timers, deadlines spread over 1 ms
//                        (tandem: one coroutine per timer; asio: steady_timer callbacks and
//                        coroutines awaiting steady_timer)
//   100k sleeps          100,000 spawned coroutines each sleeping 1 ms, wall time per sleep
//   post                 post a callback from the loop thread and run it
// Every measurement runs in a fresh forked child after a warm-up run of the same size; glibc is told to keep freed memory (mallopt), for both contenders alike.
//   cross-thread post    round trip loop A → loop B → loop A, threads on one core / two cores
#include <tandem/tandem.hpp>

#if defined(TANDEM_BENCH_HAVE_ASIO)
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/version.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <malloc.h>
#include <memory>
#include <pthread.h>
#include <sched.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

int g_repeat = 5;
const char* g_only = nullptr; // --only TEXT: run the rows whose name contains TEXT
bool g_in_process = false; // --in-process: no fork, both contenders share one heap
double g_scale = 1.0; // --quick shrinks the counts

long scaled(long n) { return std::max(1L, static_cast<long>(static_cast<double>(n) * g_scale)); }

/// ns per operation of one run of fn(n), measured in a forked child: each measurement gets
/// a heap untouched by the other contender's runs (a server uses one library, not both).
template <class F>
double ns_per_op(long n, F&& fn) {
    if (g_in_process) {
        fn(n);
        const auto start = clock_type::now();
        fn(n);
        return std::chrono::duration<double, std::nano>(clock_type::now() - start).count() / static_cast<double>(n);
    }
    int fds[2];
    if (::pipe(fds) != 0) std::abort();
    const pid_t child = ::fork();
    if (child == 0) {
        ::close(fds[0]);
        fn(n); // warm up: the measured run reuses memory the process already touched
        const auto start = clock_type::now();
        fn(n);
        const double ns = std::chrono::duration<double, std::nano>(clock_type::now() - start).count() / static_cast<double>(n);
        if (::write(fds[1], &ns, sizeof ns) != sizeof ns) ::_exit(1);
        ::_exit(0);
    }
    ::close(fds[1]);
    double ns = -1;
    if (::read(fds[0], &ns, sizeof ns) != sizeof ns) std::fprintf(stderr, "measurement failed\n");
    ::close(fds[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    return ns;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % static_cast<int>(std::thread::hardware_concurrency()), &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// ---------------------------------------------------------------------------- tandem
namespace tb {

tandem::task<> trivial(long& done) {
    ++done;
    co_return;
}
tandem::task<> suspend_once(long& done) {
    co_await tandem::yield();
    ++done;
}
tandem::task<> sleeper_until(clock_type::time_point at, long& done) {
    co_await tandem::sleep_until(at);
    ++done;
}
tandem::task<> sleeper_for(long& done) {
    co_await tandem::sleep_for(1ms);
    ++done;
}

template <class Make>
void spawn_many(long n, Make make) {
    tandem::event_loop loop;
    long done = 0;
    for (long i = 0; i < n; ++i) tandem::spawn(loop, make(done)).detach();
    loop.run([](long& d, long count) -> tandem::task<> {
        while (d < count) co_await tandem::yield(); // one check per loop turn
    }(done, n));
}

void spawn_complete(long n) { spawn_many(n, trivial); }
void spawn_suspend(long n) { spawn_many(n, suspend_once); }
void sleeps(long n) { spawn_many(n, sleeper_for); }

void timers(long n) {
    tandem::event_loop loop;
    long done = 0;
    std::vector<tandem::task<>> tasks;
    tasks.reserve(static_cast<std::size_t>(n));
    const auto base = clock_type::now();
    for (long i = 0; i < n; ++i) tasks.push_back(sleeper_until(base + std::chrono::nanoseconds((i * 7919) % 1'000'000), done));
    loop.run(tandem::when_all(std::move(tasks)));
}

void post(long n) {
    tandem::event_loop loop;
    long done = 0;
    loop.run([](tandem::event_loop& l, long count, long& d) -> tandem::task<> {
        for (long i = 0; i < count; ++i) l.post([&d] { ++d; });
        while (d < count) co_await tandem::yield();
    }(loop, n, done));
}

void round_trips(long n, bool same_core) {
    tandem::event_loop a, b;
    std::thread tb_thread([&] {
        pin_to_cpu(same_core ? 0 : 1);
        b.run();
    });
    pin_to_cpu(0);
    long left = n;
    std::function<void()> ping = [&] {
        b.post([&] {
            a.post([&] {
                if (--left == 0) a.stop();
                else ping();
            });
        });
    };
    a.post(ping);
    a.run();
    b.stop();
    tb_thread.join();
}

} // namespace tb

#if defined(TANDEM_BENCH_HAVE_ASIO)
// ---------------------------------------------------------------------------- asio
namespace ab {

asio::awaitable<void> trivial(long& done) {
    ++done;
    co_return;
}
asio::awaitable<void> suspend_once(long& done) {
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    ++done;
}
asio::awaitable<void> sleeper_for(long& done) {
    asio::steady_timer t(co_await asio::this_coro::executor, 1ms);
    co_await t.async_wait(asio::use_awaitable);
    ++done;
}
asio::awaitable<void> sleeper_until(clock_type::time_point at, long& done) {
    asio::steady_timer t(co_await asio::this_coro::executor, at);
    co_await t.async_wait(asio::use_awaitable);
    ++done;
}

template <class Make>
void spawn_many(long n, Make make) {
    asio::io_context io(1);
    long done = 0;
    for (long i = 0; i < n; ++i) asio::co_spawn(io, make(done), asio::detached);
    io.run();
}

void spawn_complete(long n) { spawn_many(n, trivial); }
void spawn_suspend(long n) { spawn_many(n, suspend_once); }
void sleeps(long n) { spawn_many(n, sleeper_for); }

void coroutine_timers(long n) {
    asio::io_context io(1);
    long done = 0;
    const auto base = clock_type::now();
    for (long i = 0; i < n; ++i)
        asio::co_spawn(io, sleeper_until(base + std::chrono::nanoseconds((i * 7919) % 1'000'000), done), asio::detached);
    io.run();
}

void callback_timers(long n) {
    asio::io_context io(1);
    long done = 0;
    std::vector<std::unique_ptr<asio::steady_timer>> timers;
    timers.reserve(static_cast<std::size_t>(n));
    const auto base = clock_type::now();
    for (long i = 0; i < n; ++i) {
        timers.push_back(std::make_unique<asio::steady_timer>(io, base + std::chrono::nanoseconds((i * 7919) % 1'000'000)));
        timers.back()->async_wait([&done](const std::error_code&) { ++done; });
    }
    io.run();
}

void post(long n) {
    asio::io_context io(1);
    long done = 0;
    for (long i = 0; i < n; ++i) asio::post(io, [&done] { ++done; });
    io.run();
}

void round_trips(long n, bool same_core) {
    asio::io_context a(1), b(1);
    auto guard_a = asio::make_work_guard(a);
    auto guard_b = asio::make_work_guard(b);
    std::thread tb_thread([&] {
        pin_to_cpu(same_core ? 0 : 1);
        b.run();
    });
    pin_to_cpu(0);
    long left = n;
    std::function<void()> ping = [&] {
        asio::post(b, [&] {
            asio::post(a, [&] {
                if (--left == 0) a.stop();
                else ping();
            });
        });
    };
    asio::post(a, ping);
    a.run();
    guard_b.reset();
    b.stop();
    tb_thread.join();
}

} // namespace ab
#endif

struct row {
    std::string name;
    std::string unit;
    double tandem = 0;
    double asio = 0;     // 0: not measured
    double asio_alt = 0; // second asio variant (coroutine timers), 0 if none
};

void print(const std::vector<row>& rows) {
    std::printf("\n%-34s %10s %12s %12s %10s\n", "benchmark", "unit", "tandem", "asio", "tandem/asio");
    for (const row& r : rows) {
        std::printf("%-34s %10s %12.1f", r.name.c_str(), r.unit.c_str(), r.tandem);
        if (r.asio > 0) std::printf(" %12.1f %10.2f\n", r.asio, r.tandem / r.asio);
        else std::printf(" %12s %10s\n", "-", "-");
        if (r.asio_alt > 0)
            std::printf("%-34s %10s %12s %12.1f %10.2f\n", "  (asio coroutine timers)", r.unit.c_str(), "", r.asio_alt,
                        r.tandem / r.asio_alt);
    }
}

template <class T, class A>
row measure(const char* name, const char* unit, long n, T&& tandem_fn, A&& asio_fn) {
    std::vector<double> t, a;
    if (g_only && !std::strstr(name, g_only)) return row{name, unit, 0, 0, 0};
    for (int i = 0; i < g_repeat; ++i) {
        t.push_back(ns_per_op(n, tandem_fn));
        a.push_back(ns_per_op(n, asio_fn));
    }
    row r{name, unit, median(t), median(a), 0};
    std::fprintf(stderr, "  %s done\n", name);
    return r;
}

} // namespace

int main(int argc, char** argv) {
    // Keep freed memory in the process: otherwise glibc returns it after every burst of a
    // million frames and each run measures the kernel zeroing pages, not the library.
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 256 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) g_repeat = std::atoi(argv[++i]);
        else if (std::strcmp(argv[i], "--in-process") == 0) g_in_process = true;
        else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) g_only = argv[++i];
        else if (std::strcmp(argv[i], "--quick") == 0) {
            g_scale = 0.05;
            g_repeat = 1;
        }
    }
    std::vector<row> rows;
#if defined(TANDEM_BENCH_HAVE_ASIO)
    std::fprintf(stderr, "tandem (%s) vs asio %d.%d.%d, %d repeats, medians\n", tandem::event_loop::backend(),
                 ASIO_VERSION / 100000, ASIO_VERSION / 100 % 1000, ASIO_VERSION % 100, g_repeat);
    rows.push_back(measure("spawn+complete", "ns/task", scaled(1'000'000), tb::spawn_complete, ab::spawn_complete));
    rows.push_back(measure("spawn+suspend once", "ns/task", scaled(1'000'000), tb::spawn_suspend, ab::spawn_suspend));
    {
        row r = measure("1M timers (arm+fire)", "ns/timer", scaled(1'000'000), tb::timers, ab::callback_timers);
        std::vector<double> alt;
        if (r.tandem > 0) {
            for (int i = 0; i < g_repeat; ++i) alt.push_back(ns_per_op(scaled(1'000'000), ab::coroutine_timers));
            r.asio_alt = median(alt);
        }
        rows.push_back(r);
    }
    rows.push_back(measure("100k coroutine sleeps (1 ms)", "ns/sleep", scaled(100'000), tb::sleeps, ab::sleeps));
    rows.push_back(measure("post (loop thread)", "ns/post", scaled(1'000'000), tb::post, ab::post));
    rows.push_back(measure("cross-thread round trip, 1 core", "ns/trip", scaled(20'000),
                           [](long n) { tb::round_trips(n, true); }, [](long n) { ab::round_trips(n, true); }));
    rows.push_back(measure("cross-thread round trip, 2 cores", "ns/trip", scaled(20'000),
                           [](long n) { tb::round_trips(n, false); }, [](long n) { ab::round_trips(n, false); }));
#else
    std::fprintf(stderr, "asio not found: tandem only\n");
    auto only = [](const char* name, const char* unit, long n, auto fn) {
        std::vector<double> t;
        if (g_only && !std::strstr(name, g_only)) return row{name, unit, 0, 0, 0};
        for (int i = 0; i < g_repeat; ++i) t.push_back(ns_per_op(n, fn));
        return row{name, unit, median(t), 0, 0};
    };
    rows.push_back(only("spawn+complete", "ns/task", scaled(1'000'000), tb::spawn_complete));
    rows.push_back(only("spawn+suspend once", "ns/task", scaled(1'000'000), tb::spawn_suspend));
    rows.push_back(only("1M timers (arm+fire)", "ns/timer", scaled(1'000'000), tb::timers));
    rows.push_back(only("100k coroutine sleeps (1 ms)", "ns/sleep", scaled(100'000), tb::sleeps));
    rows.push_back(only("post (loop thread)", "ns/post", scaled(1'000'000), tb::post));
    rows.push_back(only("cross-thread round trip, 1 core", "ns/trip", scaled(20'000), [](long n) { tb::round_trips(n, true); }));
    rows.push_back(only("cross-thread round trip, 2 cores", "ns/trip", scaled(20'000), [](long n) { tb::round_trips(n, false); }));
#endif
    print(rows);
    return 0;
}
