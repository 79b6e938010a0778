// Tests for cluster.hpp: real worker processes, real signals, real sockets on 127.0.0.1.
// Each test forks a primary (the test process is single-threaded at that point), reads its
// log lines from a pipe and waits for the events they report: no sleeping to wait.
#include "tandem/cluster.hpp"

#include "catch.hpp"

#include "tandem/http.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <regex>
#include <sched.h>
#include <set>
#include <string>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
namespace cluster = tandem::cluster;

namespace {

using clock_type = std::chrono::steady_clock;

/// A primary forked from the test, its stdout and stderr (its own log and its workers') on
/// one pipe we read line by line.
class primary {
public:
    primary(cluster::options o, cluster::serve_function serve) {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        std::fflush(nullptr);
        m_pid = ::fork();
        REQUIRE(m_pid >= 0);
        if (m_pid == 0) {
            ::dup2(fds[1], 1);
            ::dup2(fds[1], 2);
            ::close(fds[0]);
            ::close(fds[1]);
            o.on_ready = [](std::span<const tandem::address> bound) {
                const std::string line = "listening on http://127.0.0.1:" + std::to_string(bound.front().port()) + "\n";
                [[maybe_unused]] auto n = ::write(1, line.data(), line.size());
            };
            int rc = 100;
            try {
                rc = cluster::run(o, std::move(serve));
            } catch (const std::exception& e) {
                std::fprintf(stderr, "run threw: %s\n", e.what());
            }
            std::fflush(nullptr);
            ::_exit(rc);
        }
        ::close(fds[1]);
        m_out = fds[0];
        m_pidfd = tandem::process::pidfd::open(m_pid);
    }
    primary(const primary&) = delete;
    primary& operator=(const primary&) = delete;
    ~primary() {
        if (!m_reaped) {
            ::kill(m_pid, SIGKILL);
            int status;
            ::waitpid(m_pid, &status, 0);
        }
        ::close(m_out);
    }

    pid_t pid() const noexcept { return m_pid; }

    /// Waits for the next line (after the previous match) that matches `re`; fails the test
    /// after `timeout`.
    std::smatch wait_for(const std::string& pattern, std::chrono::milliseconds timeout = 10s) {
        const std::regex re(pattern);
        const auto deadline = clock_type::now() + timeout;
        for (;;) {
            for (; m_next < m_lines.size(); ++m_next) {
                std::smatch m;
                if (std::regex_search(m_lines[m_next], m, re)) {
                    ++m_next;
                    return m;
                }
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
            if (left <= 0ms || !read_some(left)) {
                FAIL("no line matching '" << pattern << "' within " << timeout.count() << " ms; log:\n" << log());
            }
        }
    }

    /// The port from the "listening on" line, wherever it is in the log.
    int port() {
        const std::regex re(R"(listening on http://127\.0\.0\.1:(\d+))");
        for (std::size_t i = 0; m_port == 0 && i < m_lines.size(); ++i) {
            std::smatch m;
            if (std::regex_search(m_lines[i], m, re)) m_port = std::stoi(m[1]);
        }
        if (m_port == 0) m_port = std::stoi(wait_for(R"(listening on http://127\.0\.0\.1:(\d+))")[1]);
        return m_port;
    }

    /// Waits for the primary to exit; its exit status (or -1 on a timeout).
    int wait_exit(std::chrono::milliseconds timeout = 15s) {
        pollfd p{m_pidfd.fd(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return -1;
        const auto status = m_pidfd.reap();
        m_reaped = true;
        while (read_some(0ms)) {
        }
        return status.is_exit() ? status.code() : 128 + status.signal();
    }

    std::string log() const {
        std::string all;
        for (const auto& l : m_lines) all += l + "\n";
        return all + m_partial;
    }

private:
    bool read_some(std::chrono::milliseconds timeout) {
        pollfd p{m_out, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
        char buf[4096];
        const ssize_t n = ::read(m_out, buf, sizeof buf);
        if (n <= 0) return false;
        m_partial.append(buf, static_cast<std::size_t>(n));
        for (std::size_t nl; (nl = m_partial.find('\n')) != std::string::npos;) {
            m_lines.push_back(m_partial.substr(0, nl));
            m_partial.erase(0, nl + 1);
        }
        return true;
    }

    pid_t m_pid = -1;
    int m_out = -1;
    tandem::process::pidfd m_pidfd;
    bool m_reaped = false;
    int m_port = 0;
    std::vector<std::string> m_lines;
    std::string m_partial;
    std::size_t m_next = 0;
};

/// One GET on a new connection (Connection: close); the status, or -1 if the exchange failed.
int http_get(int port, const std::string& path, int timeout_ms = 5000) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int status = -1;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        const std::string req = "GET " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
            std::string reply;
            char buf[4096];
            ssize_t n;
            while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) reply.append(buf, static_cast<std::size_t>(n));
            if (n == 0 && reply.rfind("HTTP/1.1 ", 0) == 0 && reply.size() >= 12) status = std::atoi(reply.c_str() + 9);
        }
    }
    ::close(fd);
    return status;
}

/// Client threads sending GET / until stopped, each on a new connection (or, keep_alive,
/// on one connection after the other); counts outcomes.
class load {
public:
    static constexpr bool keep_alive = true;
    load(int port, int threads, bool reuse_connections = false) {
        for (int i = 0; i < threads; ++i)
            m_threads.emplace_back([this, port, reuse_connections] {
                if (reuse_connections) return keep_alive_client(port);
                while (!m_stop.load()) {
                    (http_get(port, "/") == 200 ? m_ok : m_failed).fetch_add(1);
                    m_ok.notify_all();
                }
            });
    }
    ~load() { stop(); }
    void stop() {
        m_stop = true;
        for (auto& t : m_threads)
            if (t.joinable()) t.join();
    }
    /// Waits until `n` more requests succeeded.
    void wait_ok(std::uint64_t n) {
        const std::uint64_t target = m_ok.load() + n;
        for (std::uint64_t seen; (seen = m_ok.load()) < target;) m_ok.wait(seen);
    }
    std::uint64_t ok() const { return m_ok.load(); }
    std::uint64_t failed() const { return m_failed.load(); }

private:
    /// A request always on the wire of a keep-alive connection (as wrk does): one that gets
    /// no whole response failed; "Connection: close" is obeyed.
    void keep_alive_client(int port) {
        while (!m_stop.load()) {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            timeval tv{5, 0};
            ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(static_cast<std::uint16_t>(port));
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            bool open = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
            if (!open) m_failed.fetch_add(1);
            std::string in;
            while (open && !m_stop.load()) {
                const std::string req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
                if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
                    m_failed.fetch_add(1);
                    break;
                }
                // One whole response: the head, then Content-Length bytes.
                std::size_t end = std::string::npos, need = 0;
                char buf[4096];
                for (;;) {
                    if (end == std::string::npos && (end = in.find("\r\n\r\n")) != std::string::npos) {
                        const std::size_t at = in.find("Content-Length: ");
                        need = end + 4 + (at < end ? std::stoul(in.substr(at + 16)) : 0);
                    }
                    if (end != std::string::npos && in.size() >= need) break;
                    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                    if (n <= 0) break;
                    in.append(buf, static_cast<std::size_t>(n));
                }
                if (end == std::string::npos || in.size() < need || in.rfind("HTTP/1.1 200", 0) != 0) {
                    m_failed.fetch_add(1);
                    break;
                }
                open = in.substr(0, end).find("Connection: close") == std::string::npos;
                in.erase(0, need);
                m_ok.fetch_add(1);
                m_ok.notify_all();
            }
            ::close(fd);
        }
    }

    std::atomic<bool> m_stop{false};
    std::atomic<std::uint64_t> m_ok{0}, m_failed{0};
    std::vector<std::thread> m_threads;
};

/// The serve function most tests use: an HTTP server with / and, for the drain test, /slow
/// that says on stderr when it starts.
tandem::task<> hello(cluster::worker& w) {
    tandem::http::router routes;
    routes.get("/", [](tandem::http::request&) -> tandem::task<tandem::http::response> {
        co_return tandem::http::response::text("hello");
    });
    routes.get("/slow", [](tandem::http::request&) -> tandem::task<tandem::http::response> {
        const std::string line = "slow request begins in pid " + std::to_string(::getpid()) + "\n";
        [[maybe_unused]] auto n = ::write(2, line.data(), line.size());
        co_await tandem::sleep_for(300ms);
        co_return tandem::http::response::text("slow");
    });
    tandem::http::server server(std::move(routes));
    std::stop_callback on_stop(w.stop_token(), [&server] { server.shutdown(); });
    co_await server.serve(w.listener());
}

cluster::options small(std::size_t workers) {
    cluster::options o;
    o.workers = workers;
    o.drain_timeout = 5s;
    return o;
}

std::set<int> ready_pids(primary& p, std::size_t n) {
    std::set<int> pids;
    while (pids.size() < n) pids.insert(std::stoi(p.wait_for(R"(worker \d+ \(pid (\d+)\) ready)")[1]));
    return pids;
}

bool process_gone(pid_t pid, std::chrono::milliseconds timeout) {
    tandem::process::pidfd fd = tandem::process::pidfd::try_open(pid);
    if (!fd) return errno == ESRCH;
    pollfd p{fd.fd(), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

} // namespace

namespace {
/// Runs `body` in a child pinned to one CPU (taskset -c <cpu>), so the test process keeps
/// its mask; the child's exit status.
template <class F>
int on_one_cpu(F body) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(static_cast<int>(::sched_getcpu()), &one);
        if (::sched_setaffinity(0, sizeof one, &one) != 0) ::_exit(99);
        ::_exit(body());
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
}
} // namespace

TEST_CASE("available_parallelism follows the affinity mask", "[cluster][parallelism]") {
    CHECK(cluster::available_parallelism() >= 1);
    CHECK(on_one_cpu([] { return static_cast<int>(cluster::available_parallelism()); }) == 1);
}

TEST_CASE("cgroup quotas: cpu.max rounds up and the tightest ancestor wins", "[cluster][parallelism]") {
    using cluster::detail::parse_cpu_max;
    CHECK(parse_cpu_max("max 100000\n") == 0);
    CHECK(parse_cpu_max("150000 100000\n") == 2);
    CHECK(parse_cpu_max("100000 100000") == 1);
    CHECK(parse_cpu_max("1 100000") == 1);
    CHECK(parse_cpu_max("0 100000") == 0);
    CHECK(parse_cpu_max("") == 0);
    CHECK(parse_cpu_max("abc 100000") == 0);
    CHECK(parse_cpu_max("99999999999999999999999 1") == 0);
    CHECK(parse_cpu_max("400000 0") == 0);
    // Near INT64_MAX: no overflow on the way to rounding up (UBSan watches).
    CHECK(parse_cpu_max("9223372036854775807 9223372036854775807") == 1);
    CHECK(parse_cpu_max("9223372036854775807 4611686018427387904") == 2);
    CHECK(parse_cpu_max("-5 100000") == 0);
    CHECK(parse_cpu_max("max") == 0);
    CHECK(parse_cpu_max("150000") == 0);

    namespace fs = std::filesystem;
    const fs::path root = fs::temp_directory_path() / ("tandem-cgroup-" + std::to_string(::getpid()));
    fs::remove_all(root);
    auto put = [](const fs::path& file, const std::string& text) {
        fs::create_directories(file.parent_path());
        std::ofstream(file) << text;
    };
    // v2: /a/b, with the limit on /a (an ancestor) and none on /a/b itself.
    put(root / "v2/cpu.max", "max 100000\n");
    put(root / "v2/a/cpu.max", "250000 100000\n");
    put(root / "v2/a/b/cpu.max", "max 100000\n");
    CHECK(cluster::detail::cgroup_cpu_limit((root / "v2").string(), "0::/a/b\n") == 3);
    put(root / "v2/a/b/cpu.max", "120000 100000\n");
    CHECK(cluster::detail::cgroup_cpu_limit((root / "v2").string(), "0::/a/b\n") == 2);
    CHECK(cluster::detail::cgroup_cpu_limit((root / "v2").string(), "0::/\n") == 0);
    // v1 (the hybrid layout of this CI machine): the cpu controller's hierarchy.
    put(root / "v1/cpu,cpuacct/x/cpu.cfs_quota_us", "-1\n");
    put(root / "v1/cpu,cpuacct/x/cpu.cfs_period_us", "100000\n");
    put(root / "v1/cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
    put(root / "v1/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    CHECK(cluster::detail::cgroup_cpu_limit((root / "v1").string(), "5:memory:/m\n4:cpu,cpuacct:/x\n") == 2);
    CHECK(cluster::detail::cgroup_cpu_limit((root / "v1").string(), "5:memory:/m\n") == 0);
    fs::remove_all(root);
}

TEST_CASE("a cluster under a one-CPU affinity mask starts one worker by default", "[cluster][parallelism]") {
    // The primary runs under taskset -c <one cpu>: the default worker count is 1.
    const int status = on_one_cpu([] {
        cluster::options o;
        o.log = [](std::string_view line) {
            ::_exit(line.find("starting 1 worker ") != std::string_view::npos ? 0 : 1); // its first line
        };
        return cluster::run(o, hello) + 2;
    });
    CHECK(status == 0);
}

TEST_CASE("kill -9 of a worker under load fails only its own connections and it is replaced", "[cluster]") {
    primary p(small(2), hello);
    const std::set<int> pids = ready_pids(p, 2);
    load clients(p.port(), 3);
    clients.wait_ok(100);
    const int victim = *pids.begin();
    REQUIRE(::kill(victim, SIGKILL) == 0);
    p.wait_for("worker \\d+ \\(pid " + std::to_string(victim) + "\\) killed by signal 9");
    const int replacement = std::stoi(p.wait_for(R"(worker \d+ \(pid (\d+)\) ready)")[1]);
    CHECK(pids.count(replacement) == 0);
    const std::uint64_t failed_at_kill = clients.failed();
    clients.wait_ok(200);
    clients.stop();
    // At most the connections the dead worker held: one per client thread.
    CHECK(failed_at_kill <= 3);
    CHECK(clients.failed() == failed_at_kill); // after the replacement, nothing fails
    ::kill(p.pid(), SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("a worker that keeps dying on start ends the cluster with exit status 1", "[cluster]") {
    cluster::options o = small(2);
    o.restart_delay = 10ms;
    o.max_young_deaths = 3;
    primary p(o, [](cluster::worker&) -> tandem::task<> { throw std::runtime_error("cannot open the database"); });
    p.wait_for("the serve function failed: cannot open the database");
    p.wait_for(R"(worker \d+ keeps dying on start \(3 times in a row, last: exited with status 1\): crash loop)");
    CHECK(p.wait_exit() == 1);
}

namespace {
tandem::task<> spin_forever() {
    std::atomic<unsigned long> spins{0};
    for (;;) spins.fetch_add(1, std::memory_order_relaxed); // never suspends: the loop is blocked
    co_return;
}
} // namespace

TEST_CASE("a worker blocked past stall_timeout is named and replaced", "[cluster]") {
    cluster::options o = small(1);
    o.stall_timeout = 400ms;
    primary p(o, [](cluster::worker& w) -> tandem::task<> {
        tandem::http::router routes;
        routes.get("/block", [](tandem::http::request&) -> tandem::task<tandem::http::response> {
            co_await tandem::spawn(spin_forever(), "report");
            co_return tandem::http::response::text("never");
        });
        tandem::http::server server(std::move(routes));
        std::stop_callback on_stop(w.stop_token(), [&server] { server.shutdown(); });
        co_await server.serve(w.listener());
    });
    const int blocked = *ready_pids(p, 1).begin();
    std::thread client([port = p.port()] { (void)http_get(port, "/block", 10'000); });
    const auto m = p.wait_for(R"(worker 0 \(pid (\d+)\) blocked ([0-9.]+) (ms|s) in task 'report' \(.*test_cluster\.cpp:\d+\): killing and replacing it)");
    client.join();
    CHECK(std::stoi(m[1]) == blocked);
    const int replacement = std::stoi(p.wait_for(R"(worker 0 \(pid (\d+)\) ready)")[1]);
    CHECK(replacement != blocked);
    CHECK(http_get(p.port(), "/block", 50) == -1); // (blocks the new one too; it is killed on exit)
    ::kill(p.pid(), SIGKILL);
    CHECK(p.wait_exit() == 128 + SIGKILL);
    CHECK(process_gone(replacement, 5s));
}

TEST_CASE("SIGTERM lets in-flight requests complete and exits 0", "[cluster]") {
    primary p(small(2), hello);
    (void)ready_pids(p, 2);
    constexpr int in_flight = 6;
    std::atomic<int> ok{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < in_flight; ++i)
        clients.emplace_back([&ok, port = p.port()] {
            if (http_get(port, "/slow") == 200) ++ok;
        });
    for (int i = 0; i < in_flight; ++i) p.wait_for("slow request begins");
    REQUIRE(::kill(p.pid(), SIGTERM) == 0);
    for (auto& t : clients) t.join();
    CHECK(ok == in_flight);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("SIGHUP under load replaces every worker with zero failed requests", "[cluster]") {
    primary p(small(2), hello);
    const std::set<int> old = ready_pids(p, 2);
    load clients(p.port(), 3);
    clients.wait_ok(100);
    REQUIRE(::kill(p.pid(), SIGHUP) == 0);
    std::set<int> drained;
    bool complete = false;
    while (!complete || drained.size() < old.size()) {
        const auto m = p.wait_for(R"((reload complete)|\(pid (\d+)\) drained and exited)");
        if (m[1].matched) {
            complete = true;
        } else {
            drained.insert(std::stoi(m[2]));
        }
    }
    CHECK(drained == old);
    clients.wait_ok(100);
    clients.stop();
    CHECK(clients.failed() == 0);
    INFO(p.log());
    ::kill(p.pid(), SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("SIGTTIN adds a worker and SIGTTOU removes one", "[cluster]") {
    primary p(small(1), hello);
    (void)ready_pids(p, 1);
    REQUIRE(::kill(p.pid(), SIGTTIN) == 0);
    const int added = std::stoi(p.wait_for(R"(worker 1 \(pid (\d+)\) ready)")[1]);
    CHECK(http_get(p.port(), "/") == 200);
    REQUIRE(::kill(p.pid(), SIGTTOU) == 0);
    p.wait_for("worker 1 \\(pid " + std::to_string(added) + "\\) drained and exited");
    REQUIRE(::kill(p.pid(), SIGTTOU) == 0);
    p.wait_for("SIGTTOU: keeping the last worker");
    CHECK(http_get(p.port(), "/") == 200);
    ::kill(p.pid(), SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("SIGKILL of the primary leaves no worker behind", "[cluster]") {
    for (cluster::balance mode : {cluster::balance::shared, cluster::balance::reuseport}) {
        cluster::options o = small(2);
        o.balancing = mode;
        primary p(o, hello);
        const std::set<int> pids = ready_pids(p, 2);
        CHECK(http_get(p.port(), "/") == 200);
        REQUIRE(::kill(p.pid(), SIGKILL) == 0);
        CHECK(p.wait_exit() == 128 + SIGKILL);
        for (int pid : pids) CHECK(process_gone(pid, 5s));
    }
}

TEST_CASE("the status board shows every worker to every worker", "[cluster]") {
    primary p(small(2), [](cluster::worker& w) -> tandem::task<> {
        tandem::http::router routes;
        routes.get("/board", [&w](tandem::http::request&) -> tandem::task<tandem::http::response> {
            std::string out;
            for (const auto& s : w.cluster_stats())
                out += std::to_string(s.index) + ":" + std::to_string(s.pid) + ":" +
                       std::to_string(static_cast<int>(s.state)) + ";";
            co_return tandem::http::response::text(out);
        });
        tandem::http::server server(std::move(routes));
        w.count_requests([&server] { return server.requests_served(); });
        std::stop_callback on_stop(w.stop_token(), [&server] { server.shutdown(); });
        co_await server.serve(w.listener());
    });
    const std::set<int> pids = ready_pids(p, 2);
    CHECK(http_get(p.port(), "/board") == 200);
    // Read the body this time.
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(p.port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const std::string req = "GET /board HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    REQUIRE(::send(fd, req.data(), req.size(), 0) == static_cast<ssize_t>(req.size()));
    std::string reply;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) reply.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    for (int pid : pids) CHECK(reply.find(":" + std::to_string(pid) + ":2;") != std::string::npos);
    ::kill(p.pid(), SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("the primary reads the status board every heartbeat", "[cluster]") {
    cluster::options o = small(2);
    o.stall_timeout = 200ms; // heartbeats every 50 ms
    o.on_tick = [](std::span<const cluster::worker_stats> all) {
        std::size_t ready = 0;
        for (const auto& s : all) ready += s.state == cluster::worker_state::ready && s.pid > 0;
        const std::string line = "tick: " + std::to_string(ready) + " ready\n";
        [[maybe_unused]] auto n = ::write(1, line.data(), line.size());
    };
    primary p(o, hello);
    p.wait_for("tick: 2 ready");
    ::kill(p.pid(), SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("SIGTERM while workers are still starting drains them and exits 0", "[cluster]") {
    for (int round = 0; round < 3; ++round) {
        primary p(small(2), hello);
        p.wait_for("starting 2 workers");
        REQUIRE(::kill(p.pid(), SIGTERM) == 0);
        const int status = p.wait_exit();
        INFO(p.log());
        CHECK(status == 0);
    }
}

namespace {
bool write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
    out.flush();
    return static_cast<bool>(out);
}
} // namespace

TEST_CASE("available_parallelism follows a real cgroup CPU quota where the test can create one", "[cluster][parallelism]") {
    // A half-CPU quota: one worker, whatever the affinity mask allows. cgroup v2 (cpu.max)
    // or the v1 cpu controller (this CI machine's hybrid layout); skipped without either
    // or without the right to create a group.
    namespace fs = std::filesystem;
    const std::string name = "tandem-test-" + std::to_string(::getpid());
    std::string dir;
    std::vector<std::pair<std::string, std::string>> limits;
    if (fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
        std::string self;
        REQUIRE(cluster::detail::read_file("/proc/self/cgroup", self));
        const std::size_t at = self.find("0::");
        std::string path = at == std::string::npos ? "/" : self.substr(at + 3, self.find('\n', at) - at - 3);
        dir = "/sys/fs/cgroup" + (path == "/" ? std::string() : path) + "/" + name;
        limits = {{"cpu.max", "50000 100000"}};
    } else if (fs::exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) {
        dir = "/sys/fs/cgroup/cpu/" + name;
        limits = {{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "50000"}};
    }
    std::error_code ec;
    if (dir.empty() || !fs::create_directory(dir, ec)) {
        WARN("skipped: cannot create a cgroup here (" << (dir.empty() ? "no cgroup cpu controller" : ec.message()) << ")");
        return;
    }
    bool limited = true;
    for (const auto& [file, value] : limits) limited = limited && write_file(dir + "/" + file, value);
    if (limited) {
        std::fflush(nullptr);
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            if (!write_file(dir + "/cgroup.procs", std::to_string(::getpid()))) ::_exit(99);
            ::_exit(static_cast<int>(cluster::available_parallelism()));
        }
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 1);
    } else {
        WARN("skipped: the cgroup's CPU quota cannot be set (cpu controller not enabled for it)");
    }
    ::rmdir(dir.c_str());
}

namespace {
/// A counter every process of a cluster shares (mapped before the primary forks): the
/// tests tell a worker's generation by the order it started in.
class shared_counter {
public:
    shared_counter() {
        void* at = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        REQUIRE(at != MAP_FAILED);
        m_value = new (at) std::atomic<int>(0);
    }
    shared_counter(const shared_counter&) = delete;
    shared_counter& operator=(const shared_counter&) = delete;
    ~shared_counter() { ::munmap(m_value, sizeof(std::atomic<int>)); }
    /// 1 for the first caller in any process, 2 for the next...
    int next() const noexcept { return m_value->fetch_add(1) + 1; }

private:
    std::atomic<int>* m_value = nullptr;
};

void say(const std::string& line) {
    const std::string out = line + "\n";
    [[maybe_unused]] auto n = ::write(2, out.data(), out.size());
}

/// A serve function that never looks at its stop token.
tandem::task<> ignore_stop(cluster::worker&) { co_await tandem::sleep_for(std::chrono::hours(1)); }
} // namespace

TEST_CASE("options out of range are a clear error before anything is forked", "[cluster]") {
    auto rejected = [](cluster::options o) -> std::string {
        // Were they accepted, this process would be a primary: let it drain and return.
        o.on_ready = [](std::span<const tandem::address>) { ::raise(SIGTERM); };
        try {
            (void)cluster::run(o, hello);
        } catch (const std::invalid_argument& e) {
            return e.what();
        }
        return "accepted";
    };
    cluster::options o;
    o.workers = static_cast<std::size_t>(-1); // what strtoul makes of "--workers -1"
    CHECK(rejected(o).find("is more than the limit of 4096") != std::string::npos);
    o = {};
    o.drain_timeout = -1ms;
    CHECK(rejected(o).find("drain_timeout is negative") != std::string::npos);
    o = {};
    o.restart_delay = -5ms;
    CHECK(rejected(o).find("restart_delay is negative") != std::string::npos);
    o = {};
    o.stall_timeout = 1ms; // half of it, the worker's watchdog threshold, would be 0 ms
    CHECK(rejected(o).find("stall_timeout must be 0 (off) or at least 20 ms, not 1 ms") != std::string::npos);
    o = {};
    o.max_young_deaths = 0;
    CHECK(rejected(o).find("max_young_deaths must be at least 1") != std::string::npos);
    o = {};
    o.backlog = 0;
    CHECK(rejected(o).find("backlog must be at least 1") != std::string::npos);
    o = {};
    o.listen.clear();
    CHECK(rejected(o).find("no address to listen on") != std::string::npos);

    // A port in use: the error names it.
    auto taken = tandem::tcp_listener::bind(tandem::address("127.0.0.1", 0));
    o = {};
    o.listen = {taken.local_address()};
    std::string error;
    try {
        (void)cluster::run(o, hello);
    } catch (const std::system_error& e) {
        error = e.what();
    }
    CHECK(error.find("cannot listen on " + taken.local_address().to_string()) != std::string::npos);
}

TEST_CASE("a pause of the whole cluster is no stall but a stopped worker is one", "[cluster]") {
    // Ctrl-Z and fg, a debugger, docker pause: the primary and its workers stop together,
    // for longer than stall_timeout. On waking, the primary must not blame the workers.
    cluster::options o = small(2);
    o.stall_timeout = 200ms; // heartbeats and ticks every 50 ms
    o.on_tick = [](std::span<const cluster::worker_stats>) { say("tick"); };
    primary p(o, hello);
    const std::set<int> pids = ready_pids(p, 2);
    REQUIRE(::kill(p.pid(), SIGSTOP) == 0);
    for (int pid : pids) REQUIRE(::kill(pid, SIGSTOP) == 0);
    std::this_thread::sleep_for(700ms); // the pause itself, not a wait for an event
    REQUIRE(::kill(p.pid(), SIGCONT) == 0); // the primary first: the worst order
    for (int pid : pids) REQUIRE(::kill(pid, SIGCONT) == 0);
    for (int i = 0; i < 12; ++i) p.wait_for("^tick$"); // 600 ms of watching: three stall_timeouts
    INFO(p.log());
    CHECK(p.log().find("killing") == std::string::npos);
    CHECK(http_get(p.port(), "/") == 200);

    // One worker stopped on its own does not serve: that is a stall.
    const int stopped = *pids.begin();
    REQUIRE(::kill(stopped, SIGSTOP) == 0);
    p.wait_for("\\(pid " + std::to_string(stopped) +
               "\\) is stopped \\(SIGSTOP or a debugger\\) and missed its heartbeat for .*: killing and replacing it");
    p.wait_for(R"(worker \d+ \(pid \d+\) ready)");
    ::kill(p.pid(), SIGTERM);
    const int status = p.wait_exit();
    INFO(p.log());
    CHECK(status == 0);
}

TEST_CASE("a worker that blocks before it is ready every time is a crash loop", "[cluster]") {
    cluster::options o = small(1);
    o.stall_timeout = 200ms;
    o.restart_delay = 10ms;
    o.max_young_deaths = 2;
    primary p(o, [](cluster::worker&) -> tandem::task<> {
        std::atomic<unsigned long> spins{0};
        for (;;) spins.fetch_add(1, std::memory_order_relaxed); // e.g. a deadlock while loading the config
        co_return;
    });
    p.wait_for(R"(worker 0 \(pid \d+\) .*: killing and replacing it)");
    p.wait_for(R"(worker 0 keeps dying on start \(2 times in a row, last: killed by signal 9.*, stalled before it was ready\): crash loop)");
    CHECK(p.wait_exit() == 1);
}

TEST_CASE("SIGTTOU that takes a reload's starting replacement lets the reload go on", "[cluster]") {
    shared_counter starts;
    int gate[2];
    REQUIRE(::pipe(gate) == 0);
    primary p(small(2), [&starts, gate_read = gate[0]](cluster::worker& w) -> tandem::task<> {
        if (starts.next() == 4) { // the reload's first replacement (see below)
            say("gated start of worker " + std::to_string(w.index()));
            char c;
            (void)::read(gate_read, &c, 1); // not ready until the test says so
        }
        co_await hello(w);
    });
    ::close(gate[0]);
    std::map<int, int> pid_of; // index -> pid
    while (pid_of.size() < 2) {
        const auto m = p.wait_for(R"(worker (\d+) \(pid (\d+)\) ready)");
        pid_of[std::stoi(m[1])] = std::stoi(m[2]);
    }
    // Replace worker 0 so that the primary's list reads [worker 1, worker 0]: a reload
    // replaces worker 1 first (start 4) and worker 0 after it.
    REQUIRE(::kill(pid_of[0], SIGKILL) == 0);
    p.wait_for(R"(worker 0 \(pid \d+\) ready)");
    REQUIRE(::kill(p.pid(), SIGHUP) == 0);
    p.wait_for("gated start of worker 1");
    REQUIRE(::kill(p.pid(), SIGTTOU) == 0); // index 1 goes: the old worker and its replacement
    p.wait_for("SIGTTOU: shrinking to 1 workers");
    REQUIRE(::write(gate[1], "x", 1) == 1);
    p.wait_for("reload complete");
    ::close(gate[1]);
    CHECK(http_get(p.port(), "/") == 200);
    ::kill(p.pid(), SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("drain_timeout bounds a worker that ignores SIGTERM and the exit status says so", "[cluster]") {
    SECTION("at shutdown: killed at drain_timeout and exit 1") {
        cluster::options o = small(2);
        o.drain_timeout = 300ms;
        primary p(o, ignore_stop);
        (void)ready_pids(p, 2);
        REQUIRE(::kill(p.pid(), SIGTERM) == 0);
        p.wait_for(R"(worker \d+ \(pid \d+\) did not drain within 300 ms: killing it)");
        CHECK(p.wait_exit() == 1);
    }
    SECTION("during a reload: killed at drain_timeout, and a clean shutdown later still exits 0") {
        shared_counter starts;
        cluster::options o = small(1);
        o.drain_timeout = 300ms;
        primary p(o, [&starts](cluster::worker& w) -> tandem::task<> {
            if (starts.next() == 1) return ignore_stop(w); // the first generation is stubborn
            return hello(w);
        });
        const int stubborn = *ready_pids(p, 1).begin();
        REQUIRE(::kill(p.pid(), SIGHUP) == 0);
        p.wait_for("reload complete"); // the replacement is ready: the old one drains
        p.wait_for("worker 0 \\(pid " + std::to_string(stubborn) + "\\) did not drain within 300 ms: killing it");
        p.wait_for("\\(pid " + std::to_string(stubborn) + "\\) killed by signal 9");
        REQUIRE(::kill(p.pid(), SIGTERM) == 0);
        CHECK(p.wait_exit() == 0);
    }
}


TEST_CASE("SIGHUP under keep-alive load fails no request on the wire", "[cluster]") {
    // The old workers' keep-alive connections always have a request on its way: draining
    // answers it with "Connection: close" instead of closing under it.
    primary p(small(2), hello);
    (void)ready_pids(p, 2);
    load clients(p.port(), 4, load::keep_alive);
    clients.wait_ok(200);
    for (int reload = 0; reload < 2; ++reload) {
        REQUIRE(::kill(p.pid(), SIGHUP) == 0);
        // "reload complete" and the two old workers' exits, in whatever order they come.
        for (int lines = 0; lines < 3; ++lines) p.wait_for(R"(reload complete|\(pid \d+\) drained and exited)");
        clients.wait_ok(200);
    }
    clients.stop();
    INFO(p.log());
    CHECK(clients.failed() == 0);
    ::kill(p.pid(), SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("an inherited SIGCHLD SIG_IGN does not lose the workers' exit statuses", "[cluster]") {
    // SIG_IGN survives exec: a parent that ignores SIGCHLD hands it down, and the kernel
    // would reap the workers itself (a clean drain read as "exited with status 255").
    struct sigaction ignore {}, before {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    REQUIRE(::sigaction(SIGCHLD, &ignore, &before) == 0);
    std::optional<primary> p;
    p.emplace(small(2), hello); // the primary inherits SIG_IGN
    REQUIRE(::sigaction(SIGCHLD, &before, nullptr) == 0); // the test reaps its primary
    const std::set<int> pids = ready_pids(*p, 2);
    REQUIRE(::kill(*pids.begin(), SIGKILL) == 0);
    p->wait_for("\\(pid " + std::to_string(*pids.begin()) + "\\) killed by signal 9");
    (void)ready_pids(*p, 1);
    ::kill(p->pid(), SIGTERM);
    const int status = p->wait_exit();
    INFO(p->log());
    CHECK(status == 0);
    CHECK(p->log().find("status 255") == std::string::npos);
}

TEST_CASE("an on_ready that throws is logged and the cluster runs on", "[cluster]") {
    // Run here in a child, not through `primary`, which brings its own on_ready.
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        cluster::options o = small(1);
        o.on_ready = [](std::span<const tandem::address>) { throw std::runtime_error("cannot write the pid file"); };
        o.log = [](std::string_view line) { // the failure is logged: stop the cluster the usual way
            if (line.find("on_ready failed: cannot write the pid file") != std::string_view::npos) ::raise(SIGTERM);
        };
        int rc = 100;
        try {
            rc = cluster::run(o, hello);
        } catch (...) {
            rc = 101; // thrown out of run(): the defect
        }
        ::_exit(rc);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0); // logged, then a clean drain on the SIGTERM it sent itself
}
