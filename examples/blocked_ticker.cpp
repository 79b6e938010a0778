// blocked_ticker — why an event loop stalls, shown without any network.
//
//   build/release/examples/blocked_ticker            (about 1.5 s; Ctrl-C stops early, exit 0)
//   build/release/examples/blocked_ticker --work-ms 500 --phase-ms 800
//
// A heartbeat task wants to tick every 10 ms and records how late each tick is. Four
// phases run one after another on the same single-threaded loop:
//   idle         nothing else runs: ticks are on time (lateness ≈ timer resolution)
//   blocking     a task computes sum(sqrt(i)) in one go, never suspending: the heartbeat
//                cannot run until it is done, so one tick is late by the whole computation.
//                This is the CPU loop inside a Node handler, time.sleep in `async def`.
//   cooperative  the same work in slices, `co_await tandem::yield()` after each ~1 ms slice:
//                the heartbeat slips in between slices and stays within about a slice.
//   offloaded    the same work as one call, `co_await tandem::offload(...)`: it runs on a
//                worker thread and the loop never notices (libuv's pool, worker_threads).
// The loop's blocking watchdog is on: during the blocking phase it prints, while the stall is
// still happening, which task holds the loop. At the end the loop reports what it measured
// about itself (event_loop::stats()).
//
// Reading the table: a stalled heartbeat does not tick late twenty times, it ticks late *once*
// and the ticks due meanwhile never happen ("missed"). Percentiles over the ticks that ran
// therefore hide the stall; "p50 incl. missed" counts each missed tick as late as it was when
// it finally could have run (what wrk2 and HdrHistogram do against coordinated omission).
// The watchdog's "blocked for N ms" is when it *noticed* (its threshold), not the stall's total.
#include <tandem/tandem.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <time.h>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
    std::chrono::milliseconds work{200};  // CPU time of the blocking computation
    std::chrono::milliseconds phase{400}; // length of each phase
};

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const long value = std::strtol(argv[i + 1], nullptr, 10);
        if (std::strcmp(argv[i], "--work-ms") == 0) o.work = std::chrono::milliseconds(value);
        else if (std::strcmp(argv[i], "--phase-ms") == 0) o.phase = std::chrono::milliseconds(value);
        else {
            std::fprintf(stderr, "usage: %s [--work-ms N] [--phase-ms N]\n", argv[0]);
            std::exit(2);
        }
    }
    return o;
}

/// sum of sqrt(i) for i in [from, to): the articles' CPU-bound handler.
double sum_sqrt(long from, long to) {
    double sum = 0;
    for (long i = from; i < to; ++i) sum += std::sqrt(static_cast<double>(i));
    return sum;
}

/// This thread's CPU time: a busy machine stretches wall time, not this.
std::chrono::nanoseconds thread_cpu_time() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

/// How many iterations of sum_sqrt take `budget` of CPU on this machine.
long calibrate(std::chrono::milliseconds budget) {
    long n = 1'000'000;
    for (;;) {
        const auto start = thread_cpu_time();
        volatile double sink = sum_sqrt(0, n);
        (void)sink;
        const auto took = thread_cpu_time() - start;
        if (took > 20ms) return static_cast<long>(static_cast<double>(n) * budget.count() /
                                                  std::chrono::duration<double, std::milli>(took).count());
        n *= 2;
    }
}

struct phase_stats {
    std::string name;
    std::vector<double> lateness_ms;      // ticks that ran
    std::vector<double> with_missed_ms;   // and the ticks a stall swallowed, at their lateness
    long missed = 0;
};

tandem::task<> heartbeat(phase_stats*& current) {
    auto next = clock_type::now() + 10ms;
    for (;;) {
        co_await tandem::sleep_until(next);
        const auto now = clock_type::now();
        if (current) {
            current->lateness_ms.push_back(std::chrono::duration<double, std::milli>(now - next).count());
            // Ticks that fell due during the stall never run: note each with its lateness.
            for (auto due = next; due <= now; due += 10ms) {
                current->with_missed_ms.push_back(std::chrono::duration<double, std::milli>(now - due).count());
                if (due != next) ++current->missed;
            }
        }
        next = std::max(next + 10ms, now); // no catch-up burst after a stall
    }
}

tandem::task<> run_phases(options o, long iterations, std::vector<phase_stats>& results) {
    phase_stats* current = nullptr;
    tandem::task_group group;
    group.spawn(heartbeat(current), "heartbeat");

    results.push_back({"idle", {}, {}, 0});
    current = &results.back();
    co_await tandem::sleep_for(o.phase);

    results.push_back({"blocking", {}, {}, 0});
    current = &results.back();
    auto blocking = [](long n) -> tandem::task<double> { co_return sum_sqrt(0, n); }; // never suspends
    const double r1 = co_await tandem::spawn(blocking(iterations), "blocking-compute");
    co_await tandem::sleep_for(o.phase - o.work);

    results.push_back({"cooperative", {}, {}, 0});
    current = &results.back();
    auto cooperative = [](long n, long slices) -> tandem::task<double> {
        double sum = 0;
        const long step = std::max(1L, n / slices);
        for (long from = 0; from < n; from += step) {
            sum += sum_sqrt(from, std::min(n, from + step));
            co_await tandem::yield(); // let timers and I/O run between slices
        }
        co_return sum;
    };
    const double r2 = co_await tandem::spawn(cooperative(iterations, std::max<long>(1, o.work.count())), "cooperative-compute");
    co_await tandem::sleep_for(o.phase - o.work);

    results.push_back({"offloaded", {}, {}, 0});
    current = &results.back();
    const double r3 = co_await tandem::offload(sum_sqrt, 0L, iterations); // the loop stays free
    co_await tandem::sleep_for(o.phase - o.work);
    current = nullptr;
    group.cancel();
    try {
        co_await group.join();
    } catch (const tandem::cancelled&) {
    }
    if (std::abs(r1 - r2) > 1e-6 * std::abs(r1) || r1 != r3)
        std::fprintf(stderr, "results differ: %f, %f, %f\n", r1, r2, r3);
}

/// Nearest rank: p99 of 100 samples is the 99th smallest; of 21 samples, the largest.
double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())));
    return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

} // namespace

int main(int argc, char** argv) {
    const options o = parse(argc, argv);
    const long iterations = calibrate(o.work); // before the loop runs: calibrating blocks too
    std::vector<phase_stats> results;
    results.reserve(4);
    tandem::event_loop loop;
    // Any single step holding the loop for more than a quarter of the work gets named on stderr.
    const auto threshold = std::max<std::chrono::milliseconds>(20ms, o.work / 4);
    static std::atomic<long long> first_report_ms{-1};
    loop.watch_blocking(threshold, [](const tandem::blocking_report& r) {
        long long none = -1;
        first_report_ms.compare_exchange_strong(none, std::chrono::duration_cast<std::chrono::milliseconds>(r.blocked_for).count());
        std::fprintf(stderr, "%s\n", r.describe().c_str());
    });
    const bool interrupted = loop.run([](options opts, long n, std::vector<phase_stats>& res) -> tandem::task<bool> {
        tandem::signal_set stop({SIGINT, SIGTERM});
        auto which = co_await tandem::when_any(run_phases(opts, n, res), [](tandem::signal_set& s) -> tandem::task<> {
            (void)co_await s.wait();
        }(stop));
        co_return which.index() == 1;
    }(o, iterations, results));

    std::printf("heartbeat every 10 ms; CPU work of %lld ms in the blocking and cooperative phases\n\n",
                static_cast<long long>(o.work.count()));
    std::printf("%-12s %6s %7s %12s %12s %12s %18s\n", "phase", "ticks", "missed", "late p50 ms", "late p99 ms",
                "late max ms", "p50 incl. missed");
    for (const phase_stats& s : results)
        std::printf("%-12s %6zu %7ld %12.2f %12.2f %12.2f %18.2f\n", s.name.c_str(), s.lateness_ms.size(), s.missed,
                    percentile(s.lateness_ms, 0.5), percentile(s.lateness_ms, 0.99), percentile(s.lateness_ms, 1.0),
                    percentile(s.with_missed_ms, 0.5));
    const tandem::loop_stats& stats = loop.stats();
    auto ms = [](std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); };
    std::printf("\nthe loop's own figures (event_loop::stats()): %llu steps, delay p50 %.3f ms, p99 %.2f ms, "
                "max %.1f ms; longest batch (bounds the longest step) %.1f ms; utilization %.0f%%\n",
                static_cast<unsigned long long>(stats.delay.count()), ms(stats.delay.percentile(50)),
                ms(stats.delay.percentile(99)), ms(stats.delay.max()), ms(stats.steps.max()), 100 * stats.utilization());
    for (const phase_stats& s : results)
        if (s.name == "blocking" && !s.lateness_ms.empty()) {
            const double stall = percentile(s.lateness_ms, 1.0);
            std::printf("\nblocking: one tick ran %.0f ms late; the %ld ticks due meanwhile never ran.\n"
                        "  Over the %zu ticks that ran, p50 is %.2f ms and looks healthy (under 100 ticks, p99 is just "
                        "the worst one).\n"
                        "  Counting each missed tick at its lateness, the median tick was %.0f ms late.\n",
                        stall, s.missed, s.lateness_ms.size(), percentile(s.lateness_ms, 0.5),
                        percentile(s.with_missed_ms, 0.5));
            if (first_report_ms >= 0)
                std::printf("  The watchdog said %lld ms (threshold %lld ms): when it noticed, while the step still ran; "
                            "the step held the loop %.0f ms in all.\n",
                            first_report_ms.load(), static_cast<long long>(threshold.count()), stall);
        }
    if (interrupted) std::printf("\ninterrupted\n");
    return 0;
}
