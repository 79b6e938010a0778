#include "tandem/process_pool.hpp"
#include "tandem/process/fork.hpp"
#include "tandem/process/pidfd.hpp"

#include "catch.hpp"
#include "other_tu.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"
#include "tandem/when.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <poll.h>
#include <random>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <dirent.h>
#include <fstream>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;

namespace {

int add(int a, int b) { return a + b; }
long square(long x) { return x * x; }
int worker_pid() { return static_cast<int>(::getpid()); }

/// A UDP port on 127.0.0.1 that jobs report to: "I started, my pid is N". Lets a test act on a
/// job that is really running in its worker, without sleeping.
class beacon {
public:
    beacon() : m_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(m_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        socklen_t len = sizeof a;
        ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&a), &len);
        m_port = ntohs(a.sin_port);
        const timeval limit{30, 0};
        ::setsockopt(m_fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    }
    ~beacon() { ::close(m_fd); }
    int port() const { return m_port; }
    /// The pid the next job reported (30 s at most).
    pid_t wait() const {
        int pid = 0;
        REQUIRE(::recv(m_fd, &pid, sizeof pid, 0) == sizeof pid);
        return pid;
    }

private:
    int m_fd;
    int m_port = 0;
};

/// In the worker: report our pid to the beacon.
void announce(int port) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    const int pid = static_cast<int>(::getpid());
    ::sendto(fd, &pid, sizeof pid, 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::close(fd);
}

/// Announces itself, then never returns on its own.
int hang(int port) {
    if (port) announce(port);
    for (;;) ::pause();
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
    return v;
}

int g_initialized = 0;
void initialize_worker() { g_initialized = 42; }
void failing_initializer() { throw std::runtime_error("no config file"); }

bool process_gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

/// The children of a process, from /proc (empty when it has none).
std::string children_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    std::string text;
    std::getline(in, text);
    return text;
}

struct custom_failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

} // namespace

TEST_CASE("results and exceptions round-trip through a worker process", "[process_pool]") {
    tandem::process_pool pool({.workers = 2});
    CHECK(pool.size() == 2);
    CHECK(pool.submit(add, 2, 3).get() == 5);
    CHECK(pool.submit(square, 12).get() == 144); // int converted to the parameter's long
    CHECK(pool.submit(worker_pid).get() != ::getpid());
    using nested = std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>;
    const nested value{{"a", {std::nullopt, std::pair{1, "one"}}}, {"b", {}}};
    CHECK(pool.submit([](nested v) { v["c"].push_back(std::pair{3, "three"}); return v; }, value).get().at("c").size() == 1);
    CHECK(pool.submit([](std::tuple<int, double, std::string> t) { return std::get<2>(t) + "!"; },
                      std::tuple<int, double, std::string>{1, 2.0, "three"})
              .get() == "three!");
    CHECK(pool.submit([](std::array<int, 4> a) { return std::accumulate(a.begin(), a.end(), 0); }, std::array<int, 4>{1, 2, 3, 4})
              .get() == 10);
    pool.submit([](int) {}, 1).get(); // void results

    try {
        pool.submit([](std::string s) -> int { throw std::invalid_argument("bad input: " + s); }, std::string("x")).get();
        FAIL("no exception");
    } catch (const tandem::remote_error& e) {
        CHECK(e.type_name() == "std::invalid_argument");
        CHECK(e.message() == "bad input: x");
        CHECK(std::string(e.what()) == "std::invalid_argument: bad input: x");
    }
    try {
        pool.submit([] { throw custom_failure("custom"); }).get();
        FAIL("no exception");
    } catch (const tandem::remote_error& e) {
        CHECK(e.type_name().find("custom_failure") != std::string::npos);
        CHECK(e.message() == "custom");
    }
    try {
        pool.submit([] { throw 7; }).get();
        FAIL("no exception");
    } catch (const tandem::remote_error& e) {
        CHECK(e.type_name() == "int");
    }
    CHECK(pool.submit(add, 1, 1).get() == 2); // the pool is unharmed
}

TEST_CASE("co_await run keeps the loop going and 10000 small jobs all come back", "[process_pool]") {
    tandem::process_pool pool({.workers = 2});
    tandem::event_loop loop;
    loop.run([&]() -> tandem::task<> {
        // A tick keeps running while a job computes in another process. Event-driven, not
        // timed: the job spins until the loop has ticked ten times and said so through a file
        // (bounded at 20 s), so a loaded machine can slow it down but not fail it.
        const std::string flag = "/tmp/tandem-ticks-" + std::to_string(::getpid());
        ::unlink(flag.c_str());
        int ticks = 0;
        auto ticker = tandem::spawn([](int& count, std::string path) -> tandem::task<> { // state as parameters
            for (;;) {
                co_await tandem::sleep_for(1ms);
                if (++count == 10) std::ofstream(path).put('x');
            }
        }(ticks, flag));
        const double r = co_await pool.run([](std::string path) {
            double s = 0;
            const auto until = std::chrono::steady_clock::now() + 20s;
            for (long i = 1; std::chrono::steady_clock::now() < until; ++i) {
                s += std::sqrt(static_cast<double>(i % 1000));
                if (i % 1024 == 0 && ::access(path.c_str(), F_OK) == 0) return s > 0 ? 1.0 : 0.0;
            }
            return 0.0; // the loop never ticked ten times while this job ran
        }, flag);
        ::unlink(flag.c_str());
        CHECK(r == 1.0); // the loop was free while the job computed
        CHECK(ticks >= 10);
        ticker.cancel();

        std::vector<tandem::task<int>> jobs;
        for (int i = 0; i < 10'000; ++i) jobs.push_back(pool.run(add, i, 1));
        const std::vector<int> results = co_await tandem::when_all(std::move(jobs));
        long long sum = 0;
        for (int x : results) sum += x;
        CHECK(sum == 10'000LL * 10'001 / 2);

        std::vector<long> inputs(1000);
        std::iota(inputs.begin(), inputs.end(), 0L);
        for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{5000}}) {
            const std::vector<long> squares = co_await pool.map(square, inputs, chunk);
            REQUIRE(squares.size() == 1000);
            CHECK(squares[999] == 999L * 999);
            CHECK(squares[10] == 100);
        }
        const std::vector<long> none = co_await pool.map(square, std::vector<long>{}, 10);
        CHECK(none.empty());
    }());
}

TEST_CASE("a worker killed with SIGKILL mid-job fails that job only and the next job succeeds", "[process_pool][crash]") {
    tandem::process_pool pool({.workers = 2});
    beacon started;
    auto victim = pool.submit(hang, started.port());
    const pid_t pid = started.wait();
    auto bystander = pool.submit([](int port) { // runs on the other worker meanwhile
        announce(port);
        return 7;
    }, started.port());
    (void)started.wait();
    REQUIRE(::kill(pid, SIGKILL) == 0);
    try {
        victim.get();
        FAIL("the job survived its worker");
    } catch (const tandem::worker_crashed& e) {
        CHECK(e.signal() == SIGKILL);
        CHECK(e.exit_status() == -1);
        CHECK(e.pid() == pid);
        CHECK(std::string(e.what()).find("signal 9") != std::string::npos);
    }
    CHECK(bystander.get() == 7);
    for (int i = 0; i < 20; ++i) CHECK(pool.submit(add, i, i).get() == 2 * i);
    CHECK(pool.workers_started() == 3);
    const auto pids = pool.worker_pids();
    CHECK(std::find(pids.begin(), pids.end(), pid) == pids.end());
}

TEST_CASE("abort() and exit() in a job fail that job with worker_crashed", "[process_pool][crash]") {
    tandem::process_pool pool({.workers = 1});
    try {
        pool.submit([] { std::abort(); }).get();
        FAIL("no exception");
    } catch (const tandem::worker_crashed& e) {
        CHECK(e.signal() == SIGABRT);
    }
    try {
        pool.submit([] { std::_Exit(3); }).get();
        FAIL("no exception");
    } catch (const tandem::worker_crashed& e) {
        CHECK(e.signal() == 0);
        CHECK(e.exit_status() == 3);
    }
    CHECK(pool.submit(add, 20, 22).get() == 42);
}

TEST_CASE("a job past its timeout is killed with its worker and fails with timed_out", "[process_pool][timeout]") {
    tandem::process_pool pool({.workers = 1, .job_timeout = 200ms});
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(pool.submit(hang, 0).get(), tandem::timed_out);
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(took >= 190ms);
    CHECK(took < 10s);
    // One worker: the next job can only run if the hung one was really killed.
    CHECK(pool.submit(add, 1, 2).get() == 3);
    // Per call: a longer limit for one job, a shorter one for another.
    CHECK(pool.submit(tandem::job_options{.timeout = 5s}, [] { return 1; }).get() == 1);
    CHECK_THROWS_AS(pool.submit(tandem::job_options{.timeout = 50ms}, hang, 0).get(), tandem::timed_out);
    CHECK(pool.submit(add, 2, 2).get() == 4);
    CHECK(pool.workers_started() == 3);
}

TEST_CASE("cancelling the awaiting task kills the worker of a running job", "[process_pool][cancel]") {
    tandem::process_pool pool({.workers = 1});
    tandem::event_loop loop;
    loop.run([&]() -> tandem::task<> {
        // with_timeout cancels the awaiting task: the running job's worker is killed.
        bool timed_out = false;
        try {
            co_await tandem::with_timeout(100ms, pool.run(hang, 0));
        } catch (const tandem::timed_out&) {
            timed_out = true;
        }
        CHECK(timed_out);
        CHECK(co_await pool.run(add, 2, 2) == 4); // only possible if the hung worker is gone

        // A queued job that is cancelled never runs (its worker is busy with another).
        auto busy = tandem::spawn(pool.run(hang, 0));
        auto queued = tandem::spawn(pool.run(worker_pid));
        co_await tandem::sleep_for(1ms);
        CHECK(pool.queued() == 1);
        queued.cancel();
        CHECK_THROWS_AS(co_await queued, tandem::cancelled);
        CHECK(pool.queued() == 0);
        busy.cancel();
        CHECK_THROWS_AS(co_await busy, tandem::cancelled);
        CHECK(co_await pool.run(add, 3, 3) == 6);
    }());
    CHECK(pool.workers_started() == 3);
}

TEST_CASE("max_jobs_per_worker recycles workers and the initializer runs in each one", "[process_pool]") {
    tandem::process_pool pool({.workers = 1, .max_jobs_per_worker = 3, .initializer = &initialize_worker});
    std::vector<int> pids;
    for (int i = 0; i < 7; ++i) {
        CHECK(pool.submit([] { return g_initialized; }).get() == 42);
        pids.push_back(pool.submit(worker_pid).get());
    }
    // 14 jobs, 3 per worker: 5 workers, each pid seen for 3 consecutive jobs (the last for 2).
    const std::set<int> distinct(pids.begin(), pids.end());
    CHECK(distinct.size() == 5);
    CHECK(pool.workers_started() >= 5);
    CHECK(g_initialized == 0); // it ran in the workers, not here
}

TEST_CASE("an initializer that throws fails every job with a clear remote_error", "[process_pool]") {
    tandem::process_pool pool({.workers = 2, .initializer = &failing_initializer});
    for (int i = 0; i < 3; ++i) {
        try {
            pool.submit(add, 1, 1).get();
            FAIL("no exception");
        } catch (const tandem::remote_error& e) {
            CHECK(std::string(e.what()).find("initializer") != std::string::npos);
            CHECK(std::string(e.what()).find("no config file") != std::string::npos);
        }
    }
}

TEST_CASE("64 MiB argument and result cross through shared memory", "[process_pool][large]") {
    tandem::process_pool pool({.workers = 1});
    const std::size_t n = 64u << 20;
    const std::vector<std::byte> input = pattern(n, 1);
    // The job checks every byte it got and answers with a different 64 MiB pattern.
    const std::vector<std::byte> output = pool.submit([](const std::vector<std::byte>& in) {
        if (in != pattern(in.size(), 1)) throw std::runtime_error("argument corrupted");
        return pattern(in.size(), 2);
    }, input).get();
    REQUIRE(output.size() == n);
    CHECK(output == pattern(n, 2));
    // Sizes around the inline limit take both paths.
    for (std::size_t size : {tandem::detail::max_inline - 16, tandem::detail::max_inline - 8, tandem::detail::max_inline,
                             tandem::detail::max_inline + 1}) {
        const auto v = pattern(size, 3);
        CHECK(pool.submit([](std::vector<std::byte> x) { return x; }, v).get() == v);
    }
}

TEST_CASE("a malformed frame from a worker fails its job and costs only that worker", "[process_pool][crash]") {
    tandem::process_pool pool({.workers = 1});
    using tandem::detail::frame_header;
    // Claims a 1 TiB inline payload in a 40-byte message: an error, not an allocation.
    CHECK_THROWS_AS(pool.submit([] {
        const auto h = frame_header::result(0).with_payload(std::uint64_t{1} << 40, false);
        ::send(tandem::detail::worker_channel_fd, &h, sizeof h, 0);
        for (;;) ::pause();
    }).get(), tandem::codec_error);
    // A memfd payload without the memfd.
    CHECK_THROWS_AS(pool.submit([] {
        const auto h = frame_header::result(0).with_payload(std::uint64_t{1} << 40, true);
        ::send(tandem::detail::worker_channel_fd, &h, sizeof h, 0);
        for (;;) ::pause();
    }).get(), tandem::codec_error);
    // A well-framed result whose bytes do not decode as the result type.
    CHECK_THROWS_AS(pool.submit([]() -> std::vector<int> {
        const std::uint64_t count = std::uint64_t{1} << 61;
        std::byte message[sizeof(frame_header) + sizeof count];
        const auto h = frame_header::result(0).with_payload(sizeof count, false);
        std::memcpy(message, &h, sizeof h);
        std::memcpy(message + sizeof h, &count, sizeof count);
        ::send(tandem::detail::worker_channel_fd, message, sizeof message, 0);
        for (;;) ::pause();
    }).get(), tandem::codec_error);
    // Garbage.
    CHECK_THROWS_AS(pool.submit([] {
        ::send(tandem::detail::worker_channel_fd, "GET / HTTP/1.1\r\n", 16, 0);
        for (;;) ::pause();
    }).get(), tandem::codec_error);
    CHECK(pool.submit(add, 5, 5).get() == 10);
}

TEST_CASE("no zombie or orphan is left after the pool is destroyed", "[process_pool]") {
    std::vector<pid_t> pids;
    pid_t zygote = 0;
    {
        tandem::process_pool pool({.workers = 3});
        for (int i = 0; i < 6; ++i) CHECK(pool.submit(add, i, 0).get() == i);
        pool.wait_ready();
        pids = pool.worker_pids();
        zygote = pool.zygote_pid();
        CHECK(pids.size() == 3);
        CHECK(!children_of(zygote).empty());
    }
    for (pid_t pid : pids) CHECK(process_gone(pid)); // reaped, not zombies
    CHECK(children_of(zygote).empty());
}

TEST_CASE("workers inherit no descriptor but their channel", "[process_pool]") {
    // A listening socket opened before the pool (so before the zygote's fork, when this test
    // runs in its own process) must not leak into the workers.
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listener >= 0);
    ::listen(listener, 1);
    tandem::process_pool pool({.workers = 1});
    const std::vector<int> fds = pool.submit([] {
        std::vector<int> open;
        DIR* dir = ::opendir("/proc/self/fd");
        while (dirent* e = ::readdir(dir))
            if (e->d_name[0] != '.' && std::atoi(e->d_name) != ::dirfd(dir)) open.push_back(std::atoi(e->d_name));
        ::closedir(dir);
        std::sort(open.begin(), open.end());
        return open;
    }).get();
    CHECK(fds == std::vector<int>{0, 1, 2, tandem::detail::worker_channel_fd});
    ::close(listener);
}

TEST_CASE("graceful shutdown finishes running jobs and cancels queued ones while shutdown_now kills them", "[process_pool]") {
    beacon started;
    {
        tandem::process_pool pool({.workers = 1});
        auto running = pool.submit([](int port) {
            announce(port);
            ::usleep(200'000);
            return 1;
        }, started.port());
        auto queued = pool.submit(add, 1, 1);
        (void)started.wait();
        pool.shutdown();
        CHECK(running.get() == 1);
        CHECK_THROWS_AS(queued.get(), tandem::cancelled);
        CHECK_THROWS_AS(pool.submit(add, 1, 1), std::logic_error);
    }
    {
        tandem::process_pool pool({.workers = 1});
        auto running = pool.submit(hang, started.port());
        const pid_t pid = started.wait();
        const auto start = std::chrono::steady_clock::now();
        pool.shutdown_now();
        CHECK_THROWS_AS(running.get(), tandem::cancelled);
        CHECK(std::chrono::steady_clock::now() - start < 10s);
        CHECK(process_gone(pid));
    }
}

TEST_CASE("a bounded queue parks awaiters and blocks submitters and loses nothing", "[process_pool]") {
    tandem::process_pool pool({.workers = 1, .max_queued = 2});
    tandem::event_loop loop;
    loop.run([&]() -> tandem::task<> {
        std::vector<tandem::task<int>> jobs;
        for (int i = 0; i < 50; ++i) jobs.push_back(pool.run(add, i, 0));
        std::vector<tandem::join_handle<int>> started;
        for (auto& j : jobs) started.push_back(tandem::spawn(std::move(j)));
        co_await tandem::sleep_for(0ms);
        CHECK(pool.queued() <= 2);
        int sum = 0;
        for (auto& h : started) sum += co_await h;
        CHECK(sum == 49 * 50 / 2);
    }());
    std::vector<std::thread> threads;
    std::atomic<int> total{0};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 25; ++i) total += pool.submit(add, i, 0).get();
        });
    for (auto& t : threads) t.join();
    CHECK(total == 4 * (24 * 25 / 2));
}

TEST_CASE("a job may use a process pool of its own", "[process_pool]") {
    tandem::process_pool pool({.workers = 1});
    // The worker is single-threaded, so the nested pool forks a zygote of its own.
    const int sum = pool.submit([](int n) {
        tandem::process_pool inner({.workers = 2});
        int total = 0;
        for (int i = 0; i < n; ++i) total += inner.submit(add, i, 1).get();
        return total;
    }, 10).get();
    CHECK(sum == 55);
    CHECK(pool.submit(add, 1, 2).get() == 3);
}

TEST_CASE("creating the first pool in a process that already runs threads is a clear error", "[process_pool]") {
    // In a child process, so this process's threads and zygote are not involved.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        std::thread other([] { ::usleep(300'000); });
        int code = 0;
        try {
            tandem::detail::zygote::check_single_threaded(false);
            code = 1;
        } catch (const std::logic_error& e) {
            if (std::string(e.what()).find("before this process starts threads") == std::string::npos) code = 2;
        }
        try {
            tandem::detail::zygote::check_single_threaded(true); // the explicit opt-in
        } catch (...) {
            code = 3;
        }
        other.join();
        std::_Exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

// ---- regression tests for the defects of issue 13 ------------------------------------------

namespace {

/// Shared memory between the test and its workers, by path (the zygote may be older than
/// this test, so an anonymous mapping would not reach the workers): per job, the pid that
/// started it and whether it finished.
struct job_track {
    std::int32_t started_by;
    std::int32_t finished;
};
constexpr int tracked_jobs = 600;

job_track* map_tracks(const std::string& path) {
    static std::string mapped_path;
    static job_track* tracks = nullptr;
    if (tracks && mapped_path == path) return tracks;
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + path);
    void* p = ::mmap(nullptr, sizeof(job_track) * tracked_jobs, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw std::runtime_error("cannot map " + path);
    mapped_path = path;
    tracks = static_cast<job_track*>(p);
    return tracks;
}

/// The jobs' shared record, in a file the workers map (tracked_job) and this process reads.
class job_tracks {
public:
    job_tracks() {
        const int fd = ::mkstemp(m_path);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, bytes) == 0);
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        REQUIRE(p != MAP_FAILED);
        m_tracks = static_cast<job_track*>(p);
    }
    job_tracks(const job_tracks&) = delete;
    job_tracks& operator=(const job_tracks&) = delete;
    ~job_tracks() {
        ::munmap(m_tracks, bytes);
        ::unlink(m_path);
    }
    std::string path() const { return m_path; }
    pid_t started_by(int k) const { return std::atomic_ref<std::int32_t>(m_tracks[k].started_by).load(); }
    bool finished(int k) const { return std::atomic_ref<std::int32_t>(m_tracks[k].finished).load() != 0; }

private:
    static constexpr std::size_t bytes = sizeof(job_track) * tracked_jobs;
    char m_path[32] = "/tmp/tandem-track-XXXXXX";
    job_track* m_tracks = nullptr;
};

/// Marks job k started by this worker (its first act), spins ~200 µs, marks it finished.
int tracked_job(std::string path, int k) {
    job_track* t = map_tracks(path);
    std::atomic_ref<std::int32_t>(t[k].started_by).store(static_cast<std::int32_t>(::getpid()));
    const auto until = std::chrono::steady_clock::now() + 200us;
    while (std::chrono::steady_clock::now() < until) {
    }
    std::atomic_ref<std::int32_t>(t[k].finished).store(1);
    return k;
}

/// Runs `body` in a forked child (its own zygote, so killing that zygote spares this
/// process's); returns the child's exit code, or 100 + signal. A watchdog alarm turns a hang
/// into a failure.
template <class Body>
int in_child(Body body) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::alarm(40);
        int code = 99;
        try {
            code = body();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "child: %s\n", e.what());
        }
        std::_Exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

} // namespace

/// True if the process sleeps in recvmsg (so it took no message, and once SIGKILLed it
/// will run no instruction of its own again).
bool asleep_in_recvmsg(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto paren = line.rfind(')');
    if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'S') return false;
    std::ifstream sys("/proc/" + std::to_string(pid) + "/syscall");
    long nr = -1;
    sys >> nr;
    return nr == SYS_recvmsg;
}

TEST_CASE("workers killed while idle cost no job: only jobs that started on a killed worker fail", "[process_pool][crash][stress]") {
    const job_tracks tracks;
    const std::string path = tracks.path();

    // No polling between jobs: an idle worker sleeps in recvmsg, which the killer checks.
    tandem::process_pool pool({.workers = 3, .spin = 0us});
    pool.wait_ready();
    std::set<pid_t> killed;
    std::vector<std::pair<int, pid_t>> failures; // (job, the worker it died with)
    std::deque<std::pair<int, std::future<int>>> in_flight;
    auto settle_oldest = [&] {
        auto [k, f] = std::move(in_flight.front());
        in_flight.pop_front();
        try {
            const int got = f.get();
            CHECK(got == k);
        } catch (const tandem::worker_crashed& e) {
            failures.emplace_back(k, e.pid());
        }
    };
    // Kills a worker that is truly idle: every job sent so far has started somewhere, none
    // is queued (so the pool sends nothing on its own), and the victim runs none of ours and
    // sleeps in recvmsg. The next job is sent at once, before the pool can have heard of the
    // death: it must not fail for it.
    auto kill_an_idle_worker = [&] {
        const auto give_up = std::chrono::steady_clock::now() + 5s;
        while (std::chrono::steady_clock::now() < give_up) {
            bool settled = pool.queued() == 0;
            for (auto& [k, f] : in_flight) settled = settled && tracks.started_by(k) != 0;
            if (!settled) {
                std::this_thread::yield();
                continue;
            }
            for (pid_t pid : pool.worker_pids()) {
                bool busy = killed.count(pid) != 0;
                for (auto& [k, f] : in_flight) busy = busy || (tracks.started_by(k) == pid && !tracks.finished(k));
                if (busy || !asleep_in_recvmsg(pid)) continue;
                killed.insert(pid);
                ::kill(pid, SIGKILL);
                return;
            }
            std::this_thread::yield();
        }
    };
    std::mt19937 rng(13);
    for (int k = 0; k < tracked_jobs; ++k) {
        if (k % 4 == 0 && rng() % 2 == 0) kill_an_idle_worker();
        in_flight.emplace_back(k, pool.submit(tracked_job, path, k));
        if (in_flight.size() == 2) settle_oldest();
    }
    while (!in_flight.empty()) settle_oldest();

    WARN(killed.size() << " idle workers killed, " << failures.size() << " jobs failed");
    CHECK(killed.size() >= 20);
    for (auto [k, pid] : failures) {
        INFO("job " << k << " failed with worker " << pid);
        CHECK(killed.count(pid) == 1);
        CHECK(tracks.started_by(k) == pid); // it had started there: not an innocent job
    }
    CHECK(failures.empty()); // and by construction no job ran on a worker we killed
}

// A reply whose decoding, in the pool's dispatcher thread, can be held: it keeps the
// dispatcher busy while another worker finishes a job and dies.
struct held_reply {
    int value = 0;
};
std::atomic<bool> hold_decoding{false};
std::atomic<bool> decoding_held{false};

template <>
struct tandem::codec<held_reply> {
    static void encode(encoder& out, const held_reply& r) { out.write(&r.value, sizeof r.value); }
    static held_reply decode(decoder& in) {
        held_reply r;
        in.read(&r.value, sizeof r.value);
        if (hold_decoding.load()) {
            decoding_held = true;
            decoding_held.notify_all();
            hold_decoding.wait(true);
        }
        return r;
    }
};

namespace {
held_reply make_held_reply() { return {7}; }
} // namespace

// Found by the CI's poll() stage: a worker's exit report and its last reply can be readable
// at once, and the report was read first, so a job that had finished failed as crashed.
TEST_CASE("a worker that dies after answering does not fail the job it answered", "[process_pool][crash]") {
    const job_tracks tracks;
    const std::string path = tracks.path();

    tandem::process_pool pool({.workers = 2, .spin = 0us});
    pool.wait_ready();
    for (int round = 0; round < 5; ++round) {
        // The dispatcher decodes this reply and stays there until released.
        hold_decoding = true;
        decoding_held = false;
        auto held = pool.submit(make_held_reply);
        decoding_held.wait(false);

        // The other worker takes job `round`, answers it, and is killed while the dispatcher
        // is busy, so its answer and its exit report wait together.
        auto answered = pool.submit(tracked_job, path, round);
        const auto give_up = std::chrono::steady_clock::now() + 10s;
        while (!(tracks.finished(round) && asleep_in_recvmsg(tracks.started_by(round))) && std::chrono::steady_clock::now() < give_up)
            std::this_thread::yield();
        REQUIRE(tracks.finished(round));
        const pid_t worker = tracks.started_by(round);
        ::kill(worker, SIGKILL);
        // Reaped by the zygote, which then writes its report: give it a moment to.
        while (::kill(worker, 0) == 0 && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
        const auto report_sent = std::chrono::steady_clock::now() + 20ms;
        while (std::chrono::steady_clock::now() < report_sent) std::this_thread::yield();

        hold_decoding = false;
        hold_decoding.notify_all();
        CHECK(held.get().value == 7);
        int got = -1;
        CHECK_NOTHROW(got = answered.get());
        CHECK(got == round);
        // Its replacement, before the next round: a job sent to the dead worker would wait
        // for a dispatcher that this test holds.
        auto pids = pool.worker_pids();
        while (std::find(pids.begin(), pids.end(), worker) != pids.end() && std::chrono::steady_clock::now() < give_up) {
            std::this_thread::yield();
            pids = pool.worker_pids();
        }
        pool.wait_ready();
    }
}

// The zygote's death, like a worker's exit report, can be read before a dead worker's
// last reply: the poll() reactor handed the dispatcher the zygote's pidfd first and the
// answered job failed as crashed.
TEST_CASE("a job answered just before the zygote died is not failed", "[process_pool][zygote]") {
    const int code = in_child([]() -> int {
        const job_tracks tracks;
        const std::string path = tracks.path();
        tandem::process_pool pool({.workers = 2, .spin = 0us});
        pool.wait_ready();
        const auto zygote = tandem::process::pidfd::open(pool.zygote_pid());
        // The dispatcher decodes this reply and stays there until released.
        hold_decoding = true;
        decoding_held = false;
        auto held = pool.submit(make_held_reply);
        decoding_held.wait(false);
        // The other worker answers, then the zygote dies (and its workers with it) while
        // the dispatcher is busy: the answer and the zygote's death wait together.
        auto answered = pool.submit(tracked_job, path, 0);
        const auto give_up = std::chrono::steady_clock::now() + 10s;
        while (!(tracks.finished(0) && asleep_in_recvmsg(tracks.started_by(0))) && std::chrono::steady_clock::now() < give_up)
            std::this_thread::yield();
        if (!tracks.finished(0)) return 5;
        const auto worker = tandem::process::pidfd::open(tracks.started_by(0));
        ::kill(pool.zygote_pid(), SIGKILL);
        for (const int fd : {zygote.fd(), worker.fd()}) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 10'000) != 1) return 6;
        }
        hold_decoding = false;
        hold_decoding.notify_all();
        if (held.get().value != 7) return 2;
        try {
            if (answered.get() != 0) return 3;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "the answered job failed: %s\n", e.what());
            return 1;
        }
        return 0;
    });
    CHECK(code == 0);
}

TEST_CASE("a job sent to a worker that died before taking it runs on another worker", "[process_pool][crash]") {
    tandem::process_pool pool({.workers = 1});
    pool.wait_ready();
    for (int round = 0; round < 20; ++round) {
        const std::vector<pid_t> pids = pool.worker_pids();
        REQUIRE(pids.size() == 1);
        ::kill(pids[0], SIGKILL);
        // Sent at once, most likely before the pool heard of the death: the job must not
        // pay for it.
        CHECK(pool.submit(add, round, 1).get() == round + 1);
        pool.wait_ready();
    }
}

TEST_CASE("parked queued and running jobs all fail promptly when the zygote dies", "[process_pool][zygote]") {
    const int code = in_child([]() -> int {
        beacon b;
        tandem::process_pool pool({.workers = 1, .max_queued = 1});
        tandem::event_loop loop;
        int result = 0;
        loop.run([&]() -> tandem::task<> {
            auto running = tandem::spawn(pool.run(hang, b.port()));
            auto queued = tandem::spawn(pool.run(add, 1, 1));
            auto parked1 = tandem::spawn(pool.run(add, 2, 2));
            auto parked2 = tandem::spawn(pool.run(add, 3, 3));
            co_await tandem::yield();
            b.wait(); // the first job runs in its worker
            if (pool.queued() != 1) result = 1;
            ::kill(pool.zygote_pid(), SIGKILL);
            try {
                co_await running;
                result = 2;
            } catch (const tandem::worker_crashed&) {
            }
            for (auto* h : {&queued, &parked1, &parked2}) {
                try {
                    co_await *h;
                    result = 3;
                } catch (const std::runtime_error& e) {
                    if (std::string(e.what()).find("zygote died") == std::string::npos) result = 4;
                }
            }
        }());
        return result;
    });
    CHECK(code == 0);
}

TEST_CASE("the first pool built after the zygote died gets a new zygote", "[process_pool][zygote]") {
    if (tandem::process::runtime_threads > 0) {
        // TSan's runtime leaves threads of its own behind in a forked child (3 counted here
        // after the pool's dispatcher was joined), so "single-threaded again" is not
        // observable under it; the other presets run this test.
        WARN("skipped under ThreadSanitizer: its runtime threads hide the single-threaded state");
        return;
    }
    const int code = in_child([]() -> int {
        pid_t first = 0;
        {
            tandem::process_pool pool({.workers = 1});
            if (pool.submit(add, 1, 1).get() != 2) return 1;
            first = pool.zygote_pid();
            ::kill(first, SIGKILL);
            const tandem::process::pidfd watch = tandem::process::pidfd::open(first);
            pollfd p{watch.fd(), POLLIN, 0};
            if (::poll(&p, 1, 10'000) != 1) return 2;
            // A pool built while this one's dispatcher thread runs cannot fork a new zygote
            // safely: a clear error that says why.
            try {
                tandem::process_pool second({.workers = 1});
                return 3;
            } catch (const std::logic_error& e) {
                if (std::string(e.what()).find("died") == std::string::npos) return 4;
            }
        }
        tandem::process_pool pool({.workers = 1}); // single-threaded again: a fresh zygote
        if (pool.zygote_pid() == first) return 5;
        if (pool.submit(add, 2, 2).get() != 4) return 6;
        return 0;
    });
    CHECK(code == 0);
}

TEST_CASE("a thousand workers start without deadlock and all serve", "[process_pool][limits]") {
    tandem::process_pool pool({.workers = 1000, .spin = 0us});
    pool.wait_ready();
    CHECK(pool.worker_pids().size() == 1000);
    std::vector<std::future<int>> results;
    for (int i = 0; i < 2000; ++i) results.push_back(pool.submit(add, i, 1));
    long sum = 0;
    for (auto& f : results) sum += f.get();
    CHECK(sum == 2000L * 2001 / 2);
}

TEST_CASE("more workers than descriptors is a clear error that names the limit", "[process_pool][limits]") {
    const int code = in_child([]() -> int {
        const rlimit small{64, 64};
        if (::setrlimit(RLIMIT_NOFILE, &small) != 0) return 1;
        try {
            tandem::process_pool pool({.workers = 100});
            return 2;
        } catch (const std::system_error& e) {
            const std::string what = e.what();
            if (what.find("RLIMIT_NOFILE") == std::string::npos || what.find("100 workers") == std::string::npos) return 3;
        }
        return 0;
    });
    CHECK(code == 0);
}

namespace {

int identity(int x) { return x; }
int abort_job(int) { std::abort(); }

/// A job that forges its worker's reply: a result frame for some job, then its own answer.
int forge_reply(int x) {
    (void)tandem::detail::outgoing_payload::of(12345).send(tandem::detail::worker_channel_fd,
                                                           tandem::detail::frame_header::result(0));
    return x;
}

/// A job that forks and returns in both processes: two workers now answer on one channel.
int fork_and_return(int x) {
    (void)::fork();
    return x;
}

int close_every_descriptor(int x) {
    for (int fd = 0; fd < 1000; ++fd) ::close(fd);
    return x;
}
int stop_self(int x) {
    ::raise(SIGSTOP);
    return x;
}
int throw_int(int) { throw 42; }

} // namespace

TEST_CASE("a timeout of milliseconds max means no timeout rather than an overflow", "[process_pool][timeout]") {
    tandem::process_pool pool({.workers = 1});
    CHECK(pool.submit(tandem::job_options{.timeout = std::chrono::milliseconds::max()}, add, 1, 2).get() == 3);
    tandem::process_pool forever({.workers = 1, .job_timeout = std::chrono::milliseconds::max()});
    CHECK(forever.submit(add, 1, 2).get() == 3);
    // A negative limit (a budget already spent) is refused, not taken as "no limit".
    CHECK_THROWS_AS(pool.submit(tandem::job_options{.timeout = -1ms}, add, 1, 2), std::invalid_argument);
    CHECK_THROWS_AS(tandem::process_pool({.workers = 1, .job_timeout = -1ms}), std::invalid_argument);
    CHECK(pool.submit(add, 2, 2).get() == 4);
}

TEST_CASE("a task still awaiting a destroyed process pool is destroyed with its loop without touching the pool",
          "[process_pool][lifecycle]") {
    // The pool lives in storage scribbled over once it is destroyed: an awaiter that reached
    // into the dead pool (its mutex) would fail loudly instead of by chance.
    alignas(tandem::process_pool) unsigned char storage[sizeof(tandem::process_pool)];
    beacon b;
    {
        tandem::event_loop loop;
        auto* pool = new (storage) tandem::process_pool(tandem::process_pool_options{.workers = 1});
        loop.run([&]() -> tandem::task<> {
            tandem::spawn(pool->run(hang, b.port())).detach();
            tandem::spawn(pool->run(add, 1, 2)).detach(); // queued behind it
            co_await tandem::yield();                     // both jobs are with the pool
        }());
        b.wait();
        pool->shutdown_now(); // both fail with cancelled: posted to the loop, not resumed
        pool->~process_pool();
        std::memset(storage, 0xff, sizeof storage);
    } // the loop destroys both suspended tasks
    SUCCEED();
}

TEST_CASE("a reply to a job the worker is not running costs that worker and answers no other job",
          "[process_pool][crash]") {
    tandem::process_pool pool({.workers = 1});
    tandem::event_loop loop;
    loop.run([&]() -> tandem::task<> {
        for (int round = 0; round < 10; ++round) {
            // The second job waits in the queue, so it would be handed the forged or the
            // forked copy's reply if the pool took any reply as its worker's answer.
            auto forged = tandem::spawn(pool.run(forge_reply, 7));
            auto forked = tandem::spawn(pool.run(fork_and_return, 8));
            auto honest = tandem::spawn(pool.run(identity, round));
            for (auto* h : {&forged, &forked}) {
                try {
                    const int got = co_await *h;
                    CHECK((got == 7 || got == 8));
                } catch (const tandem::detail::protocol_error&) {
                } catch (const tandem::worker_crashed&) {
                }
            }
            int got = -1;
            try {
                got = co_await honest;
            } catch (const tandem::detail::protocol_error&) { // it was on the worker that broke
                got = round;
            }
            CHECK(got == round);
        }
    }());
}

TEST_CASE("shutdown and shutdown_now from two threads at once", "[process_pool]") {
    for (int round = 0; round < 10; ++round) {
        tandem::process_pool pool({.workers = 2});
        std::thread other([&] { pool.shutdown(); });
        pool.shutdown_now();
        other.join();
    }
}

TEST_CASE("hostile jobs: closing every descriptor, SIGSTOP, a non-std exception", "[process_pool][crash]") {
    tandem::process_pool pool({.workers = 1});
    CHECK_THROWS_AS(pool.submit(close_every_descriptor, 1).get(), tandem::worker_crashed);
    CHECK_THROWS_AS(pool.submit(throw_int, 1).get(), tandem::remote_error);
    CHECK_THROWS_AS(pool.submit(tandem::job_options{.timeout = 200ms}, stop_self, 1).get(), tandem::timed_out);
    CHECK(pool.submit(add, 1, 1).get() == 2);
}

TEST_CASE("many pools with killed workers and crashed jobs leak no descriptor and no child", "[process_pool][crash]") {
    { tandem::process_pool warm({.workers = 1}); } // the zygote's descriptors stay
    const auto before = tandem::process::open_descriptor_count();
    pid_t zygote = 0;
    for (int round = 0; round < 10; ++round) {
        tandem::process_pool pool({.workers = 2});
        zygote = pool.zygote_pid();
        pool.wait_ready();
        ::kill(pool.worker_pids()[0], SIGKILL);
        CHECK(pool.submit(add, 1, 1).get() == 2);
        CHECK_THROWS_AS(pool.submit(abort_job, 0).get(), tandem::worker_crashed);
    }
    CHECK(tandem::process::open_descriptor_count() == before);
    CHECK(children_of(zygote).empty()); // every worker reaped
}

TEST_CASE("a program that ignores SIGCHLD or blocks SIGTERM still hears of its workers' deaths", "[process_pool][crash]") {
    // A daemon's habits (SIGCHLD ignored so no zombie is left, signals blocked for a
    // signalfd) must not reach the zygote: with SIGCHLD ignored the kernel would reap the
    // workers itself, their deaths would never be reported, and a crashed job would hang.
    const int code = in_child([]() -> int {
        ::signal(SIGCHLD, SIG_IGN);
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        ::sigprocmask(SIG_BLOCK, &term, nullptr);
        tandem::process_pool pool({.workers = 1});
        try {
            (void)pool.submit(abort_job, 0).get();
            return 1;
        } catch (const tandem::worker_crashed& e) {
            if (e.signal() != SIGABRT) return 2;
        }
        if (pool.submit(add, 2, 3).get() != 5) return 3;
        // The zygote obeys SIGTERM (an operator's kill), and its pool hears of it.
        const tandem::process::pidfd watch = tandem::process::pidfd::open(pool.zygote_pid());
        ::kill(pool.zygote_pid(), SIGTERM);
        pollfd p{watch.fd(), POLLIN, 0};
        if (::poll(&p, 1, 10'000) != 1) return 4;
        return 0;
    });
    CHECK(code == 0);
}

TEST_CASE("a forked copy of the program can neither use nor stop its parent's pool", "[process_pool][fork]") {
    tandem::process_pool pool({.workers = 2});
    pool.wait_ready();
    const std::vector<pid_t> before = pool.worker_pids();
    const int code = in_child([&]() -> int {
        try {
            (void)pool.submit(add, 1, 1); // would reach a parent's worker
            return 1;
        } catch (const std::logic_error&) {
        }
        pool.~process_pool(); // what exit() does to a static pool: must not quit the parent's workers
        return 0;
    });
    CHECK(code == 0);
    CHECK(pool.submit(add, 2, 2).get() == 4);
    CHECK(pool.worker_pids() == before);
    CHECK(pool.workers_started() == 2);
}

TEST_CASE("threads submitting through a bounded queue while workers and then the zygote are killed all get an answer",
          "[process_pool][crash][stress]") {
    // Every submit returns and every future resolves (in_child's alarm catches a hang): with
    // the right value, worker_crashed, or once the zygote is gone its error. Never another job's
    // value, never silence.
    for (unsigned seed : {1u, 2u}) {
        INFO("seed " << seed);
        const int code = in_child([seed]() -> int {
            tandem::process_pool pool({.workers = 3, .max_queued = 4});
            std::atomic<bool> done{false};
            std::atomic<int> bad{0}, answered{0};
            std::thread killer([&] {
                std::mt19937 rng(seed);
                int last = 0;
                bool zygote_killed = false;
                while (!done) {
                    const int now = answered;
                    if (now >= last + 3) { // a worker every few answers, idle or busy
                        last = now;
                        const auto pids = pool.worker_pids();
                        if (!pids.empty()) ::kill(pids[rng() % pids.size()], SIGKILL);
                    }
                    if (!zygote_killed && now >= 400) {
                        zygote_killed = true;
                        ::kill(pool.zygote_pid(), SIGKILL);
                    }
                    std::this_thread::yield();
                }
            });
            std::vector<std::thread> submitters;
            for (int t = 0; t < 3; ++t)
                submitters.emplace_back([&, t] {
                    for (int i = 0; i < 250; ++i) {
                        try {
                            if (pool.submit(add, i, t).get() != i + t) ++bad;
                        } catch (const tandem::worker_crashed&) {
                        } catch (const std::runtime_error& e) {
                            if (std::string(e.what()).find("zygote") == std::string::npos) ++bad;
                        }
                        ++answered;
                    }
                });
            for (auto& t : submitters) t.join();
            done = true;
            killer.join();
            return bad == 0 && answered == 750 ? 0 : 1;
        });
        CHECK(code == 0);
    }
}

TEST_CASE("submitters racing shutdown get a future that resolves or a logic_error", "[process_pool]") {
    for (int round = 0; round < 5; ++round) {
        tandem::process_pool pool({.workers = 2, .max_queued = 2});
        std::atomic<int> bad{0};
        std::vector<std::thread> submitters;
        for (int t = 0; t < 3; ++t)
            submitters.emplace_back([&, t] {
                for (int i = 0; i < 200; ++i) {
                    try {
                        auto f = pool.submit(add, i, t);
                        try {
                            if (f.get() != i + t) ++bad;
                        } catch (const tandem::cancelled&) {
                        }
                    } catch (const std::logic_error&) { // shutting down: refused
                        return;
                    }
                }
            });
        if (round % 2) {
            pool.shutdown();
        } else {
            pool.shutdown_now();
        }
        for (auto& t : submitters) t.join();
        CHECK(bad == 0);
    }
}

namespace {
/// True if the task ended with tandem::cancelled (co_await kept out of CHECK).
tandem::task<bool> ends_cancelled(tandem::join_handle<int>& h) {
    try {
        (void)co_await h;
    } catch (const tandem::cancelled&) {
        co_return true;
    }
    co_return false;
}
} // namespace

TEST_CASE("cancelling parked, queued and running jobs: each leaves at once and the queue stays right", "[process_pool][cancel]") {
    beacon b;
    tandem::process_pool pool({.workers = 1, .max_queued = 1});
    tandem::event_loop loop;
    loop.run([&]() -> tandem::task<> {
        auto running = tandem::spawn(pool.run(hang, b.port()));
        auto queued = tandem::spawn(pool.run(identity, 1));
        auto parked = tandem::spawn(pool.run(identity, 2));
        auto parked_too = tandem::spawn(pool.run(identity, 3));
        co_await tandem::yield();
        b.wait(); // the first job runs in its worker
        CHECK(pool.queued() == 1);
        parked.cancel(); // parked: withdrawn, never runs, the queue's place is not freed twice
        const bool parked_cancelled = co_await ends_cancelled(parked);
        CHECK(parked_cancelled);
        CHECK(pool.queued() == 1);
        queued.cancel(); // queued: withdrawn; the parked one moves in
        const bool queued_cancelled = co_await ends_cancelled(queued);
        CHECK(queued_cancelled);
        CHECK(pool.queued() == 1);
        running.cancel(); // running: its worker is killed, the next job runs on a new one
        const bool running_cancelled = co_await ends_cancelled(running);
        CHECK(running_cancelled);
        const int last = co_await parked_too;
        CHECK(last == 3);
        CHECK(pool.queued() == 0);
        const int again = co_await pool.run(identity, 4);
        CHECK(again == 4);
    }());
}

namespace {
/// Forks; the copy returns only once the worker has answered and waits for its next message,
/// so a copy that spoke on the channel would answer late, or take the worker's next message.
int fork_and_return_late(int x) {
    const pid_t worker = ::getpid();
    if (::fork() == 0)
        while (!asleep_in_recvmsg(worker) && ::kill(worker, 0) == 0) std::this_thread::yield();
    return x;
}
} // namespace

TEST_CASE("a job that forks leaves one reader on the channel: its copy neither answers nor takes the quit",
          "[process_pool][crash]") {
    const int code = in_child([]() -> int {
        for (int round = 0; round < 8; ++round) {
            tandem::process_pool pool({.workers = 1});
            if (pool.submit(fork_and_return_late, round).get() != round) return 1;
            if (pool.submit(add, round, 1).get() != round + 1) return 2;
            pool.shutdown(); // the quit must reach the worker (in_child's alarm catches a hang)
        }
        return 0;
    });
    CHECK(code == 0);
}

TEST_CASE("the zygote is one per program across translation units", "[process_pool]") {
    // The zygote lives in a class template's static (bench/README.md, "Include cost");
    // other_tu.cpp is a second translation unit that includes process_pool.hpp.
    tandem::process_pool pool(1);
    const void* here = tandem::detail::zygote::instance(true).get();
    CHECK(other_tu::zygote() == here);
    CHECK(pool.submit([](int x) { return x + 1; }, 41).get() == 42);
}

// ---- adversarial: workers dying at every point of a job's life ------------------------------

namespace {

// A worker that exits while a thread of its own runs (chaos_die_answered's killer) would
// sleep a second in ThreadSanitizer's exit, for the reports of threads that are not there:
// a recycled worker would hold its slot that long.
#if defined(__SANITIZE_THREAD__)
#define TANDEM_TEST_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TANDEM_TEST_UNDER_TSAN 1
#endif
#endif
#ifdef TANDEM_TEST_UNDER_TSAN
extern "C" const char* __tsan_default_options() { return "atexit_sleep_ms=0"; }
#endif

/// The seed of a property test: TANDEM_TEST_SEED to replay one, a random one otherwise.
std::uint32_t chaos_seed() {
    if (const char* fixed = std::getenv("TANDEM_TEST_SEED")) return static_cast<std::uint32_t>(std::strtoul(fixed, nullptr, 10));
    return std::random_device{}();
}

/// A reply that can refuse to decode in the pool (poisoned), and that may be large enough
/// to travel in a memfd.
struct chaos_reply {
    int k = 0;
    bool poisoned = false;
    std::string bytes;
};

enum chaos_mode : int {
    chaos_plain,         // answers
    chaos_die_answered,  // answers, then dies once back waiting for the next job
    chaos_die_running,   // SIGKILLs itself mid-job
    chaos_garbage,       // writes garbage on its channel, then exits
    chaos_poison,        // answers with a reply that does not decode
    chaos_die_any_time,  // answers, with a SIGALRM due at a random moment after (or before)
    chaos_near_deadline, // runs about as long as its timeout
    chaos_modes
};

/// True when the thread `tid` of this process sleeps in recvmsg.
bool thread_waits_in_recvmsg(pid_t tid) {
    const std::string dir = "/proc/self/task/" + std::to_string(tid);
    std::ifstream stat(dir + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto paren = line.rfind(')');
    if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'S') return false;
    std::ifstream sys(dir + "/syscall");
    long nr = -1;
    sys >> nr;
    return nr == SYS_recvmsg;
}

/// Set in a worker once a job has arranged its death: a later job there may die with it.
std::atomic<bool> chaos_doomed{false};

/// Records in `path` who started job k, in `doomed_path` whether its worker was doomed then.
chaos_reply chaos_job(std::string path, std::string doomed_path, int k, int mode, std::size_t size, int delay_us) {
    // Doomed first: a worker killed between the two marks leaves no start on record.
    if (chaos_doomed.load()) {
        // map_tracks remembers one file: the doomed record is read through its own mapping.
        const int fd = ::open(doomed_path.c_str(), O_RDWR | O_CLOEXEC);
        void* p = ::mmap(nullptr, sizeof(job_track) * tracked_jobs, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        std::atomic_ref<std::int32_t>(static_cast<job_track*>(p)[k].started_by).store(1);
        ::munmap(p, sizeof(job_track) * tracked_jobs);
    }
    job_track* t = map_tracks(path);
    std::atomic_ref<std::int32_t>(t[k].started_by).store(static_cast<std::int32_t>(::getpid()));
    switch (mode) {
    case chaos_die_answered:
        chaos_doomed = true;
        // A thread of the worker kills it once its main thread, reply sent, waits for the
        // next job (it may take that job meanwhile: then that one dies with it).
        std::thread([main = ::getpid()] {
            while (!thread_waits_in_recvmsg(main)) std::this_thread::yield();
            ::kill(main, SIGKILL);
        }).detach();
        break;
    case chaos_die_running:
        ::raise(SIGKILL);
        break;
    case chaos_garbage:
        ::send(tandem::detail::worker_channel_fd, "\x54\x4e\x44\x4d garbage", 12, 0);
        std::_Exit(3);
    case chaos_die_any_time: {
        chaos_doomed = true;
        itimerval in{};
        in.it_value.tv_usec = delay_us;
        ::setitimer(ITIMER_REAL, &in, nullptr); // SIGALRM's default action ends the worker
        break;
    }
    case chaos_near_deadline: {
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(delay_us);
        while (std::chrono::steady_clock::now() < until) {
        }
        break;
    }
    default:
        break;
    }
    std::atomic_ref<std::int32_t>(t[k].finished).store(1);
    return {k, mode == chaos_poison, std::string(size, static_cast<char>('a' + k % 26))};
}

} // namespace

template <>
struct tandem::codec<chaos_reply> {
    static void encode(encoder& out, const chaos_reply& r) {
        out.write(&r.k, sizeof r.k);
        const std::uint8_t poisoned = r.poisoned;
        out.write(&poisoned, 1);
        codec<std::string>::encode(out, r.bytes);
    }
    static chaos_reply decode(decoder& in) {
        chaos_reply r;
        in.read(&r.k, sizeof r.k);
        std::uint8_t poisoned = 0;
        in.read(&poisoned, 1);
        if (poisoned) throw tandem::codec_error("tandem test: a poisoned reply");
        r.bytes = codec<std::string>::decode(in);
        return r;
    }
};

namespace {
/// Whether job k deserved to fail as crashed with worker `died`: it started there (or was
/// taken and killed before its first line), and either it killed itself or an earlier job
/// on that worker had doomed it. A job answered before its worker died must never crash.
bool crash_deserved(const job_tracks& tracks, const job_tracks& doomed, int k, int mode, pid_t died) {
    const pid_t by = tracks.started_by(k);
    if (by == 0) return true;
    if (by != died) return false;
    return mode == chaos_die_running || mode == chaos_die_any_time || doomed.started_by(k) == 1;
}
} // namespace

// Every job's outcome is checked against what its worker did: a job fails as crashed only
// if it started on the worker that died, a job answered before its worker died succeeds,
// and nothing hangs. Submitters on two threads, a bounded queue, recycling and reply sizes
// around the channel's inline limit vary with the seed.
TEST_CASE("workers dying at any point of a job's life fail only the jobs they had started", "[process_pool][crash][stress]") {
    const job_tracks tracks, doomed;
    const std::string path = tracks.path(), doomed_path = doomed.path();
    const auto seed = chaos_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const std::size_t sizes[] = {0, 100, tandem::detail::max_inline - 64, tandem::detail::max_inline + 1, 200'000};
    const std::size_t recycle[] = {0, 0, 1, 3};
    const std::size_t bounds[] = {0, 2, 8};
    const std::chrono::microseconds spins[] = {0us, 50us};
    tandem::process_pool pool({.workers = 1 + rng() % 3,
                               .max_queued = bounds[rng() % 3],
                               .max_jobs_per_worker = recycle[rng() % 4],
                               .spin = spins[rng() % 2]});
    constexpr int jobs = 240;
    struct planned {
        int mode;
        std::size_t size;
        int delay_us;
    };
    std::vector<planned> plan;
    for (int k = 0; k < jobs; ++k)
        plan.push_back({static_cast<int>(rng() % chaos_modes), sizes[rng() % 5], static_cast<int>(rng() % 3000)});
    std::vector<std::future<chaos_reply>> futures(jobs);
    auto submit_from = [&](int first) {
        for (int k = first; k < jobs; k += 2) {
            const planned& p = plan[k];
            const tandem::job_options o{.timeout = p.mode == chaos_near_deadline ? 2ms : 10s};
            futures[k] = pool.submit(o, chaos_job, path, doomed_path, k, p.mode, p.size, p.delay_us);
        }
    };
    std::thread other(submit_from, 1);
    submit_from(0);
    other.join();

    int answered = 0, crashed = 0;
    for (int k = 0; k < jobs; ++k) {
        const planned& p = plan[k];
        INFO("job " << k << " mode " << p.mode << " size " << p.size << " delay " << p.delay_us);
        REQUIRE(futures[k].wait_for(20s) == std::future_status::ready);
        try {
            const chaos_reply r = futures[k].get();
            ++answered;
            CHECK(r.k == k);
            CHECK(r.bytes == std::string(p.size, static_cast<char>('a' + k % 26)));
            CHECK((p.mode == chaos_plain || p.mode == chaos_die_answered || p.mode == chaos_die_any_time ||
                   p.mode == chaos_near_deadline));
        } catch (const tandem::worker_crashed& e) {
            ++crashed;
            // Started on the worker that died (or taken by it and killed before the job's
            // first line). Only a job that kills itself, or one on a worker an earlier job
            // doomed, may crash: a job answered before its worker died must not fail.
            if (!crash_deserved(tracks, doomed, k, p.mode, e.pid())) {
                const pid_t by = tracks.started_by(k);
                std::string history;
                for (int j = 0; j < jobs; ++j)
                    if (tracks.started_by(j) == by)
                        history += " [" + std::to_string(j) + " mode " + std::to_string(plan[j].mode) + " fin " +
                                   std::to_string(tracks.finished(j)) + " doomed " + std::to_string(doomed.started_by(j)) + "]";
                FAIL_CHECK("crashed though it did not deserve to: " << e.what() << " jobs there:" << history);
            }
        } catch (const tandem::timed_out&) {
            CHECK(p.mode == chaos_near_deadline);
        } catch (const tandem::codec_error&) {
            CHECK((p.mode == chaos_garbage || p.mode == chaos_poison));
        }
    }
    WARN("seed " << seed << ": " << answered << " answered, " << crashed << " crashed, " << pool.workers_started()
                 << " workers started");
}

// Teardown at any moment of the chaos above: graceful, immediate or by the destructor,
// racing a submitter, with deaths and their reports still in flight. Every job gets an
// answer it deserves, nothing hangs, and every worker that ever ran a job is reaped.
TEST_CASE("a process pool torn down while its workers die answers every job and leaves no worker", "[process_pool][crash][stress]") {
    const job_tracks tracks, doomed;
    const std::string path = tracks.path(), doomed_path = doomed.path();
    const auto seed = chaos_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const std::size_t sizes[] = {8, tandem::detail::max_inline + 1};
    const int modes[] = {chaos_plain, chaos_die_answered, chaos_die_running, chaos_die_any_time, chaos_poison};
    int next = 0;
    for (int round = 0; round < 12 && next + 40 <= tracked_jobs; ++round) {
        const int first = next, jobs = 10 + static_cast<int>(rng() % 30), how = static_cast<int>(rng() % 3);
        const std::size_t bound = rng() % 2 ? 0 : 2;
        next += jobs;
        std::vector<int> mode(jobs);
        for (int& m : mode) m = modes[rng() % 5];
        std::vector<std::future<chaos_reply>> futures(jobs);
        int refused = 0;
        {
            std::optional<tandem::process_pool> pool(
                std::in_place, tandem::process_pool_options{.workers = 1 + rng() % 3, .max_queued = bound, .spin = 0us});
            pool->wait_ready();
            std::thread submitter([&] {
                for (int j = 0; j < jobs; ++j) {
                    try {
                        futures[j] = pool->submit(chaos_job, path, doomed_path, first + j, mode[j], sizes[j % 2],
                                                  static_cast<int>(j * 97 % 2000));
                    } catch (const std::logic_error&) {
                        ++refused; // submitted after the shutdown began
                    }
                }
            });
            const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 8000);
            while (std::chrono::steady_clock::now() < until) {
            }
            if (how == 0) pool->shutdown();
            if (how == 1) pool->shutdown_now();
            submitter.join();
            pool.reset();
        }
        for (int j = 0; j < jobs; ++j) {
            const int k = first + j;
            INFO("round " << round << " teardown " << how << " job " << k << " mode " << mode[j]);
            if (!futures[j].valid()) continue;
            REQUIRE(futures[j].wait_for(10s) == std::future_status::ready);
            try {
                const chaos_reply r = futures[j].get();
                CHECK(r.k == k);
                CHECK(r.bytes.size() == sizes[j % 2]);
            } catch (const tandem::worker_crashed& e) {
                INFO("started by " << tracks.started_by(k) << " died " << e.pid() << " doomed " << doomed.started_by(k));
                CHECK(crash_deserved(tracks, doomed, k, mode[j], e.pid()));
            } catch (const tandem::codec_error&) {
                CHECK(mode[j] == chaos_poison);
            } catch (const tandem::cancelled&) {
                CHECK((how != 0 || tracks.started_by(k) == 0)); // a graceful shutdown finishes what started
            }
        }
        // Destroyed means every worker was reaped: none of those that ran a job is left.
        for (int k = first; k < first + jobs; ++k) {
            const pid_t by = tracks.started_by(k);
            if (by > 0) CHECK((::kill(by, 0) != 0 && errno == ESRCH));
        }
        WARN("seed " << seed << " round " << round << " teardown " << how << ": " << refused << " refused");
    }
}

// Awaiters leave (cancel) at random moments while workers answer, die and are replaced:
// queued, parked, re-dispatched and running jobs are each taken back once, a job whose
// awaiter stayed gets the answer it deserves, and the pool still serves after.
TEST_CASE("awaiters leaving at random moments while workers die: each job ends once and rightly", "[process_pool][cancel][stress]") {
    const job_tracks tracks, doomed;
    const std::string path = tracks.path(), doomed_path = doomed.path();
    const auto seed = chaos_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const std::size_t sizes[] = {0, tandem::detail::max_inline + 1};
    const std::size_t bounds[] = {0, 2};
    const std::size_t recycle[] = {0, 2};
    const int modes[] = {chaos_plain, chaos_die_answered, chaos_die_running, chaos_die_any_time, chaos_near_deadline};
    tandem::process_pool pool({.workers = 1 + rng() % 3,
                               .max_queued = bounds[rng() % 2],
                               .max_jobs_per_worker = recycle[rng() % 2],
                               .spin = 0us});
    constexpr int jobs = 150;
    std::vector<int> mode(jobs), delay(jobs);
    std::vector<bool> leave(jobs);
    for (int k = 0; k < jobs; ++k) {
        mode[k] = modes[rng() % 5];
        delay[k] = static_cast<int>(rng() % 1500);
        leave[k] = rng() % 3 == 0;
    }
    std::vector<int> outcome(jobs, -1); // 0 answered, 1 crashed, 2 cancelled
    tandem::event_loop loop;
    loop.run([&]() -> tandem::task<> {
        std::vector<tandem::join_handle<chaos_reply>> handles;
        handles.reserve(jobs);
        for (int k = 0; k < jobs; ++k)
            handles.push_back(tandem::spawn(pool.run(chaos_job, path, doomed_path, k, mode[k], sizes[k % 2], delay[k])));
        for (int k = 0; k < jobs; ++k) {
            if (!leave[k]) continue;
            co_await tandem::sleep_for(std::chrono::microseconds(rng() % 400));
            handles[k].cancel();
        }
        for (int k = 0; k < jobs; ++k) {
            try {
                const chaos_reply r = co_await handles[k];
                outcome[k] = r.k == k && r.bytes.size() == sizes[k % 2] ? 0 : 9;
            } catch (const tandem::worker_crashed& e) {
                outcome[k] = crash_deserved(tracks, doomed, k, mode[k], e.pid()) ? 1 : 8;
            } catch (const tandem::cancelled&) {
                outcome[k] = leave[k] ? 2 : 7;
            }
        }
    }());
    int count[3] = {};
    for (int k = 0; k < jobs; ++k) {
        INFO("job " << k << " mode " << mode[k] << " left " << leave[k] << " outcome " << outcome[k]);
        CHECK((outcome[k] >= 0 && outcome[k] <= 2));
        if (outcome[k] >= 0 && outcome[k] <= 2) ++count[outcome[k]];
    }
    CHECK(pool.running() == 0);
    CHECK(pool.queued() == 0);
    CHECK(pool.submit(add, 2, 3).get() == 5);
    WARN("seed " << seed << ": " << count[0] << " answered, " << count[1] << " crashed, " << count[2] << " taken back, "
                 << pool.workers_started() << " workers started");
}

namespace {
/// Swaps the two levels of a map of maps, and says which worker did it.
std::pair<int, std::map<std::string, std::map<int, int>>> transpose(std::map<int, std::map<std::string, int>> m) {
    std::map<std::string, std::map<int, int>> out;
    for (const auto& [row, cells] : m)
        for (const auto& [column, value] : cells) out[column][row] = value;
    return {static_cast<int>(::getpid()), out};
}
} // namespace

TEST_CASE("forty pools alive at once, workers killed and pools destroyed in random order: each pool answers from its own workers",
          "[process_pool][zygote][stress]") {
    { tandem::process_pool warm({.workers = 1}); } // the zygote's descriptors stay
    const auto before = tandem::process::open_descriptor_count();
    const unsigned seed = std::random_device{}();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    constexpr int pools_alive = 40;
    std::vector<std::unique_ptr<tandem::process_pool>> pools;
    pid_t zygote = 0;
    for (int i = 0; i < pools_alive; ++i) {
        pools.push_back(std::make_unique<tandem::process_pool>(tandem::process_pool_options{.workers = 1 + static_cast<std::size_t>(i % 3)}));
        zygote = pools.back()->zygote_pid();
    }
    const std::map<int, std::map<std::string, int>> grid{{1, {{"a", 11}, {"b", 12}}}, {2, {{"a", 21}}}, {3, {}}};
    const std::map<std::string, std::map<int, int>> expected{{"a", {{1, 11}, {2, 21}}}, {"b", {{1, 12}}}};
    auto check_all = [&] {
        for (auto& pool : pools) {
            const auto [pid, result] = pool->submit(transpose, grid).get();
            CHECK(result == expected);
            const std::vector<pid_t> mine = pool->worker_pids();
            CHECK(std::find(mine.begin(), mine.end(), pid) != mine.end()); // its own worker, not another pool's
        }
    };
    check_all();
    while (!pools.empty()) {
        // Kill a few workers of random pools (the zygote reaps them and reports to the right pool)...
        for (int k = 0; k < 3; ++k) {
            auto& pool = *pools[rng() % pools.size()];
            pool.wait_ready();
            const std::vector<pid_t> pids = pool.worker_pids();
            if (!pids.empty()) ::kill(pids[rng() % pids.size()], SIGKILL);
        }
        // ...crash a job in another...
        CHECK_THROWS_AS(pools[rng() % pools.size()]->submit(abort_job, 0).get(), tandem::worker_crashed);
        // ...destroy one, not the newest...
        pools.erase(pools.begin() + static_cast<std::ptrdiff_t>(rng() % pools.size()));
        // ...and now and then start a new one in its place while fewer than half remain.
        if (pools.size() < pools_alive / 2 && rng() % 4 == 0)
            pools.push_back(std::make_unique<tandem::process_pool>(tandem::process_pool_options{.workers = 2}));
        if (pools.size() % 8 == 0) check_all();
    }
    CHECK(tandem::process::open_descriptor_count() == before);
    CHECK(children_of(zygote).empty()); // every worker reaped
}

TEST_CASE("workers whose pids come in any order are each reaped and replaced: a pid namespace deals them",
          "[process_pool][zygote]") {
    // The zygote keeps its workers sorted by pid. Pids normally grow, so every new worker would
    // go last; in a pid namespace of its own the test sets the next pid (ns_last_pid) before each
    // replacement, so new workers land before, between and after the others. A worker the
    // zygote failed to find when reaping it would never be reported dead nor replaced: the
    // wait below would hang into the watchdog.
    const unsigned seed = std::random_device{}();
    INFO("seed " << seed);
    const int code = in_child([seed]() -> int {
        if (::unshare(CLONE_NEWPID) != 0) return 77; // no CAP_SYS_ADMIN here: skipped
        return in_child([seed]() -> int { // pid 1 of the new namespace
            // Pid 1 ignores signals it has no handler for, the watchdog's SIGALRM too; and its
            // death takes the namespace's every process (the zygote, the workers) with it.
            std::signal(SIGALRM, [](int) { std::_Exit(114); });
            ::alarm(30);
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            auto next_pid = [](int n) {
                std::ofstream("/proc/sys/kernel/ns_last_pid") << n;
            };
            std::mt19937 rng(seed);
            next_pid(20000);
            tandem::process_pool pool({.workers = 4});
            pool.wait_ready();
            for (int round = 0; round < 30; ++round) {
                const std::vector<pid_t> pids = pool.worker_pids();
                const pid_t victim = pids[rng() % pids.size()];
                // Below the others, then above them, in turn.
                next_pid(round % 2 ? 100 + static_cast<int>(rng() % 1000) : 25000 + static_cast<int>(rng() % 5000));
                ::kill(victim, SIGKILL);
                for (;;) {
                    pool.wait_ready();
                    const std::vector<pid_t> now = pool.worker_pids();
                    const std::set<pid_t> live(now.begin(), now.end());
                    if (live.size() == 4 && !live.count(victim)) break;
                    try {
                        (void)pool.submit(worker_pid).get();
                    } catch (const tandem::worker_crashed&) {
                    }
                }
                for (int j = 0; j < 8; ++j)
                    if (pool.submit(add, j, 1).get() != j + 1) return 2;
            }
            return 0;
        });
    });
    if (code == 77) {
        WARN("skipped: unshare(CLONE_NEWPID) needs CAP_SYS_ADMIN");
        return;
    }
    CHECK(code == 0);
}
