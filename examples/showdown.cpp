// showdown — every runtime model under the same load, side by side, in about a minute.
//
//   build/demo/examples/showdown                 (≈ 50 s on 2 cores with the Node and Python peers)
//   build/demo/examples/showdown --quick         (≈ 13 s)
//   build/demo/examples/showdown --models blocked,threads --seconds 8 --out /tmp/sd
//
// Each model is a real HTTP server in its own process on an ephemeral port: this binary
// started again with --serve MODEL for tandem's models, examples/peers/*.js and *.py for
// Node's and Python's. The cluster row is tandem::cluster::run: a primary that forks one worker
// process per available CPU, each running the blocked loop's inline handler on one shared
// port. Every server gets the same load from tandem's own HTTP client:
//
//   CPU scenario  /compute runs a job calibrated to WORK ms of *thread CPU time* (not wall
//                 time: a busy machine stretches wall time, not CPU time), offered at a fixed
//                 rate through a few connections, while a probe sends /ping every 10 ms on a
//                 fixed schedule. Each ping's latency counts from the moment it was *scheduled*,
//                 not sent, so a stalled server cannot hide its stall by holding the probe back
//                 (the coordinated-omission mistake; wrk2 and HdrHistogram measure this way).
//   I/O scenario  many connections on /slow (a 200 ms non-blocking wait), then the same
//                 endpoint written with a blocking sleep (/bad).
//
// It prints a table and writes showdown.html (charts, table, what each row means),
// showdown.json (every figure) and showdown-ping.svg into --out (default: .).
//
// Children are stopped however this program ends: normally, on Ctrl-C or SIGTERM, on a crash
// (fatal-signal handler), and even on SIGKILL (each child asks the kernel for PR_SET_PDEATHSIG;
// a cluster's workers share their primary's process group and die with it too).
#include "example_server.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

#ifndef SHOWDOWN_PEERS_DIR
#define SHOWDOWN_PEERS_DIR "examples/peers"
#endif

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

// ---- the CPU job ---------------------------------------------------------------------------

/// Iterations of example::sum_sqrt that take `budget` of this thread's CPU time. Measured on
/// CPU time, a neighbour that steals the core makes the measurement slower, not wrong.
long calibrate(std::chrono::milliseconds budget) {
    long n = 250'000;
    for (;;) {
        const auto start = example::thread_cpu_time();
        volatile double sink = example::sum_sqrt(n);
        (void)sink;
        const auto took = example::thread_cpu_time() - start;
        if (took >= 20ms || n > (1L << 40))
            return std::max(1L, static_cast<long>(static_cast<double>(n) * std::chrono::duration<double>(budget).count() /
                                                  std::chrono::duration<double>(took).count()));
        n *= 2;
    }
}

tandem::http::client_options client_timeout(std::chrono::milliseconds t) {
    tandem::http::client_options o;
    o.timeout = t;
    return o;
}

/// example::sum_sqrt over [from, to): the cooperative model's slice. A plain function, so it
/// compiles like the whole job does (a loop inside a coroutine body can be slower unoptimized).
double sum_sqrt_range(long from, long to) {
    double sum = 0;
    for (long i = from; i < to; ++i) sum += std::sqrt(static_cast<double>(i));
    return sum;
}

double ms_of(clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// ---- --serve MODEL: the tandem servers -----------------------------------------------------

/// A step that holds the loop for half the job is a stall worth naming: tied to the job's CPU
/// time, the watchdog speaks on any machine (a fixed 100 ms stays silent on a fast one). The
/// first three reports go to stderr (the server's log); `reports` counts them all.
void watch_for_stalls(tandem::event_loop& loop, std::chrono::milliseconds work, std::atomic<long>& reports) {
    loop.watch_blocking(std::max<std::chrono::milliseconds>(work / 2, 1ms), [&reports](const tandem::blocking_report& r) {
        if (reports.fetch_add(1) < 3) std::fprintf(stderr, "%s\n", r.describe().c_str());
    });
}

/// /stats's answer, the figures cpu_scenario reads back.
tandem::http::response stats_json(std::chrono::nanoseconds delay_p99, std::chrono::nanoseconds longest_step,
                                  long watchdog_reports, double utilization) {
    auto ms = [](std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); };
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "{\"loop_delay_p99_ms\": %.3f, \"longest_step_ms\": %.3f, \"watchdog_reports\": %ld, "
                  "\"utilization\": %.3f}",
                  ms(delay_p99), ms(longest_step), watchdog_reports, utilization);
    return tandem::http::response::json(buf);
}

/// The endpoints every tandem model shares: /, /ping, /slow and /bad (the I/O scenario's).
tandem::http::router common_routes() {
    tandem::http::router routes;
    example::add_common_routes(routes);
    routes.get("/bad", [](tandem::http::request&) -> tandem::task<tandem::http::response> {
        std::this_thread::sleep_for(200ms); // time.sleep in `async def`: holds the loop
        co_return tandem::http::response::text("bad");
    });
    return routes;
}

tandem::http::response answer(double r) { return tandem::http::response::json(example::result_json(r)); }

/// /compute inline in the handler: nothing else runs on this loop meanwhile (blocked, cluster).
/// `jobs`, when given, counts them (it must outlive the routes).
void inline_compute(tandem::http::router& routes, long n, unsigned long* jobs = nullptr) {
    routes.get("/compute", [n, jobs](tandem::http::request&) -> tandem::task<tandem::http::response> {
        if (jobs) ++*jobs;
        co_return answer(example::sum_sqrt(n));
    });
}

// ---- --serve cluster: the blocked loop's handler, once per CPU ---------------------------

/// What the cluster's workers share for /stats and /reset-stats, mapped before the fork: a
/// request lands on one worker, yet the figures are the whole cluster's. Lock-free atomics
/// are address-free, so they work across processes in a MAP_SHARED mapping.
struct cluster_figures {
    static constexpr std::size_t slots = 64; // cluster::options::max_workers
    struct slot {
        std::atomic<bool> used{false};
        std::atomic<std::int64_t> delay_p99_ns{0}, longest_step_ns{0}, busy_ns{0}, idle_ns{0};
    };
    std::atomic<std::uint64_t> reset_epoch{0}; // /reset-stats: every worker resets its loop's figures
    std::atomic<long> watchdog_reports{0};
    slot workers[slots];
};
static_assert(std::atomic<std::int64_t>::is_always_lock_free && std::atomic<long>::is_always_lock_free);

/// A worker copies its loop's figures into its slot: every 20 ms, and when asked for /stats.
/// Resetting happens here too, when another worker has answered /reset-stats.
void publish(cluster_figures& shared, std::size_t index, std::uint64_t& epoch_seen) {
    tandem::event_loop& loop = tandem::this_loop();
    if (const std::uint64_t epoch = shared.reset_epoch.load(); epoch != epoch_seen) {
        loop.reset_stats();
        epoch_seen = epoch;
    }
    const tandem::loop_stats& s = loop.stats();
    cluster_figures::slot& me = shared.workers[index % cluster_figures::slots];
    me.delay_p99_ns = s.delay.percentile(99).count();
    me.longest_step_ns = s.steps.max().count();
    me.busy_ns = s.busy.count();
    me.idle_ns = s.idle.count();
    me.used = true;
}

tandem::task<> keep_publishing(cluster_figures& shared, std::size_t index, std::uint64_t& epoch_seen) {
    for (;;) {
        publish(shared, index, epoch_seen);
        co_await tandem::sleep_for(20ms);
    }
}

/// Every worker runs what the blocked loop runs, on its own loop, all on one shared port
/// (tandem::cluster's default balance: one accept queue). The loop figures in /stats are the
/// worst worker's (delay p99, longest step), the watchdog reports every worker's.
int serve_cluster(long n, std::chrono::milliseconds work, unsigned long port) {
    void* mem = ::mmap(nullptr, sizeof(cluster_figures), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        std::perror("showdown: mmap");
        return 1;
    }
    cluster_figures* shared = new (mem) cluster_figures();
    tandem::cluster::options opts;
    opts.listen = {tandem::address("127.0.0.1", static_cast<std::uint16_t>(port))};
    opts.workers = 0; // one per available CPU (affinity mask and cgroup quota)
    // The cluster's own stall watchdog (replace a worker blocked for stall_timeout) is off:
    // blocking is what this row demonstrates, and the showdown's watchdog counts it instead.
    opts.stall_timeout = 0ms;
    opts.drain_timeout = 2000ms;
    opts.on_ready = [](std::span<const tandem::address> bound) {
        std::printf("listening on http://127.0.0.1:%u\n", static_cast<unsigned>(bound.front().port()));
        std::fflush(stdout);
    };
    return tandem::cluster::run(opts, [shared, n, work](tandem::cluster::worker& w) -> tandem::task<> {
        tandem::event_loop& loop = tandem::this_loop();
        watch_for_stalls(loop, work, shared->watchdog_reports);
        std::uint64_t epoch_seen = shared->reset_epoch.load();
        const std::size_t index = w.index();
        tandem::http::router routes = common_routes();
        unsigned long jobs = 0; // how evenly the shared port spread the work, in the log
        inline_compute(routes, n, &jobs);
        routes.get("/reset-stats", [shared, index, &epoch_seen](tandem::http::request&) -> tandem::task<tandem::http::response> {
            shared->watchdog_reports = 0;
            shared->reset_epoch.fetch_add(1);
            publish(*shared, index, epoch_seen); // this worker at once, the others within 20 ms
            co_return tandem::http::response::text("ok");
        });
        routes.get("/stats", [shared, index, &epoch_seen](tandem::http::request&) -> tandem::task<tandem::http::response> {
            publish(*shared, index, epoch_seen);
            std::int64_t delay = 0, longest = 0, busy = 0, idle = 0;
            for (const cluster_figures::slot& s : shared->workers) {
                if (!s.used) continue;
                delay = std::max<std::int64_t>(delay, s.delay_p99_ns);
                longest = std::max<std::int64_t>(longest, s.longest_step_ns);
                busy += s.busy_ns;
                idle += s.idle_ns;
            }
            co_return stats_json(std::chrono::nanoseconds(delay), std::chrono::nanoseconds(longest),
                                 shared->watchdog_reports.load(),
                                 busy + idle > 0 ? static_cast<double>(busy) / static_cast<double>(busy + idle) : 0.0);
        });
        routes.get("/metrics", tandem::http::metrics_handler());
        tandem::http::server server(std::move(routes));
        w.count_requests([&server] { return server.requests_served(); });
        std::stop_callback on_stop(w.stop_token(), [&server] { server.shutdown(); });
        auto publishing = tandem::spawn(keep_publishing(*shared, index, epoch_seen), "publish figures");
        co_await server.serve(w.listener());
        std::fprintf(stderr, "showdown: cluster worker %zu (pid %d) served %llu requests, %lu of them /compute\n", index,
                     static_cast<int>(w.pid()), static_cast<unsigned long long>(server.requests_served()), jobs);
        publishing.cancel();
        try {
            co_await publishing;
        } catch (const tandem::cancelled&) {
        }
    });
}

// ---- --serve MODEL: the tandem servers -----------------------------------------------------

/// The same /compute in each model: how the job meets the loop is the only difference.
int serve(const std::string& model, long n, std::chrono::milliseconds work, unsigned long port) {
    // The cluster forks its workers before any thread exists; so does the process pool its zygote.
    if (model == "cluster") return serve_cluster(n, work, port);
    std::unique_ptr<tandem::process_pool> procs;
    if (model == "processes") procs = std::make_unique<tandem::process_pool>(tandem::process_pool_options{});
    std::unique_ptr<tandem::thread_pool> threads;
    if (model == "threads") threads = std::make_unique<tandem::thread_pool>(tandem::thread_pool_options{});

    tandem::event_loop loop;
    static std::atomic<long> watchdog_reports{0};
    watch_for_stalls(loop, work, watchdog_reports);

    tandem::http::router routes = common_routes();
    if (model == "blocked") {
        inline_compute(routes, n);
    } else if (model == "cooperative") {
        const long slices = std::max<long>(1, work.count()); // ~1 ms of CPU per slice
        routes.get("/compute", [n, slices](tandem::http::request&) -> tandem::task<tandem::http::response> {
            const long step = std::max(1L, n / slices);
            double sum = 0;
            for (long from = 0; from < n; from += step) {
                sum += sum_sqrt_range(from, std::min(n, from + step));
                co_await tandem::yield(); // timers and I/O run between slices
            }
            co_return answer(sum);
        });
    } else if (model == "threads") {
        routes.get("/compute", [n, &threads](tandem::http::request&) -> tandem::task<tandem::http::response> {
            co_return answer(co_await threads->run(example::sum_sqrt, n));
        });
    } else if (model == "processes") {
        routes.get("/compute", [n, &procs](tandem::http::request&) -> tandem::task<tandem::http::response> {
            co_return answer(co_await procs->run(example::sum_sqrt, n));
        });
    } else if (model != "io") {
        std::fprintf(stderr, "showdown: unknown model '%s' for --serve\n", model.c_str());
        return 2;
    }
    routes.get("/reset-stats", [&loop](tandem::http::request&) -> tandem::task<tandem::http::response> {
        loop.reset_stats();
        watchdog_reports = 0;
        co_return tandem::http::response::text("ok");
    });
    routes.get("/stats", [&loop](tandem::http::request&) -> tandem::task<tandem::http::response> {
        const tandem::loop_stats& s = loop.stats();
        co_return stats_json(s.delay.percentile(99), s.steps.max(), watchdog_reports.load(), s.utilization());
    });
    return example::serve(loop, port, std::move(routes));
}

// ---- child processes -----------------------------------------------------------------------

/// Process groups of the servers now running, read by the signal handlers (async-signal-safe:
/// only kill, waitpid, nanosleep, write and _exit there).
constexpr int max_children = 8;
volatile sig_atomic_t g_children[max_children] = {};

void remember_child(pid_t pid) {
    for (auto& slot : g_children)
        if (slot == 0) {
            slot = pid;
            return;
        }
}
void forget_child(pid_t pid) {
    for (auto& slot : g_children)
        if (slot == pid) slot = 0;
}

/// Ctrl-C / SIGTERM / SIGHUP: ask every server to stop, give them a second, then kill what is
/// left of their groups.
extern "C" void on_interrupt(int sig) {
    bool exited[max_children] = {};
    for (auto& slot : g_children)
        if (slot > 0) ::kill(-static_cast<pid_t>(slot), SIGTERM);
    for (int round = 0; round < 100; ++round) {
        bool waiting = false;
        for (int i = 0; i < max_children; ++i)
            if (g_children[i] > 0 && !exited[i]) {
                if (::waitpid(static_cast<pid_t>(g_children[i]), nullptr, WNOHANG) == 0) waiting = true;
                else exited[i] = true;
            }
        if (!waiting) break;
        const timespec ten_ms{0, 10'000'000};
        ::nanosleep(&ten_ms, nullptr);
    }
    for (auto& slot : g_children)
        if (slot > 0) ::kill(-static_cast<pid_t>(slot), SIGKILL);
    static const char msg[] = "\nshowdown: interrupted; every server it started has been stopped\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(128 + sig); // 130 for Ctrl-C, 143 for SIGTERM: what a shell reports for each
}

/// A crash of the showdown itself: kill the servers, then die of the same signal.
extern "C" void on_crash(int sig) {
    for (auto& slot : g_children)
        if (slot > 0) ::kill(-static_cast<pid_t>(slot), SIGKILL);
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

void install_handlers() {
    struct sigaction sa{};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);
    sa.sa_handler = on_crash;
    sa.sa_flags = SA_RESETHAND;
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::sigaction(s, &sa, nullptr);
}

struct child {
    pid_t pid = -1;
    unsigned port = 0;
    int out = -1; // its stdout, kept open so late prints never meet EPIPE
    std::string error;
    bool reaped = false; // it died on its own and waitpid already collected it
};

/// Starts argv[0] (a path) in its own process group, stderr to `log`, and waits for the
/// contract's "listening on http://127.0.0.1:PORT" line, calling `waiting` every 200 ms meanwhile.
child start_child(const std::vector<std::string>& args, const std::string& log, const std::function<void()>& waiting) {
    child c;
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) {
        c.error = std::string("pipe: ") + std::strerror(errno);
        return c;
    }
    const int logfd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::setpgid(0, 0); // our Ctrl-C is ours to forward; the group takes helpers along
        ::prctl(PR_SET_PDEATHSIG, SIGKILL); // dies with the showdown, even after SIGKILL
        if (::getppid() != parent) ::_exit(1);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(s, SIG_DFL);
        ::dup2(pipefd[1], STDOUT_FILENO);
        if (logfd >= 0) ::dup2(logfd, STDERR_FILENO);
        ::execv(argv[0], argv.data());
        static const char msg[] = "showdown: exec failed\n";
        (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
        ::_exit(127);
    }
    ::close(pipefd[1]);
    if (logfd >= 0) ::close(logfd);
    if (pid < 0) {
        ::close(pipefd[0]);
        c.error = std::string("fork: ") + std::strerror(errno);
        return c;
    }
    c.pid = pid;
    c.out = pipefd[0];
    remember_child(pid);
    std::string text;
    const auto deadline = clock_type::now() + 15s;
    for (;;) {
        const std::size_t at = text.find("listening on http://127.0.0.1:");
        if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
            const unsigned long port = std::strtoul(text.c_str() + at + 30, nullptr, 10);
            if (port == 0 || port > 65535) // never truncate it into somebody else's port
                c.error = "printed a listening line without a valid port (see " + log + ")";
            else
                c.port = static_cast<unsigned>(port);
            break;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
        pollfd p{c.out, POLLIN, 0};
        const int ready = left.count() <= 0 ? 0 : ::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 200)));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0 && clock_type::now() >= deadline) {
            c.error = "did not print its listening line within 15 s (see " + log + ")";
            break;
        }
        waiting(); // a slow start (a busy machine, an interpreter loading) is still visibly alive
        if (ready <= 0) continue;
        char buf[512];
        const ssize_t got = ::read(c.out, buf, sizeof buf);
        if (got <= 0) {
            c.error = "exited before listening (see " + log + ")";
            break;
        }
        text.append(buf, static_cast<std::size_t>(got));
    }
    return c;
}

/// SIGTERM to the group, up to `grace` for a graceful exit, then SIGKILL; returns the exit
/// status. A zero grace kills at once: a server wedged on purpose would drain for seconds.
int stop_child(child& c, std::chrono::milliseconds grace = 1000ms) {
    if (c.pid <= 0) return -1;
    if (c.reaped) grace = 0ms; // only what is left of its group
    ::kill(-c.pid, grace.count() > 0 ? SIGTERM : SIGKILL);
    int status = -1;
    const auto deadline = clock_type::now() + grace;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, c.pid, 0));
    while (!c.reaped) {
        const pid_t r = ::waitpid(c.pid, &status, WNOHANG);
        if (r == c.pid || (r < 0 && errno != EINTR)) break;
        if (clock_type::now() >= deadline) {
            ::kill(-c.pid, SIGKILL);
            ::waitpid(c.pid, &status, 0);
            break;
        }
        if (pidfd >= 0) {
            pollfd p{pidfd, POLLIN, 0};
            ::poll(&p, 1, 100); // readable when the process exits
        } else {
            const timespec five_ms{0, 5'000'000};
            ::nanosleep(&five_ms, nullptr);
        }
    }
    if (pidfd >= 0) ::close(pidfd);
    ::kill(-c.pid, SIGKILL); // anything of its group that outlived it (a pool worker)
    forget_child(c.pid);
    if (c.out >= 0) ::close(c.out);
    c.pid = -1;
    c.out = -1;
    return status;
}

/// Non-empty when the server died by itself while it was being measured: its figures stop
/// where it died, so the row is a failure that says how, not a table of what came before.
std::string died_during_run(child& c, const std::string& log) {
    int status = 0;
    if (c.pid <= 0 || c.reaped || ::waitpid(c.pid, &status, WNOHANG) != c.pid) return {};
    c.reaped = true;
    const std::string how = WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
                                                      strsignal(WTERMSIG(status)) + ")"
                                                : "exited with status " + std::to_string(WEXITSTATUS(status));
    return "the server " + how + " during the run (see " + log + ")";
}

// ---- the models ----------------------------------------------------------------------------

/// One row of the showdown. To add a model, add an entry to model_table(): how to start its
/// server (argv, with {port} {work_ms} {work_n} filled in) and what the reader is looking at.
struct model {
    std::string key;      // for --models
    std::string name;     // the row's name, also in showdown.json
    std::string family;   // "tandem", "node", "python"
    std::vector<std::string> argv;
    std::string story;    // two or three sentences for showdown.html
    std::string missing;  // non-empty: the row cannot run here, and why
};

struct settings {
    std::chrono::milliseconds cpu_time{4000}; // per model
    std::chrono::milliseconds io_time{2500};
    std::chrono::milliseconds work{50};
    double compute_rate = 0; // /compute per second offered (0: from the core count)
    std::size_t compute_connections = 0;
    std::size_t io_connections = 1000;
    bool peers = true;
    std::string only; // --models
    std::string out = ".";
    std::string peers_dir = SHOWDOWN_PEERS_DIR;
    long work_n = 0;
};

std::string find_on_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::stringstream ss(path ? path : "");
    std::string dir;
    while (std::getline(ss, dir, ':')) {
        const std::string p = (dir.empty() ? "." : dir) + "/" + name;
        if (::access(p.c_str(), X_OK) == 0) return p;
    }
    return {};
}

/// The interpreter itself, not a version manager's shim (pyenv's costs 130 ms per start).
std::string real_python() {
    const std::string shim = find_on_path("python3");
    if (shim.empty()) return {};
    if (shim.find("/shims/") == std::string::npos) return shim;
    FILE* p = ::popen("python3 -c 'import sys; print(sys.executable)' 2>/dev/null", "r");
    if (!p) return shim;
    char buf[4096] = {};
    const bool got = std::fgets(buf, sizeof buf, p) != nullptr;
    ::pclose(p);
    std::string exe = got ? std::string(buf) : std::string();
    while (!exe.empty() && (exe.back() == '\n' || exe.back() == '\r')) exe.pop_back();
    return exe.empty() ? shim : exe;
}

std::vector<model> model_table(const settings& s, const std::string& self) {
    std::vector<model> t;
    auto tandem_model = [&](std::string key, std::string name, std::string story) {
        t.push_back({key, std::move(name), "tandem",
                     {self, "--serve", key, "--port", "0", "--work-n", "{work_n}", "--work-ms", "{work_ms}"},
                     std::move(story), {}});
    };
    tandem_model("blocked", "blocked loop",
                 "tandem, /compute runs inline in the handler: while a job computes, the one loop thread "
                 "answers nothing else, so every ping queued behind it waits the whole job (or several). "
                 "This is the Node pitfall (a CPU loop in a handler) and time.sleep in async def; the "
                 "watchdog names the stalling task on stderr. Throughput tops out at one core.");
    tandem_model("cooperative", "cooperative",
                 "tandem, the same job cut into ~1 ms slices with co_await tandem::yield() between them: "
                 "pings slip in between slices, so latency stays near a slice. Still one thread, so "
                 "/compute throughput stays at one core, and every slice boundary is code you must write.");
    tandem_model("threads", "worker threads",
                 "tandem, co_await pool.run(job) on a tandem::thread_pool: the loop only waits, the "
                 "job runs on another core. Pings answer in well under a millisecond unless the cores "
                 "are all busy; throughput grows with cores. Node's worker_threads, libuv's pool.");
    tandem_model("processes", "process pool",
                 "tandem, co_await procs.run(job) on a tandem::process_pool: each job runs in a worker "
                 "process forked from a clean zygote; a crash costs one job, not the pool. Python's "
                 "run_in_executor(ProcessPoolExecutor), minus the pickling and the broken pool.");
    tandem_model("cluster", "cluster",
                 "tandem::cluster::run: the blocked loop's server, inline /compute and all, forked once per "
                 "available CPU, every worker accepting on one shared port (Node's cluster module, gunicorn). "
                 "Jobs run on every core at once, yet a ping still waits whenever it reaches a worker in the "
                 "middle of a job (its keep-alive connection belongs to that worker), and while every worker "
                 "computes nobody is free to answer. It beats a thread pool when requests share nothing and the "
                 "handlers stay as written: no hand-off to rewrite, and a crash costs one worker, not the server.");

    const std::string node = s.peers ? find_on_path("node") : std::string();
    const std::string python = s.peers ? real_python() : std::string();
    const std::string node_script = s.peers_dir + "/node_server.js";
    const std::string py_script = s.peers_dir + "/python_server.py";
    auto peer = [&](std::string key, std::string name, std::string family, const std::string& exe,
                    const std::string& script, std::string mode, std::string story) {
        model m{std::move(key), std::move(name), std::move(family),
                {exe, script, "--mode", std::move(mode), "--port", "0", "--work-ms", "{work_ms}"}, std::move(story), {}};
        if (!s.peers) m.missing = "skipped (--no-peers)";
        else if (exe.empty()) m.missing = "not run: " + (m.family == "python" ? std::string("python3") : m.family) + " is not on PATH";
        else if (::access(script.c_str(), R_OK) != 0) m.missing = "not run: " + script + " not found (--peers-dir)";
        t.push_back(std::move(m));
    };
    peer("node-inline", "Node inline", "node", node, node_script, "inline",
         "Node's http module with the job inline in the handler: the same single-threaded stall as "
         "tandem's blocked loop, measured on Node's own loop (monitorEventLoopDelay).");
    peer("node-workers", "Node worker_threads", "node", node, node_script, "workers",
         "Node's http module handing each job to a small pool of worker_threads (one per core), "
         "as the Node articles recommend: the loop stays free.");
    peer("python-inline", "Python asyncio inline", "python", python, py_script, "inline",
         "Python asyncio (streams) with the job inline in the coroutine: it never awaits, so the "
         "loop stalls exactly like the blocked loop.");
    peer("python-processes", "Python ProcessPoolExecutor", "python", python, py_script, "processes",
         "Python asyncio awaiting loop.run_in_executor(ProcessPoolExecutor): the job runs in another "
         "process, arguments and result pickled across, and the loop stays free.");
    return t;
}

bool selected(const settings& s, const std::string& key) {
    if (s.only.empty()) return true;
    std::stringstream ss(s.only);
    std::string k;
    while (std::getline(ss, k, ','))
        if (k == key) return true;
    return false;
}

std::vector<std::string> fill(std::vector<std::string> argv, const settings& s) {
    for (std::string& a : argv) {
        if (a == "{work_ms}") a = std::to_string(s.work.count());
        else if (a == "{work_n}") a = std::to_string(s.work_n);
    }
    return argv;
}

// ---- progress ------------------------------------------------------------------------------

/// One line on stderr, rewritten in place on a terminal, so nobody stares at a silent screen.
struct progress {
    bool tty = ::isatty(STDERR_FILENO) != 0;
    int step = 0, steps = 0;
    std::string what;
    std::chrono::milliseconds length{};
    clock_type::time_point since, end;
    bool measuring = false; // false while the server starts and warms up: that time is not counted down
    bool drawn = false;

    void begin(std::string w, std::chrono::milliseconds len) {
        ++step;
        what = std::move(w);
        length = len;
        since = clock_type::now();
        measuring = false;
        if (!tty) std::fprintf(stderr, "showdown [%d/%d] %s (%.1f s)\n", step, steps, what.c_str(), length.count() / 1e3);
        draw();
    }
    /// The measured window opens now: from here the line counts its seconds down.
    void measure() {
        measuring = true;
        end = clock_type::now() + length;
        draw();
    }
    void draw() {
        if (!tty) return;
        char buf[512];
        if (measuring) {
            const double left = std::max(0.0, std::chrono::duration<double>(end - clock_type::now()).count());
            std::snprintf(buf, sizeof buf, "  showdown [%d/%d] %.1f s left · %s", step, steps, left, what.c_str());
        } else {
            const double waited = std::chrono::duration<double>(clock_type::now() - since).count();
            std::snprintf(buf, sizeof buf, "  showdown [%d/%d] starting (%.0f s) · %s", step, steps, waited, what.c_str());
        }
        // \r\033[K clears one screen line: a line the terminal wrapped would leave its first half
        // behind at every redraw, so the line is cut to the width (counting UTF-8 characters).
        winsize ws{};
        const std::size_t width = ::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 ? ws.ws_col - 1u : 79u;
        std::size_t columns = 0, cut = 0;
        for (; buf[cut] != '\0'; ++cut)
            if ((static_cast<unsigned char>(buf[cut]) & 0xC0) != 0x80 && ++columns > width) break;
        buf[cut] = '\0';
        std::fprintf(stderr, "\r\033[K%s", buf);
        std::fflush(stderr);
        drawn = true;
    }
    void clear() {
        if (tty && drawn) std::fprintf(stderr, "\r\033[K");
        drawn = false;
    }
};

tandem::task<> keep_drawing(progress& p) {
    for (;;) {
        p.draw();
        co_await tandem::sleep_for(200ms);
    }
}

// ---- the load --------------------------------------------------------------------------------

/// Idle keep-alive connections to one server, opened on demand up to a cap.
class connections {
public:
    connections(tandem::address to, std::size_t cap, std::chrono::milliseconds timeout)
        : m_to(std::move(to)), m_cap(cap), m_timeout(timeout) {}
    std::unique_ptr<tandem::http::client> take() {
        if (!m_idle.empty()) {
            auto c = std::move(m_idle.back());
            m_idle.pop_back();
            return c;
        }
        if (m_open >= m_cap) return nullptr;
        ++m_open;
        return std::make_unique<tandem::http::client>(m_to, client_timeout(m_timeout));
    }
    void give_back(std::unique_ptr<tandem::http::client> c) { m_idle.push_back(std::move(c)); }
    void lost() { --m_open; } // a connection that failed is not reused
    std::size_t open() const { return m_open; }

private:
    tandem::address m_to;
    std::size_t m_cap;
    std::chrono::milliseconds m_timeout;
    std::size_t m_open = 0;
    std::vector<std::unique_ptr<tandem::http::client>> m_idle;
};

/// One request on a pooled connection; true when it came back 200.
tandem::task<bool> exchange(connections& pool, std::unique_ptr<tandem::http::client> c, std::string target) {
    bool ok = false;
    try {
        const tandem::http::client_response r = co_await c->get(target);
        ok = r.status == 200;
    } catch (const tandem::cancelled&) {
        pool.lost();
        throw;
    } catch (const std::exception&) {
        pool.lost();
        co_return false;
    }
    pool.give_back(std::move(c));
    co_return ok;
}

struct ping_sample {
    double at_s;       // scheduled time, from the start of the run
    double latency_ms; // answer time minus *scheduled* time
};

struct cpu_result {
    std::vector<ping_sample> pings;
    long ping_errors = 0;
    long compute_ok = 0, compute_errors = 0, compute_shed = 0;
    double seconds = 0;
    double loop_delay_p99_ms = -1, longest_step_ms = -1;
    long watchdog_reports = -1;
    std::string failure; // the server could not be measured
};

tandem::task<std::string> get_text(tandem::address to, std::string target,
                                   std::chrono::milliseconds timeout = 3000ms) {
    tandem::http::client c(std::move(to), client_timeout(timeout));
    const tandem::http::client_response r = co_await c.get(target);
    if (r.status != 200) throw std::runtime_error(target + " answered " + std::to_string(r.status));
    co_return r.body;
}

double json_number(const std::string& text, const std::string& key, double otherwise) {
    const std::size_t at = text.find("\"" + key + "\"");
    if (at == std::string::npos) return otherwise;
    const std::size_t colon = text.find(':', at);
    if (colon == std::string::npos) return otherwise;
    char* end = nullptr;
    const double v = std::strtod(text.c_str() + colon + 1, &end);
    return end == text.c_str() + colon + 1 ? otherwise : v;
}

tandem::task<> cpu_scenario(tandem::address to, const settings& s, cpu_result& out, progress& prog) {
    // Warm-up outside the measured window: one job (starts pools, fills caches) and a ping.
    try {
        (void)co_await get_text(to, "/compute", 15'000ms); // a pool may still be starting
        (void)co_await get_text(to, "/ping");
        (void)co_await get_text(to, "/reset-stats");
    } catch (const tandem::cancelled&) {
        throw;
    } catch (const std::exception& e) { // "operation timed out" alone would not say which server or step
        throw std::runtime_error(std::string("listening, but its warm-up (one /compute within 15 s, /ping, /reset-stats) "
                                             "failed: ") + e.what());
    }
    prog.measure();

    connections ping_conns(to, 512, 10'000ms);
    connections compute_conns(to, s.compute_connections, 30'000ms);
    tandem::task_group flying;
    const auto start = clock_type::now();
    const auto end = start + s.cpu_time;
    const auto ping_every = 10ms;
    const auto compute_every = std::max<clock_type::duration>(
        1us, std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(1.0 / s.compute_rate)));
    auto next_ping = start, next_compute = start;

    auto ping = [](connections& pool, std::unique_ptr<tandem::http::client> c, clock_type::time_point scheduled,
                   clock_type::time_point t0, cpu_result& r) -> tandem::task<> {
        const bool ok = co_await exchange(pool, std::move(c), "/ping");
        if (ok) r.pings.push_back({std::chrono::duration<double>(scheduled - t0).count(), ms_of(clock_type::now() - scheduled)});
        else ++r.ping_errors;
    };
    auto compute = [](connections& pool, std::unique_ptr<tandem::http::client> c, clock_type::time_point deadline,
                      cpu_result& r) -> tandem::task<> {
        const bool ok = co_await exchange(pool, std::move(c), "/compute");
        if (!ok) ++r.compute_errors;
        else if (clock_type::now() <= deadline) ++r.compute_ok; // completions inside the window only
    };

    for (;;) {
        const auto next = std::min(next_ping, next_compute);
        if (next >= end) break;
        co_await tandem::sleep_until(next);
        if (next_ping <= next) {
            // Open loop: every ping goes out at its time on a free connection (a new one when
            // all are waiting), and its clock started at the scheduled time.
            if (auto c = ping_conns.take()) flying.spawn(ping(ping_conns, std::move(c), next_ping, start, out));
            else ++out.ping_errors;
            next_ping += ping_every;
        }
        if (next_compute <= next) {
            if (auto c = compute_conns.take()) flying.spawn(compute(compute_conns, std::move(c), end, out));
            else ++out.compute_shed; // all of its connections still wait for the server
            next_compute += compute_every;
        }
    }
    out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    prog.what += " (draining)";
    // Answers still owed get a little time; a ping never answered is an error, not a sample.
    try {
        co_await tandem::with_timeout(3s, [](tandem::task_group& g) -> tandem::task<> { co_await g.join(); }(flying));
    } catch (const tandem::timed_out&) {
    }
    const long expected = static_cast<long>(std::ceil(std::chrono::duration<double>(s.cpu_time) / std::chrono::duration<double>(ping_every)));
    out.ping_errors = std::max(out.ping_errors, expected - static_cast<long>(out.pings.size()));
    try {
        const std::string stats = co_await get_text(to, "/stats");
        out.loop_delay_p99_ms = json_number(stats, "loop_delay_p99_ms", -1);
        out.longest_step_ms = json_number(stats, "longest_step_ms", -1);
        out.watchdog_reports = static_cast<long>(json_number(stats, "watchdog_reports", -1));
    } catch (const std::exception&) {
    }
}

struct io_row {
    std::string name;
    std::string target;
    std::string story;
    double requests_per_s = 0;
    long errors = 0;
    std::string failure;
};

tandem::task<> io_scenario(tandem::address to, const settings& s, io_row& row, progress& prog) {
    prog.measure();
    long done = 0, errors = 0;
    // Connections start spread over one 200 ms period, so answers arrive evenly rather than in
    // waves a short window would catch one wave too many or too few of.
    const auto begin = clock_type::now();
    const auto warm = begin + 400ms; // every connection open and waiting
    const auto end = warm + s.io_time;
    auto one = [](tandem::address a, std::string target, clock_type::time_point first, clock_type::time_point from,
                  clock_type::time_point until, long& count, long& errs) -> tandem::task<> {
        co_await tandem::sleep_until(first);
        tandem::http::client c(std::move(a), client_timeout(30'000ms));
        while (clock_type::now() < until) {
            try {
                const tandem::http::client_response r = co_await c.get(target);
                const auto now = clock_type::now();
                if (r.status != 200) ++errs;
                else if (now >= from && now < until) ++count;
            } catch (const tandem::cancelled&) {
                throw;
            } catch (const std::exception&) {
                ++errs;
                co_return;
            }
        }
    };
    tandem::task_group group;
    for (std::size_t i = 0; i < s.io_connections; ++i) {
        const auto first = begin + 200ms * static_cast<double>(i) / static_cast<double>(s.io_connections);
        group.spawn(one(to, row.target, std::chrono::time_point_cast<clock_type::duration>(first), warm, end, done, errors));
    }
    co_await tandem::sleep_until(end);
    group.cancel(); // requests still waiting on a blocked server are simply abandoned
    try {
        co_await group.join();
    } catch (const tandem::cancelled&) {
    }
    row.requests_per_s = static_cast<double>(done) / std::chrono::duration<double>(s.io_time).count();
    row.errors = errors;
}

/// Starts one server, runs `scenario(its address)` on a fresh loop with the progress line alive,
/// and stops the server (`grace` for a graceful exit); returns why it could not be measured, or "".
template <class Scenario>
std::string measure(const std::vector<std::string>& argv, const std::string& log, progress& prog, Scenario scenario,
                    std::chrono::milliseconds grace = 1000ms) {
    child c = start_child(argv, log, [&prog] { prog.draw(); });
    std::string failure = c.error;
    if (failure.empty()) {
        try {
            tandem::event_loop loop;
            loop.run([](Scenario& run, tandem::address to, progress& p) -> tandem::task<> {
                auto drawing = tandem::spawn(keep_drawing(p), "progress");
                co_await run(std::move(to));
                drawing.cancel();
            }(scenario, tandem::address("127.0.0.1", static_cast<std::uint16_t>(c.port)), prog));
        } catch (const std::exception& e) {
            failure = std::string(e.what()) + " (see " + log + ")";
        }
        if (std::string died = died_during_run(c, log); !died.empty()) failure = std::move(died);
    }
    stop_child(c, grace);
    prog.clear();
    return failure;
}

// ---- figures -----------------------------------------------------------------------------

/// Nearest-rank percentile: p99 of 100 samples is the 99th smallest, p100 the largest.
double percentile(std::vector<double> v, double p) {
    if (v.empty()) return std::nan("");
    std::sort(v.begin(), v.end());
    const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

struct row {
    const model* m;
    cpu_result r;
    double p50 = 0, p99 = 0, max = 0, per_s = 0;
};

std::string fmt(double v, int precision = 1) {
    if (std::isnan(v) || v < 0) return "n/a";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", precision, v);
    return buf;
}

std::string ms_text(double v) {
    if (std::isnan(v) || v < 0) return "n/a";
    return fmt(v, v < 1 ? 2 : (v < 10 ? 1 : 0));
}

std::string json_escape(const std::string& s) {
    std::string o;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') o += '\\', o += ch;
        else if (static_cast<unsigned char>(ch) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", ch);
            o += buf;
        } else o += ch;
    }
    return o;
}

std::string html_escape(const std::string& s) {
    std::string o;
    for (char ch : s) {
        if (ch == '<') o += "&lt;";
        else if (ch == '>') o += "&gt;";
        else if (ch == '&') o += "&amp;";
        else if (ch == '"') o += "&quot;";
        else o += ch;
    }
    return o;
}

std::string json_num(double v, int precision = 3) {
    if (std::isnan(v) || std::isinf(v)) return "null";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", precision, v);
    return buf;
}

struct machine_info {
    std::string cpu, kernel, when;
    unsigned cores = 0;
    double load = 0, load_end = -1;
    std::string describe() const {
        char buf[512];
        std::snprintf(buf, sizeof buf, "%s, %u cores, Linux %s, load average %.2f at start%s, %s", cpu.c_str(), cores,
                      kernel.c_str(), load, load_end < 0 ? "" : (" and " + fmt(load_end, 2) + " at the end").c_str(),
                      when.c_str());
        return buf;
    }
};

machine_info this_machine() {
    machine_info m;
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);)
        if (line.rfind("model name", 0) == 0) {
            m.cpu = line.substr(line.find(':') + 2);
            break;
        }
    if (m.cpu.empty()) m.cpu = "unknown CPU";
    m.cores = std::max(1u, std::thread::hardware_concurrency());
    utsname u{};
    if (::uname(&u) == 0) m.kernel = u.release;
    std::ifstream("/proc/loadavg") >> m.load;
    const std::time_t now = std::time(nullptr);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    m.when = buf;
    return m;
}

const char* const palette[] = {"#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd",
                               "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

/// /ping latency over time, one polyline per model, log scale: a stall is a saw-tooth.
std::string ping_svg(const std::vector<row>& rows, const settings& s, const machine_info& mi) {
    const double W = 900, H = 400, left = 78, right = 236, top = 36, bottom = 48;
    const double pw = W - left - right, ph = H - top - bottom;
    double lo = 1e9, hi = 0;
    for (const row& r : rows)
        for (const ping_sample& p : r.r.pings) {
            lo = std::min(lo, p.latency_ms);
            hi = std::max(hi, p.latency_ms);
        }
    if (hi <= 0) lo = 0.01, hi = 1;
    const double dec_lo = std::floor(std::log10(std::max(lo, 1e-3))), dec_hi = std::ceil(std::log10(std::max(hi, 1e-2)));
    const double span = std::max(1.0, dec_hi - dec_lo);
    const double seconds = std::chrono::duration<double>(s.cpu_time).count();
    auto X = [&](double t) { return left + pw * std::clamp(t / seconds, 0.0, 1.0); };
    auto Y = [&](double ms) { return top + ph * (1 - (std::log10(std::max(ms, 1e-3)) - dec_lo) / span); };
    std::ostringstream o;
    o.setf(std::ios::fixed);
    o.precision(1);
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"ping-chart\" width=\"" << W << "\" height=\"" << H
      << "\" viewBox=\"0 0 " << W << ' ' << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n"
      << "<text x=\"" << left << "\" y=\"20\" font-size=\"15\" font-weight=\"bold\">/ping latency while /compute runs "
      << s.work.count() << " ms jobs at " << fmt(s.compute_rate, 0) << "/s (log scale, from scheduled send time)</text>\n";
    for (double d = dec_lo; d <= dec_hi + 1e-9; d += 1) {
        const double ms = std::pow(10.0, d);
        o << "<line x1=\"" << left << "\" x2=\"" << left + pw << "\" y1=\"" << Y(ms) << "\" y2=\"" << Y(ms)
          << "\" stroke=\"#ddd\"/><text x=\"" << left - 6 << "\" y=\"" << Y(ms) + 4 << "\" text-anchor=\"end\">"
          << (ms < 1 ? fmt(ms, static_cast<int>(-d)) : fmt(ms, 0)) << " ms</text>\n";
    }
    const double tick = seconds <= 2 ? 0.25 : (seconds <= 10 ? 1 : 5);
    for (double t = 0; t <= seconds + 1e-9; t += tick)
        o << "<text x=\"" << X(t) << "\" y=\"" << top + ph + 16 << "\" text-anchor=\"middle\">" << fmt(t, tick < 1 ? 2 : 0)
          << " s</text>\n";
    o << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"#999\"/>\n";
    int i = 0; // counts drawn rows only, so a row keeps its colour in the bar chart too
    for (const row& r : rows) {
        if (!r.r.failure.empty()) continue; // no samples: said in the table, not drawn as a flat nothing
        const char* color = palette[i % 10];
        o << "<polyline class=\"series\" data-model=\"" << html_escape(r.m->name) << "\" fill=\"none\" stroke=\"" << color
          << "\" stroke-width=\"1.3\" points=\"";
        std::vector<ping_sample> in_order = r.r.pings; // recorded as answered, drawn as scheduled
        std::sort(in_order.begin(), in_order.end(), [](const ping_sample& a, const ping_sample& b) { return a.at_s < b.at_s; });
        for (const ping_sample& p : in_order) o << X(p.at_s) << ',' << Y(p.latency_ms) << ' ';
        o << "\"/>\n";
        const double ly = top + 14 + 18 * i;
        o << "<line x1=\"" << left + pw + 12 << "\" x2=\"" << left + pw + 32 << "\" y1=\"" << ly - 4 << "\" y2=\"" << ly - 4
          << "\" stroke=\"" << color << "\" stroke-width=\"3\"/><text x=\"" << left + pw + 38 << "\" y=\"" << ly << "\">"
          << html_escape(r.m->name) << "</text>\n";
        ++i;
    }
    o << "<text x=\"" << left << "\" y=\"" << H - 8 << "\" font-size=\"10\" fill=\"#555\">" << html_escape(mi.describe())
      << "</text>\n</svg>\n";
    return o.str();
}

/// Horizontal bars, one per entry, with the value written beside each.
std::string bar_svg(const std::string& id, const std::string& title, const std::vector<std::pair<std::string, double>>& bars,
                    const std::string& unit) {
    const double W = 860, left = 220, right = 120, bar = 20, gap = 8, top = 34;
    const double H = top + (bar + gap) * static_cast<double>(bars.size()) + 12;
    double hi = 0;
    for (const auto& b : bars) hi = std::max(hi, b.second);
    if (hi <= 0) hi = 1;
    std::ostringstream o;
    o.setf(std::ios::fixed);
    o.precision(1);
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"" << id << "\" width=\"" << W << "\" height=\"" << H
      << "\" viewBox=\"0 0 " << W << ' ' << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">"
      << html_escape(title) << "</text>\n";
    int i = 0;
    for (const auto& [name, v] : bars) {
        const double y = top + (bar + gap) * i;
        const double w = std::max(1.0, (W - left - right) * v / hi);
        o << "<text x=\"" << left - 8 << "\" y=\"" << y + 15 << "\" text-anchor=\"end\">" << html_escape(name) << "</text>"
          << "<rect class=\"bar\" data-model=\"" << html_escape(name) << "\" x=\"" << left << "\" y=\"" << y << "\" width=\""
          << w << "\" height=\"" << bar << "\" fill=\"" << palette[i % 10] << "\"/>"
          << "<text x=\"" << left + w + 6 << "\" y=\"" << y + 15 << "\">" << fmt(v, v < 10 ? 1 : 0) << ' ' << unit
          << "</text>\n";
        ++i;
    }
    o << "</svg>\n";
    return o.str();
}

struct report {
    std::vector<row> rows;
    std::vector<const model*> absent; // rows that could not run here, shown with the reason
    std::vector<io_row> io;
    std::vector<std::string> notes;
    machine_info machine;
};

std::vector<std::string> table_lines(const report& rep) {
    std::vector<std::string> lines;
    char buf[512];
    std::snprintf(buf, sizeof buf, "%-27s %9s %9s %9s %10s %7s %12s %9s", "model", "ping p50", "ping p99", "ping max",
                  "compute/s", "errors", "loop p99 ms", "watchdog");
    lines.emplace_back(buf);
    for (const row& r : rep.rows) {
        if (!r.r.failure.empty()) {
            std::snprintf(buf, sizeof buf, "%-27s failed: %s", r.m->name.c_str(), r.r.failure.c_str());
        } else {
            std::snprintf(buf, sizeof buf, "%-27s %9s %9s %9s %10s %7ld %12s %9s", r.m->name.c_str(),
                          ms_text(r.p50).c_str(), ms_text(r.p99).c_str(), ms_text(r.max).c_str(), fmt(r.per_s).c_str(),
                          r.r.ping_errors + r.r.compute_errors, ms_text(r.r.loop_delay_p99_ms).c_str(),
                          r.r.watchdog_reports < 0 ? "n/a" : std::to_string(r.r.watchdog_reports).c_str());
        }
        lines.emplace_back(buf);
    }
    for (const model* m : rep.absent) {
        std::snprintf(buf, sizeof buf, "%-27s -- %s", m->name.c_str(), m->missing.c_str());
        lines.emplace_back(buf);
    }
    return lines;
}

std::string write_json(const report& rep, const settings& s) {
    std::ostringstream o;
    o << "{\n  \"machine\": \"" << json_escape(rep.machine.describe()) << "\",\n"
      << "  \"settings\": {\"work_ms\": " << s.work.count() << ", \"work_iterations\": " << s.work_n
      << ", \"compute_rate_per_s\": " << json_num(s.compute_rate, 1) << ", \"compute_connections\": " << s.compute_connections
      << ", \"ping_every_ms\": 10, \"cpu_seconds\": " << json_num(s.cpu_time.count() / 1e3, 1)
      << ", \"io_connections\": " << s.io_connections << ", \"io_seconds\": " << json_num(s.io_time.count() / 1e3, 1) << "},\n"
      << "  \"models\": [";
    bool first = true;
    for (const row& r : rep.rows) {
        if (!r.r.failure.empty()) continue;
        o << (first ? "\n" : ",\n") << "    {\"name\": \"" << json_escape(r.m->name) << "\", \"key\": \"" << r.m->key
          << "\", \"family\": \"" << r.m->family << "\", \"ping_p50_ms\": " << json_num(r.p50)
          << ", \"ping_p99_ms\": " << json_num(r.p99) << ", \"ping_max_ms\": " << json_num(r.max)
          << ", \"pings\": " << r.r.pings.size() << ", \"compute_per_s\": " << json_num(r.per_s, 2)
          << ", \"compute_completed\": " << r.r.compute_ok << ", \"compute_not_sent\": " << r.r.compute_shed
          << ", \"errors\": " << r.r.ping_errors + r.r.compute_errors
          << ", \"loop_delay_p99_ms\": " << (r.r.loop_delay_p99_ms < 0 ? "null" : json_num(r.r.loop_delay_p99_ms))
          << ", \"watchdog_reports\": " << (r.r.watchdog_reports < 0 ? "null" : std::to_string(r.r.watchdog_reports)) << "}";
        first = false;
    }
    o << "\n  ],\n  \"io\": [";
    first = true;
    for (const io_row& r : rep.io) {
        if (!r.failure.empty()) continue;
        o << (first ? "\n" : ",\n") << "    {\"name\": \"" << json_escape(r.name) << "\", \"requests_per_s\": "
          << json_num(r.requests_per_s, 1) << ", \"errors\": " << r.errors << "}";
        first = false;
    }
    o << "\n  ],\n  \"notes\": [";
    first = true;
    for (const std::string& n : rep.notes) {
        o << (first ? "\n" : ",\n") << "    \"" << json_escape(n) << "\"";
        first = false;
    }
    o << "\n  ]\n}\n";
    return o.str();
}

std::string write_html(const report& rep, const settings& s, const std::string& ping_chart) {
    std::vector<std::pair<std::string, double>> cpu_bars, io_bars;
    for (const row& r : rep.rows)
        if (r.r.failure.empty()) cpu_bars.emplace_back(r.m->name, r.per_s);
    for (const io_row& r : rep.io)
        if (r.failure.empty()) io_bars.emplace_back(r.name, r.requests_per_s);
    std::ostringstream o;
    o << "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tandem showdown</title>\n"
      << "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}"
         "td:first-child,th:first-child{text-align:left}.note{color:#666}</style></head><body>\n"
      << "<h1>tandem showdown</h1>\n<p>" << html_escape(rep.machine.describe()) << ". Every model is a real HTTP server "
      << "in its own process, driven by tandem's HTTP client with the same load: /compute jobs of " << s.work.count()
      << " ms of CPU (calibrated on thread CPU time) offered at " << fmt(s.compute_rate, 0) << " per second over "
      << s.compute_connections << " connections for " << fmt(s.cpu_time.count() / 1e3, 1)
      << " s, while /ping is sent every 10 ms. A ping's latency counts from its <em>scheduled</em> send time, so a "
         "stalled server cannot hide its stall (no coordinated omission).</p>\n"
      << ping_chart
      << bar_svg("compute-chart", "/compute completed per second (same offered rate for every model)", cpu_bars, "/s")
      << "<h2>The figures</h2>\n<table><tr><th>model</th><th>/ping p50 ms</th><th>p99 ms</th><th>max ms</th>"
         "<th>/compute per s</th><th>errors</th><th>loop delay p99 ms</th><th>watchdog reports</th></tr>\n";
    for (const row& r : rep.rows) {
        if (!r.r.failure.empty()) {
            o << "<tr><td>" << html_escape(r.m->name) << "</td><td colspan=\"7\" class=\"note\">failed: "
              << html_escape(r.r.failure) << "</td></tr>\n";
            continue;
        }
        o << "<tr><td>" << html_escape(r.m->name) << "</td><td>" << ms_text(r.p50) << "</td><td>" << ms_text(r.p99)
          << "</td><td>" << ms_text(r.max) << "</td><td>" << fmt(r.per_s) << "</td><td>"
          << r.r.ping_errors + r.r.compute_errors << "</td><td>" << ms_text(r.r.loop_delay_p99_ms) << "</td><td>"
          << (r.r.watchdog_reports < 0 ? "n/a" : std::to_string(r.r.watchdog_reports)) << "</td></tr>\n";
    }
    for (const model* m : rep.absent)
        o << "<tr><td>" << html_escape(m->name) << "</td><td colspan=\"7\" class=\"note\">" << html_escape(m->missing)
          << "</td></tr>\n";
    o << "</table>\n";
    if (!rep.io.empty()) {
        o << "<h2>I/O: " << s.io_connections << " connections waiting 200 ms per request</h2>\n";
        if (!io_bars.empty()) o << bar_svg("io-chart", "/slow requests per second", io_bars, "req/s");
        for (const io_row& r : rep.io) {
            o << "<p><b>" << html_escape(r.name) << "</b>: " << html_escape(r.story);
            if (!r.failure.empty()) o << " Here it could not be measured: " << html_escape(r.failure);
            o << "</p>\n";
        }
    }
    o << "<h2>What each row is</h2>\n";
    for (const row& r : rep.rows) {
        o << "<p><b>" << html_escape(r.m->name) << "</b> — " << html_escape(r.m->story);
        if (r.r.failure.empty())
            o << " Here: /ping p99 " << ms_text(r.p99) << " ms, max " << ms_text(r.max) << " ms, " << fmt(r.per_s)
              << " jobs per second.</p>\n";
        else
            o << " Here it could not be measured: " << html_escape(r.r.failure) << "</p>\n";
    }
    o << "</body></html>\n";
    return o.str();
}

/// Written beside and renamed over: a Ctrl-C or a full disk mid-write leaves the last complete
/// file (or none), never half a JSON document a script would choke on.
bool write_file(const std::string& path, const std::string& text) {
    const std::string part = path + ".part";
    {
        std::ofstream f(part, std::ios::trunc);
        f << text;
        f.flush();
        if (!f) {
            ::unlink(part.c_str());
            return false;
        }
    }
    return ::rename(part.c_str(), path.c_str()) == 0;
}

void usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s [--quick] [--seconds S] [--models LIST] [--out DIR] [--no-peers] [--work-ms MS]\n"
                 "          [--rate R] [--connections N] [--peers-dir DIR]\n"
                 "  --quick        0.7 s per model, 0.8 s per I/O row (about 13 s in all)\n"
                 "  --seconds S    CPU scenario length per model, 0.1 to 3600 (default 4; the I/O rows take up to 2.5)\n"
                 "  --models LIST  comma-separated keys: blocked, cooperative, threads, processes, cluster,\n"
                 "                 node-inline, node-workers, python-inline, python-processes, io (default: all)\n"
                 "  --out DIR      where showdown.html, showdown.json and showdown-ping.svg go, created if\n"
                 "                 need be (default .)\n"
                 "  --no-peers     skip the Node and Python servers\n"
                 "  --work-ms MS   CPU time of one /compute job, 1 to 1000 (default 50)\n"
                 "  --rate R       /compute jobs offered per second, up to 10000 (default: 3/4 of what all cores can do)\n"
                 "  --connections N  connections in the I/O scenario, 1 to 100000 (default 1000)\n"
                 "  (--opt=value works too)\n",
                 argv0);
}

/// A number for an option, within [lo, hi] (an integer where `integer`), or a clear error and exit 2:
/// a value that would make a figure meaningless (0 s of measurement, 0 ms jobs, half a
/// connection) is refused before anything starts, not discovered as NaN a minute later.
double number_option(const std::string& text, const char* what, double lo, double hi, bool integer = false) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !(v >= lo && v <= hi) || (integer && v != std::floor(v))) {
        std::fprintf(stderr, "showdown: %s must be %s from %g to %g, not '%s'\n", what, integer ? "a whole number" : "a number",
                     lo, hi, text.c_str());
        std::exit(2);
    }
    return v;
}

/// --out: created (parents too) and proved writable before a minute of measuring, not after.
bool prepare_out(const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (!std::filesystem::is_directory(dir)) {
        std::fprintf(stderr, "showdown: --out %s: cannot create the directory%s%s\n", dir.c_str(), ec ? ": " : "",
                     ec ? ec.message().c_str() : "");
        return false;
    }
    const std::string probe = dir + "/.showdown-write-test";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        std::fprintf(stderr, "showdown: --out %s: cannot write there: %s\n", dir.c_str(), std::strerror(errno));
        return false;
    }
    ::close(fd);
    ::unlink(probe.c_str());
    return true;
}

} // namespace

int main(int argc, char** argv) {
    // --serve MODEL: be one of the servers (the showdown starts itself this way).
    if (argc >= 3 && std::strcmp(argv[1], "--serve") == 0) {
        const std::string model = argv[2];
        long n = 0;
        long work_ms = 50;
        unsigned long port = 0;
        for (int i = 3; i + 1 < argc; i += 2) {
            if (std::strcmp(argv[i], "--port") == 0) port = std::strtoul(argv[i + 1], nullptr, 10);
            else if (std::strcmp(argv[i], "--work-n") == 0) n = std::strtol(argv[i + 1], nullptr, 10);
            else if (std::strcmp(argv[i], "--work-ms") == 0) work_ms = std::strtol(argv[i + 1], nullptr, 10);
        }
        if (n <= 0) n = calibrate(std::chrono::milliseconds(work_ms));
        return serve(model, n, std::chrono::milliseconds(work_ms), port);
    }

    settings s;
    bool quick = false, seconds_given = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        std::optional<std::string> value; // --opt=value or --opt value
        if (const std::size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
            value = a.substr(eq + 1);
            a.resize(eq);
        }
        const auto arg = [&]() -> std::string {
            if (value) return *value;
            if (i + 1 >= argc) {
                std::fprintf(stderr, "showdown: %s needs a value\n", a.c_str());
                usage(argv[0]);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--quick" && !value) quick = true;
        else if (a == "--no-peers" && !value) s.peers = false;
        else if (a == "--seconds") {
            s.cpu_time = std::chrono::milliseconds(std::lround(1000 * number_option(arg(), "--seconds", 0.1, 3600)));
            seconds_given = true;
        } else if (a == "--models") {
            s.only = arg();
            if (s.only.empty()) {
                std::fprintf(stderr, "showdown: --models needs at least one model\n");
                usage(argv[0]);
                return 2;
            }
        } else if (a == "--out") s.out = arg();
        else if (a == "--peers-dir") s.peers_dir = arg();
        else if (a == "--work-ms") s.work = std::chrono::milliseconds(std::lround(number_option(arg(), "--work-ms", 1, 1000, true)));
        else if (a == "--rate") s.compute_rate = number_option(arg(), "--rate", 0.01, 10000);
        else if (a == "--connections")
            s.io_connections = static_cast<std::size_t>(number_option(arg(), "--connections", 1, 100000, true));
        else if ((a == "--help" || a == "-h") && !value) {
            usage(argv[0]);
            return 0;
        } else {
            std::fprintf(stderr, "showdown: unknown option '%s'\n", argv[i]);
            usage(argv[0]);
            return 2;
        }
    }
    if (quick && !seconds_given) s.cpu_time = 700ms;
    s.io_time = quick ? std::chrono::milliseconds(800) : std::min<std::chrono::milliseconds>(s.cpu_time, 2500ms);

    install_handlers();
    ::signal(SIGPIPE, SIG_IGN);
    // Two sides of a thousand connections each: lift the soft descriptor limit to the hard one.
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &lim);
    }
    // Each side (this process, the server) needs a descriptor per connection plus a few dozen of
    // its own; more connections than that would only measure EMFILE, as errors.
    std::string fewer_connections;
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < s.io_connections + 100) {
        s.io_connections = lim.rlim_cur > 150 ? lim.rlim_cur - 100 : std::max<rlim_t>(1, lim.rlim_cur / 3);
        fewer_connections = "I/O scenario: " + std::to_string(s.io_connections) + " connections, not more: the descriptor "
                            "limit (ulimit -n) is " + std::to_string(lim.rlim_cur);
    }

    report rep;
    rep.machine = this_machine();
    const unsigned cores = rep.machine.cores;
    // The same offered rate for every model: three quarters of what all cores can compute, so
    // one-core models fall behind and parallel ones keep up without saturating the machine.
    if (s.compute_rate <= 0) s.compute_rate = 0.75 * cores * 1000.0 / static_cast<double>(s.work.count());
    s.compute_connections = 2 * cores;

    char self[4096];
    const ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        std::perror("showdown: /proc/self/exe");
        return 1;
    }
    self[len] = '\0';

    s.work_n = calibrate(s.work);
    const std::vector<model> table = model_table(s, self);
    if (!s.only.empty()) { // a typo must not silently run nothing
        std::stringstream keys(s.only);
        for (std::string k; std::getline(keys, k, ',');) {
            const bool known = k == "io" || std::any_of(table.begin(), table.end(), [&](const model& m) { return m.key == k; });
            if (!known) {
                std::fprintf(stderr, "showdown: unknown model '%s' in --models\n", k.c_str());
                usage(argv[0]);
                return 2;
            }
        }
    }
    std::vector<const model*> runnable;
    for (const model& m : table) {
        if (!selected(s, m.key)) continue;
        if (!m.missing.empty()) {
            rep.notes.push_back(m.name + ": " + m.missing);
            rep.absent.push_back(&m);
        } else {
            runnable.push_back(&m);
        }
    }
    const bool with_io = selected(s, "io");
    if (!prepare_out(s.out)) return 2; // after every check of the options: a refused run writes nothing
    const std::string logs = s.out + "/showdown-logs";
    ::mkdir(logs.c_str(), 0755);

    progress prog;
    prog.steps = static_cast<int>(runnable.size()) + (with_io ? 2 : 0);
    std::printf("tandem showdown: %s\n/compute = %lld ms of CPU (%ld iterations of sum(sqrt(i)) here), offered at %.0f/s "
                "over %zu connections; /ping every 10 ms; %.1f s per model\n\n",
                rep.machine.describe().c_str(), static_cast<long long>(s.work.count()), s.work_n, s.compute_rate,
                s.compute_connections, s.cpu_time.count() / 1e3);
    std::fflush(stdout);

    for (const model* m : runnable) {
        row r{m, {}};
        prog.begin(m->name + " · CPU scenario", s.cpu_time);
        r.r.failure = measure(fill(m->argv, s), logs + "/" + m->key + ".log", prog,
                              [&](tandem::address to) { return cpu_scenario(std::move(to), s, r.r, prog); });
        std::vector<double> lat;
        for (const ping_sample& p : r.r.pings) lat.push_back(p.latency_ms);
        r.p50 = percentile(lat, 50);
        r.p99 = percentile(lat, 99);
        r.max = percentile(lat, 100);
        if (!r.r.failure.empty()) rep.notes.push_back(m->name + ": failed: " + r.r.failure);
        r.per_s = r.r.seconds > 0 ? static_cast<double>(r.r.compute_ok) / std::chrono::duration<double>(s.cpu_time).count() : 0;
        rep.rows.push_back(std::move(r));
    }

    if (with_io) {
        rep.io.push_back({"non-blocking wait", "/slow",
                          "co_await tandem::sleep_for(200ms) in the handler: the loop parks the request and serves the "
                          "others, so all connections wait at once and throughput is connections / 0.2 s.",
                          0, 0, {}});
        rep.io.push_back({"blocking sleep", "/bad",
                          "std::this_thread::sleep_for(200ms) in the handler (Python's time.sleep in async def): the "
                          "loop thread sleeps, one request per 200 ms, whatever the number of connections.",
                          0, 0, {}});
        for (io_row& r : rep.io) {
            prog.begin(r.name + " · I/O scenario, " + std::to_string(s.io_connections) + " connections", s.io_time + 400ms);
            // The blocking server still owes a thousand 200 ms sleeps: no point waiting for them.
            r.failure = measure({self, "--serve", "io", "--port", "0", "--work-n", "1"}, logs + "/io.log", prog,
                                [&](tandem::address to) { return io_scenario(std::move(to), s, r, prog); },
                                r.target == "/bad" ? 0ms : 1000ms);
            if (!r.failure.empty()) rep.notes.push_back(r.name + " (I/O): failed: " + r.failure);
        }
    }

    for (const std::string& line : table_lines(rep)) std::printf("%s\n", line.c_str());
    std::printf("(ping latencies in ms, counted from each ping's scheduled send time; compute/s = jobs completed per "
                "second of the run; loop p99 = the server's own loop delay; watchdog = steps that held the loop over "
                "half a job)\n");
    if (!rep.io.empty()) {
        std::printf("\nI/O: %zu connections, each request waits 200 ms (ideal: %.0f req/s)\n", s.io_connections,
                    static_cast<double>(s.io_connections) / 0.2);
        if (!fewer_connections.empty()) std::printf("(%s)\n", fewer_connections.c_str());
        for (const io_row& r : rep.io) {
            if (r.failure.empty()) std::printf("%-27s %10.1f req/s  %ld errors\n", r.name.c_str(), r.requests_per_s, r.errors);
            else std::printf("%-27s failed: %s\n", r.name.c_str(), r.failure.c_str());
        }
    }

    std::ifstream("/proc/loadavg") >> rep.machine.load_end; // a busy neighbour shows here
    const std::string chart = ping_svg(rep.rows, s, rep.machine);
    bool ok = write_file(s.out + "/showdown.json", write_json(rep, s));
    ok = write_file(s.out + "/showdown.html", write_html(rep, s, chart)) && ok;
    ok = write_file(s.out + "/showdown-ping.svg", "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + chart) && ok;
    std::printf("\nload average %.2f at the start, %.2f at the end: other work on this machine moves these figures, "
                "not their direction\n", rep.machine.load, rep.machine.load_end);
    if (!ok) {
        std::fprintf(stderr, "showdown: could not write showdown.json, showdown.html or showdown-ping.svg into %s\n",
                     s.out.c_str());
        return 1;
    }
    std::printf("wrote %s/showdown.html, showdown.json and showdown-ping.svg (server logs in %s)\n", s.out.c_str(), logs.c_str());
    // A peer that fails here is the peer's business (an old Node, say); a tandem row is ours.
    for (const row& r : rep.rows)
        if (!r.r.failure.empty() && r.m->family == "tandem") return 1;
    for (const io_row& r : rep.io)
        if (!r.failure.empty()) return 1;
    return 0;
}
