// bench_offload — offload round trip of a trivial job (loop → worker → loop), tandem's
// thread_pool against asio (post to asio::thread_pool, then post back to the io_context).
//
//   build/release/bench/bench_offload [--placement same|cross|both] [--rounds 5] [--quick]
//
// Placements: `same` pins the loop thread and the one worker to CPU 0 (every hand-off is a
// context switch on one core); `cross` pins the loop to CPU 0 and the worker to CPU 1 (every
// hand-off may have to wake an idle vCPU, tens of µs on a VM). Each round runs tandem then
// asio in the same process; figures are medians over rounds.
//   sequential   one job at a time: per round trip p50, p99, mean
//   64 in flight 64 coroutines (asio: 64 callback chains) each offloading back to back: jobs/s
// The Node and Python peers are bench/peers/offload_node.js and offload_python.py.
#include <tandem/tandem.hpp>

#if defined(TANDEM_BENCH_HAVE_ASIO)
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <pthread.h>
#include <sched.h>
#include <string>
#include <thread>
#include <vector>

using clock_type = std::chrono::steady_clock;

namespace {

struct figures {
    double p50_us = 0, p99_us = 0, mean_us = 0;
    double jobs_per_s = 0;
};

long g_sequential = 50'000;
std::string g_only; // --only tandem|asio: one contender (for strace/perf)
long g_in_flight_jobs = 1'000'000;
constexpr int in_flight = 64;

void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (::pthread_setaffinity_np(::pthread_self(), sizeof set, &set) != 0) std::perror("pthread_setaffinity_np");
}

void summarize(std::vector<double>& ns, figures& out) {
    std::sort(ns.begin(), ns.end());
    double sum = 0;
    for (double v : ns) sum += v;
    out.p50_us = ns[ns.size() / 2] / 1000;
    out.p99_us = ns[ns.size() * 99 / 100] / 1000;
    out.mean_us = sum / static_cast<double>(ns.size()) / 1000;
}

int plus_one(int x) { return x + 1; }

// ---- tandem -------------------------------------------------------------------------------

tandem::task<void> tandem_sequential(tandem::thread_pool& pool, std::vector<double>& ns) {
    int x = 0;
    for (double& sample : ns) {
        const auto start = clock_type::now();
        x = co_await pool.run(plus_one, x);
        sample = std::chrono::duration<double, std::nano>(clock_type::now() - start).count();
    }
    if (x != static_cast<int>(ns.size())) std::abort();
}

tandem::task<void> tandem_chain(tandem::thread_pool& pool, long jobs) {
    int x = 0;
    for (long i = 0; i < jobs; ++i) x = co_await pool.run(plus_one, x);
}

tandem::task<void> tandem_in_flight(tandem::thread_pool& pool, long jobs) {
    std::vector<tandem::task<void>> chains;
    for (int i = 0; i < in_flight; ++i) chains.push_back(tandem_chain(pool, jobs / in_flight));
    co_await tandem::when_all(std::move(chains));
}

figures run_tandem(int worker_cpu) {
    figures f;
    tandem::thread_pool pool(tandem::thread_pool_options{.threads = 1});
    pool.submit(pin_to, worker_cpu).get();
    tandem::event_loop loop;
    std::vector<double> ns(static_cast<std::size_t>(g_sequential));
    loop.run(tandem_sequential(pool, ns));
    summarize(ns, f);
    const auto start = clock_type::now();
    loop.run(tandem_in_flight(pool, g_in_flight_jobs));
    f.jobs_per_s = static_cast<double>(g_in_flight_jobs / in_flight * in_flight) /
                   std::chrono::duration<double>(clock_type::now() - start).count();
    return f;
}

// ---- asio ---------------------------------------------------------------------------------

#if defined(TANDEM_BENCH_HAVE_ASIO)
struct asio_chain {
    asio::io_context* io;
    asio::thread_pool* pool;
    long remaining;
    int x = 0;
    std::vector<double>* ns = nullptr; // sequential only
    std::size_t index = 0;
    clock_type::time_point start{};
    int* chains_left = nullptr;
    asio::executor_work_guard<asio::io_context::executor_type>* guard = nullptr;

    void step() {
        if (ns) start = clock_type::now();
        asio::post(*pool, [this] {
            const int v = plus_one(x);
            asio::post(*io, [this, v] {
                x = v;
                if (ns) (*ns)[index++] = std::chrono::duration<double, std::nano>(clock_type::now() - start).count();
                if (--remaining > 0) {
                    step();
                } else if (--*chains_left == 0) {
                    guard->reset();
                }
            });
        });
    }
};

figures run_asio(int worker_cpu) {
    figures f;
    asio::thread_pool pool(1);
    std::promise<void> pinned;
    asio::post(pool, [&] {
        pin_to(worker_cpu);
        pinned.set_value();
    });
    pinned.get_future().get();
    {
        asio::io_context io(1);
        auto guard = asio::make_work_guard(io);
        std::vector<double> ns(static_cast<std::size_t>(g_sequential));
        int left = 1;
        asio_chain c{&io, &pool, g_sequential, 0, &ns, 0, {}, &left, &guard};
        c.step();
        io.run();
        summarize(ns, f);
    }
    {
        asio::io_context io(1);
        auto guard = asio::make_work_guard(io);
        int left = in_flight;
        std::vector<asio_chain> chains;
        chains.reserve(in_flight);
        for (int i = 0; i < in_flight; ++i) chains.push_back(asio_chain{&io, &pool, g_in_flight_jobs / in_flight, 0, nullptr, 0, {}, &left, &guard});
        const auto start = clock_type::now();
        for (asio_chain& c : chains) c.step();
        io.run();
        f.jobs_per_s = static_cast<double>(g_in_flight_jobs / in_flight * in_flight) /
                       std::chrono::duration<double>(clock_type::now() - start).count();
    }
    pool.join();
    return f;
}
#endif

/// No library at all: two threads handing a token back and forth with sched_yield, the
/// cheapest hand-off there is between threads that share a core (the floor for `same`).
double yield_ping_pong_us(int worker_cpu, long n) {
    std::atomic<int> turn{0};
    std::thread other([&] {
        pin_to(worker_cpu);
        for (long i = 0; i < n; ++i) {
            while (turn.load(std::memory_order_acquire) != 1) sched_yield();
            turn.store(0, std::memory_order_release);
        }
    });
    const auto start = clock_type::now();
    for (long i = 0; i < n; ++i) {
        turn.store(1, std::memory_order_release);
        while (turn.load(std::memory_order_acquire) != 0) sched_yield();
    }
    const double us = std::chrono::duration<double, std::micro>(clock_type::now() - start).count() / static_cast<double>(n);
    other.join();
    return us;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void report(const char* who, const std::vector<figures>& runs) {
    std::vector<double> p50, p99, mean, tput;
    for (const figures& f : runs) {
        p50.push_back(f.p50_us);
        p99.push_back(f.p99_us);
        mean.push_back(f.mean_us);
        tput.push_back(f.jobs_per_s);
    }
    std::printf("  %-7s sequential p50 %7.2f us  p99 %7.2f us  mean %7.2f us   64 in flight %6.3f M jobs/s\n", who,
                median(p50), median(p99), median(mean), median(tput) / 1e6);
}

void bench_placement(const char* name, int worker_cpu, int rounds) {
    pin_to(0);
    std::printf("placement %s: loop on CPU 0, worker on CPU %d\n", name, worker_cpu);
    std::vector<figures> tandem_runs, asio_runs;
    for (int r = 0; r < rounds; ++r) {
        if (g_only != "asio") tandem_runs.push_back(run_tandem(worker_cpu));
#if defined(TANDEM_BENCH_HAVE_ASIO)
        if (g_only != "tandem") asio_runs.push_back(run_asio(worker_cpu));
#endif
    }
    if (!tandem_runs.empty()) report("tandem", tandem_runs);
    if (g_only.empty())
        std::printf("  floor   sched_yield ping-pong between two bare threads: %.2f us per round trip\n",
                    yield_ping_pong_us(worker_cpu, g_sequential));
#if defined(TANDEM_BENCH_HAVE_ASIO)
    if (!asio_runs.empty()) report("asio", asio_runs);
    if (tandem_runs.empty() || asio_runs.empty()) return;
    auto ratio = [](const std::vector<figures>& a, const std::vector<figures>& b, double figures::*field) {
        std::vector<double> x, y;
        for (const figures& f : a) x.push_back(f.*field);
        for (const figures& f : b) y.push_back(f.*field);
        return median(x) / median(y);
    };
    std::printf("  tandem/asio: p50 %.2fx  p99 %.2fx  mean %.2fx  throughput %.2fx\n",
                ratio(tandem_runs, asio_runs, &figures::p50_us), ratio(tandem_runs, asio_runs, &figures::p99_us),
                ratio(tandem_runs, asio_runs, &figures::mean_us), ratio(tandem_runs, asio_runs, &figures::jobs_per_s));
#endif
}

} // namespace

int main(int argc, char** argv) {
    std::string placement = "both";
    int rounds = 5;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--placement") && i + 1 < argc) {
            placement = argv[++i];
        } else if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = std::max(1, std::atoi(argv[++i]));
        } else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
            g_only = argv[++i];
        } else if (!std::strcmp(argv[i], "--quick")) {
            g_sequential = 2'000;
            g_in_flight_jobs = 64'000;
            rounds = 1;
        } else {
            std::fprintf(stderr, "usage: %s [--placement same|cross|both] [--rounds N] [--only tandem|asio] [--quick]\n", argv[0]);
            return 2;
        }
    }
    if (placement == "same" || placement == "both") bench_placement("same core", 0, rounds);
    if (placement == "cross" || placement == "both") bench_placement("cross core", 1, rounds);
    return 0;
}
