// bench_process_pool — tandem's process_pool against Python's ProcessPoolExecutor and Node's
// worker_threads (bench/peers/process_pool_python.py, process_pool_node.js), printed as the
// same JSON line the peers print:
//   startup_ms        construct a 2-worker pool and get a result from each worker (the first
//                     pool of a process also forks the zygote)
//   seq_p50/p99_us    co_await pool.run(plus_one, x) one after another, 1 worker
//   inflight_jobs_s   20,000 trivial jobs awaited at once, 2 workers
//   map1_items_s      map(plus_one, 20,000 items, chunk 1), 2 workers
//   map1000_items_s   map(plus_one, 2,000,000 items, chunk 1000), 2 workers
//   echo_1mib_ms / echo_64mib_ms   a byte vector argument returned as the result (median)
//
//   build/release/bench/bench_process_pool [--placement os|same|cross] [--spin-us 50]
// `same`: everything on CPU 0. `cross`: this process on CPU 0, the workers on CPU 1.
// `os` (default): the scheduler places everyone on CPUs 0-1.
#include <tandem/tandem.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <tuple>
#include <dirent.h>
#include <sched.h>
#include <string>
#include <unistd.h>
#include <vector>

using clock_type = std::chrono::steady_clock;

namespace {

std::chrono::microseconds g_spin{50}; // --spin-us N: process_pool_options::spin

long plus_one(long x) { return x + 1; }
int worker_pid() {
    ::usleep(10'000); // both workers must answer: neither can take both jobs
    return static_cast<int>(::getpid());
}
std::vector<std::byte> echo(std::vector<std::byte> v) { return v; }

double ms_since(clock_type::time_point t) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

void pin_all_threads(std::initializer_list<int> cpus) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus) CPU_SET(c, &set);
    if (DIR* dir = ::opendir("/proc/self/task")) {
        while (dirent* e = ::readdir(dir))
            if (e->d_name[0] != '.') ::sched_setaffinity(std::atoi(e->d_name), sizeof set, &set);
        ::closedir(dir);
    }
}

/// Creates a pool whose workers live on `worker_cpus` while this process stays on `own_cpus`.
/// (The zygote was forked with the process's first affinity; workers inherit the zygote's,
/// so `cross` re-pins them once they exist.)
std::unique_ptr<tandem::process_pool> make_pool(std::size_t workers, const std::string& placement) {
    auto pool = std::make_unique<tandem::process_pool>(tandem::process_pool_options{.workers = workers, .spin = g_spin});
    pool->wait_ready();
    if (placement == "cross") {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(1, &one);
        for (pid_t pid : pool->worker_pids()) ::sched_setaffinity(pid, sizeof one, &one);
        pin_all_threads({0}); // this process: loop and dispatcher
    }
    return pool;
}

} // namespace

int main(int argc, char** argv) {
    std::string placement = "os";
    for (int i = 1; i + 1 < argc; ++i)
        if (std::strcmp(argv[i], "--placement") == 0) {
            placement = argv[++i];
        } else if (std::strcmp(argv[i], "--spin-us") == 0) {
            g_spin = std::chrono::microseconds(std::atol(argv[++i]));
        }
    if (placement == "same") pin_all_threads({0});
    if (placement == "os") pin_all_threads({0, 1});

    std::printf("{\"runtime\": \"tandem process_pool\", \"placement\": \"%s\"", placement.c_str());
    {
        const auto t = clock_type::now();
        tandem::process_pool pool({.workers = 2}); // forks the zygote, then 2 workers
        auto a = pool.submit(worker_pid);
        auto b = pool.submit(worker_pid);
        const bool distinct = a.get() != b.get();
        std::printf(", \"startup_ms\": %.3f", ms_since(t) - 10.0);
        if (!distinct) std::printf(", \"startup_note\": \"one worker took both jobs\"");
    }
    {
        const auto t = clock_type::now();
        tandem::process_pool pool({.workers = 2}); // the zygote exists: workers only
        pool.wait_ready();
        std::printf(", \"startup_next_pool_ms\": %.3f", ms_since(t));
    }

    tandem::event_loop loop;
    {
        auto pool = make_pool(1, placement);
        loop.run([](tandem::process_pool& p) -> tandem::task<> {
            long x = 0;
            for (int i = 0; i < 2000; ++i) x = co_await p.run(plus_one, x);
            std::vector<double> samples;
            samples.reserve(50'000);
            for (int i = 0; i < 50'000; ++i) {
                const auto t = clock_type::now();
                x = co_await p.run(plus_one, x);
                samples.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t).count());
            }
            std::sort(samples.begin(), samples.end());
            std::printf(", \"seq_p50_us\": %.2f, \"seq_p99_us\": %.2f", samples[samples.size() / 2],
                        samples[samples.size() * 99 / 100]);
        }(*pool));
    }
    {
        auto pool = make_pool(2, placement);
        loop.run([](tandem::process_pool& p) -> tandem::task<> {
            for (int i = 0; i < 1000; ++i) (void)co_await p.run(plus_one, i);
            const int n = 20'000;
            auto t = clock_type::now();
            std::vector<tandem::task<long>> jobs;
            jobs.reserve(n);
            for (int i = 0; i < n; ++i) jobs.push_back(p.run(plus_one, long{i}));
            (void)co_await tandem::when_all(std::move(jobs));
            std::printf(", \"inflight_jobs_s\": %.0f", n / (ms_since(t) / 1000));

            std::vector<long> items(20'000);
            for (std::size_t i = 0; i < items.size(); ++i) items[i] = static_cast<long>(i);
            t = clock_type::now();
            auto r = co_await p.map(plus_one, items, 1);
            std::printf(", \"map1_items_s\": %.0f", items.size() / (ms_since(t) / 1000));
            items.resize(2'000'000);
            for (std::size_t i = 0; i < items.size(); ++i) items[i] = static_cast<long>(i);
            t = clock_type::now();
            r = co_await p.map(plus_one, items, 1000);
            std::printf(", \"map1000_items_s\": %.0f", items.size() / (ms_since(t) / 1000));
            if (r.back() != 2'000'000) std::printf(", \"error\": \"map\"");

            for (auto [size, reps, key] : {std::tuple{std::size_t{1} << 20, 51, "echo_1mib_ms"},
                                           std::tuple{std::size_t{64} << 20, 7, "echo_64mib_ms"}}) {
                const std::vector<std::byte> payload(size, std::byte{7});
                std::vector<double> times;
                for (int i = 0; i < reps; ++i) {
                    t = clock_type::now();
                    const std::vector<std::byte> back = co_await p.run(echo, payload);
                    times.push_back(ms_since(t));
                    if (back.size() != size) std::printf(", \"error\": \"echo\"");
                }
                std::sort(times.begin(), times.end());
                std::printf(", \"%s\": %.3f", key, times[times.size() / 2]);
            }
        }(*pool));
    }
    std::printf("}\n");
    return 0;
}
