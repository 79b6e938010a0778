// tandem — the cluster's primary: forks the workers, watches them through pidfds and the
// status board, replaces the dead and the stalled, rolls them on SIGHUP, resizes on
// SIGTTIN/SIGTTOU and drains them on SIGTERM/SIGINT.
//
// Layer: offload (cluster). Stands on the process wing (fork, pidfd, parent_death,
// exit_status).
//
// The primary runs no event loop and no thread: one poll() over a signalfd, the workers'
// pidfds and a notification pipe. Single-threaded, it can fork a replacement at any time
// without the fork-with-threads hazard (see process/fork.hpp), and nothing a worker does
// (a blocked loop, a crash) can stall it.
#pragma once

#include "tandem/cluster/board.hpp"
#include "tandem/cluster/options.hpp"
#include "tandem/cluster/parallelism.hpp"
#include "tandem/cluster/worker.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"
#include "tandem/process/exit_status.hpp"
#include "tandem/process/fork.hpp"
#include "tandem/process/parent_death.hpp"
#include "tandem/process/pidfd.hpp"

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <system_error>
#include <unistd.h>
#include <utility>
#include <vector>

namespace tandem::cluster::detail {

using tandem::detail::unique_fd;

/// "31.0 s", "250 ms".
inline std::string describe_duration(std::int64_t ns) {
    char buf[32];
    if (ns >= 1'000'000'000) {
        std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ns) / 1e9);
    } else {
        std::snprintf(buf, sizeof buf, "%lld ms", static_cast<long long>(ns / 1'000'000));
    }
    return buf;
}

// Deferred: what names the standard containers is compiled only where the class is
// instantiated, by clang too (see tandem/detail/dependent.hpp).
template <class Deferred = void>
class supervisor {
    template <class T>
    using deferred = tandem::detail::dependent_t<T, Deferred>;

public:
    supervisor(const options& o, serve_function serve) : m_opts(o), m_serve(std::move(serve)) {
        validate(m_opts);
        if (m_opts.workers == 0) m_opts.workers = available_parallelism();
        m_opts.max_workers = std::min(std::max(m_opts.max_workers, m_opts.workers), max_workers_limit);
        m_target = m_opts.workers;
        m_positions.resize(m_opts.max_workers);
    }

    /// Runs the cluster until SIGTERM/SIGINT (0: every worker drained) or a crash loop (1).
    int run() {
        if (!process::single_threaded())
            throw std::logic_error("tandem cluster: run() must be called before this process starts threads (it has " +
                                   std::to_string(process::thread_count()) +
                                   "): a forked worker would inherit locks the other threads hold");
        m_primary = ::getpid();
        open_listeners();
        m_board = std::make_unique<board>(2 * m_opts.max_workers + 2); // room for a reload's overlap
        int pipe_fds[2];
        if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) tandem::detail::throw_errno("tandem cluster: pipe2");
        m_notify_read.reset(pipe_fds[0]);
        m_notify_write.reset(pipe_fds[1]);
        signal_guard signals;
        m_signal_fd = signals.fd();
        log(m_opts, "starting " + std::to_string(m_target) + " worker" + (m_target == 1 ? "" : "s") + " (" +
                        to_string(m_opts.balancing) + " listener, port " + std::to_string(m_bound.front().port()) + ")");
        ensure_workers(now_ns());
        loop();
        m_listeners.clear();
        if (m_crash_loop) return 1;
        return m_forced ? 1 : 0;
    }

private:
    /// Far above any machine's core count, far below what a mistyped `--workers -1`
    /// (SIZE_MAX) would ask for: a fork storm and a board the size of the address space.
    static constexpr std::size_t max_workers_limit = 4096;

    /// Bad options are a clear error before anything is bound or forked.
    static void validate(const deferred<options>& o) {
        auto fail = [](const std::string& what) { throw std::invalid_argument("tandem cluster: " + what); };
        if (o.listen.empty()) fail("no address to listen on");
        if (o.workers > max_workers_limit)
            fail("workers = " + std::to_string(o.workers) + " is more than the limit of " +
                 std::to_string(max_workers_limit));
        const deferred<std::pair<const char*, std::chrono::milliseconds>> durations[] = {
            {"drain_timeout", o.drain_timeout}, {"stall_timeout", o.stall_timeout},
            {"restart_delay", o.restart_delay}, {"max_restart_delay", o.max_restart_delay},
            {"min_uptime", o.min_uptime}};
        for (const auto& [name, d] : durations)
            if (d < std::chrono::milliseconds::zero())
                fail(std::string(name) + " is negative (" + std::to_string(d.count()) + " ms)");
        // Heartbeats come at most every 10 ms, and the worker's watchdog looks at half the
        // timeout: below 20 ms every worker would look stalled (or the watchdog refuse 0 ms).
        if (o.stall_timeout > std::chrono::milliseconds::zero() && o.stall_timeout < std::chrono::milliseconds(20))
            fail("stall_timeout must be 0 (off) or at least 20 ms, not " + std::to_string(o.stall_timeout.count()) +
                 " ms");
        if (o.max_young_deaths == 0) fail("max_young_deaths must be at least 1");
        if (o.backlog < 1) fail("backlog must be at least 1");
    }

    struct child {
        process::pidfd fd;
        pid_t pid = 0;
        std::size_t seat = 0;
        std::uint32_t generation = 0;
        std::size_t index = 0;
        worker_state state = worker_state::starting;
        std::int64_t started = 0;
        std::int64_t ready_at = 0;
        std::int64_t drain_deadline = 0;
        pid_t replaces = 0; // a reload's replacement: the worker to drain once this one is ready
        bool stalled = false;
    };
    struct position {
        unsigned young_deaths = 0;
        std::int64_t respawn_at = 0; // steady ns; 0: no respawn waiting
        std::uint64_t restarts = 0;
    };

    /// Blocks the signals the primary handles and reads them from a signalfd; restores the
    /// mask on the way out. SIGCHLD goes back to its default meanwhile: ignored (SIG_IGN or
    /// SA_NOCLDWAIT survive exec, so a parent may hand them down), the kernel reaps the
    /// workers itself and their exit statuses are lost (a clean drain read as a failure).
    class signal_guard {
    public:
        signal_guard() {
            struct sigaction dfl {};
            dfl.sa_handler = SIG_DFL;
            sigemptyset(&dfl.sa_mask);
            if (::sigaction(SIGCHLD, &dfl, &m_old_chld) != 0) tandem::detail::throw_errno("tandem cluster: sigaction");
            sigemptyset(&m_set);
            for (int s : {SIGTERM, SIGINT, SIGHUP, SIGTTIN, SIGTTOU}) sigaddset(&m_set, s);
            if (::sigprocmask(SIG_BLOCK, &m_set, &m_old) != 0) {
                ::sigaction(SIGCHLD, &m_old_chld, nullptr);
                tandem::detail::throw_errno("tandem cluster: sigprocmask");
            }
            m_fd.reset(::signalfd(-1, &m_set, SFD_CLOEXEC | SFD_NONBLOCK));
            if (!m_fd) {
                ::sigprocmask(SIG_SETMASK, &m_old, nullptr);
                ::sigaction(SIGCHLD, &m_old_chld, nullptr);
                tandem::detail::throw_errno("tandem cluster: signalfd");
            }
        }
        ~signal_guard() {
            m_fd.reset();
            ::sigprocmask(SIG_SETMASK, &m_old, nullptr);
            ::sigaction(SIGCHLD, &m_old_chld, nullptr);
        }
        int fd() const noexcept { return m_fd.get(); }

    private:
        sigset_t m_set{}, m_old{};
        struct sigaction m_old_chld {};
        unique_fd m_fd;
    };

    static std::int64_t ms_ns(std::chrono::milliseconds d) noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    }
    std::string who(const child& c) const {
        return "worker " + std::to_string(c.index) + " (pid " + std::to_string(c.pid) + ")";
    }

    void open_listeners() {
        for (const address& a : m_opts.listen) {
            try {
                open_listener(a);
            } catch (const std::system_error& e) {
                // Say where: "bind: Address already in use" alone does not name the port.
                throw std::system_error(e.code(), "tandem cluster: cannot listen on " + a.to_string());
            }
        }
    }

    void open_listener(const address& a) {
        if (m_opts.balancing == balance::shared) {
            m_listeners.push_back(tcp_listener::bind(a, {.backlog = m_opts.backlog}));
            m_bound.push_back(m_listeners.back().local_address());
        } else {
            // Bound, never listening: it holds the port (port 0 picks it once, for every
            // worker and every replacement) but is not in the reuseport group, so the
            // kernel never hashes a connection to it.
            tcp_listener holder(::socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
            if (!holder.is_open()) tandem::detail::throw_errno("tandem cluster: socket");
            holder.set_option(SOL_SOCKET, SO_REUSEADDR, 1);
            holder.set_option(SOL_SOCKET, SO_REUSEPORT, 1);
            if (::bind(holder.native_handle(), a.native(), a.native_size()) != 0)
                tandem::detail::throw_errno("tandem cluster: bind");
            m_bound.push_back(holder.local_address());
            m_listeners.push_back(std::move(holder));
        }
    }

    // ---- the loop ----------------------------------------------------------------------

    void loop() {
        deferred<std::vector<pollfd>> fds;
        std::int64_t next_tick = 0;
        for (;;) {
            const std::int64_t now = now_ns();
            check_timers(now);
            if (m_opts.on_tick && now >= next_tick) {
                next_tick = now + ms_ns(heartbeat_interval(m_opts));
                const deferred<std::vector<worker_stats>> all = m_board->snapshot();
                try {
                    m_opts.on_tick(std::span<const worker_stats>(all.data(), all.size()));
                } catch (...) {
                    // An observer's failure is not the cluster's.
                }
            }
            if (m_stopping && m_children.empty()) return;
            fds.clear();
            fds.push_back({m_signal_fd, POLLIN, 0});
            fds.push_back({m_notify_read.get(), POLLIN, 0});
            for (const child& c : m_children) fds.push_back({c.fd.fd(), POLLIN, 0});
            const int r = ::poll(fds.data(), fds.size(), poll_timeout_ms(now));
            if (r < 0 && errno != EINTR) tandem::detail::throw_errno("tandem cluster: poll");
            if (r <= 0) continue;
            if (fds[0].revents) read_signals();
            if (fds[1].revents) read_notifications();
            // Reap after reading notifications: a worker that said "ready" and then died is
            // seen in that order.
            deferred<std::vector<pid_t>> ended;
            for (std::size_t i = 2; i < fds.size(); ++i)
                if (fds[i].revents) ended.push_back(m_children[i - 2].pid);
            for (pid_t pid : ended) reap(pid);
            if (!m_stopping) ensure_workers(now_ns());
        }
    }

    int poll_timeout_ms(std::int64_t now) const {
        std::int64_t next = now + ms_ns(heartbeat_interval(m_opts));
        for (const position& p : m_positions)
            if (p.respawn_at != 0) next = std::min(next, p.respawn_at);
        for (const child& c : m_children)
            if (c.state == worker_state::draining) next = std::min(next, c.drain_deadline);
        const std::int64_t wait = next - now;
        return wait <= 0 ? 0 : static_cast<int>((wait + 999'999) / 1'000'000);
    }

    void check_timers(std::int64_t now) {
        // The primary itself did not run for longer than it ever sleeps: it was stopped with
        // its workers (Ctrl-Z and fg, SIGSTOP to the process group, a debugger, docker
        // pause's cgroup freezer) or starved. The workers' heartbeats are as old as the
        // pause through no fault of theirs: judge them from now on, not from before it.
        if (m_last_check != 0 && now - m_last_check > ms_ns(m_opts.stall_timeout / 2 + heartbeat_interval(m_opts)))
            m_stall_epoch = now;
        m_last_check = now;
        for (child& c : m_children) {
            if (c.state == worker_state::draining) {
                if (now >= c.drain_deadline && c.drain_deadline != 0) {
                    log(m_opts, who(c) + " did not drain within " + describe_duration(ms_ns(m_opts.drain_timeout)) +
                                    ": killing it");
                    c.fd.send_signal(SIGKILL);
                    c.drain_deadline = 0;
                    if (m_stopping) m_forced = true; // the exit status speaks of the final drain
                }
                continue;
            }
            if (m_opts.stall_timeout > std::chrono::milliseconds::zero()) check_stall(c, now);
        }
        if (!m_stopping) ensure_workers(now);
    }

    void check_stall(child& c, std::int64_t now) {
        if (c.stalled) return;
        const deferred<seat>& s = (*m_board)[c.seat];
        const std::int64_t beat = s.heartbeat_ns.load(std::memory_order_relaxed);
        const std::int64_t seen = std::max(beat, m_stall_epoch); // a pause of us all is no stall
        if (now - seen < ms_ns(m_opts.stall_timeout)) return;
        typename deferred<seat>::block_record block;
        std::string line;
        if (s.read_block(block) && block.since_ns > beat) {
            // The heartbeat stops up to one interval before the blocking step starts: judge
            // by the step itself.
            if (now - std::max(block.since_ns, m_stall_epoch) < ms_ns(m_opts.stall_timeout)) return;
            line = who(c) + " blocked " + describe_duration(now - block.since_ns) + " in ";
            line += block.task.empty() ? std::string("an unnamed task") : "task '" + block.task + "'";
            if (!block.file.empty()) line += " (" + block.file + ":" + std::to_string(block.line) + ")";
        } else {
            // No record yet: the watchdog thread reports at stall_timeout / 2, so give it an
            // interval's grace before blaming nobody by name.
            if (now - seen < ms_ns(m_opts.stall_timeout + heartbeat_interval(m_opts))) return;
            line = who(c) + (stopped(c.pid) ? " is stopped (SIGSTOP or a debugger) and" : "") +
                   " missed its heartbeat for " + describe_duration(now - beat);
        }
        log(m_opts, line + ": killing and replacing it");
        ++m_positions[c.index].restarts;
        c.stalled = true;
        c.fd.send_signal(SIGKILL);
    }

    /// The process is in the stopped or traced state ('T' or 't' in /proc/PID/stat): say so,
    /// since its own watchdog thread, stopped with it, cannot.
    static bool stopped(pid_t pid) {
        std::string stat;
        if (!read_file("/proc/" + std::to_string(pid) + "/stat", stat)) return false;
        const std::size_t paren = stat.rfind(')'); // the name may hold spaces and parentheses
        return paren != std::string::npos && paren + 2 < stat.size() &&
               (stat[paren + 2] == 'T' || stat[paren + 2] == 't');
    }

    void read_signals() {
        signalfd_siginfo info;
        while (::read(m_signal_fd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            const int sig = static_cast<int>(info.ssi_signo);
            if (sig == SIGTERM || sig == SIGINT) {
                shutdown(sig == SIGINT ? "SIGINT" : "SIGTERM");
            } else if (m_stopping) {
                continue;
            } else if (sig == SIGHUP) {
                begin_reload();
            } else if (sig == SIGTTIN) {
                if (m_target >= m_opts.max_workers) {
                    log(m_opts, "SIGTTIN: already at max_workers (" + std::to_string(m_opts.max_workers) + ")");
                    continue;
                }
                ++m_target;
                log(m_opts, "SIGTTIN: growing to " + std::to_string(m_target) + " workers");
            } else if (sig == SIGTTOU) {
                if (m_target <= 1) {
                    log(m_opts, "SIGTTOU: keeping the last worker");
                    continue;
                }
                --m_target;
                log(m_opts, "SIGTTOU: shrinking to " + std::to_string(m_target) + " workers");
                m_positions[m_target].respawn_at = 0;
                for (child& c : m_children)
                    if (c.index >= m_target && c.state != worker_state::draining) drain(c, now_ns());
            }
        }
    }

    void shutdown(const std::string& why) {
        if (m_stopping) {
            log(m_opts, why + " again: killing the workers now");
            for (child& c : m_children) c.fd.send_signal(SIGKILL);
            m_forced = true;
            return;
        }
        m_stopping = true;
        m_reload.clear();
        log(m_opts, why + ": draining " +
                        std::to_string(m_children.size()) + " worker" + (m_children.size() == 1 ? "" : "s"));
        const std::int64_t now = now_ns();
        for (child& c : m_children)
            if (c.state != worker_state::draining) drain(c, now);
    }

    void drain(child& c, std::int64_t now) {
        // Killed for stalling and not reaped yet: nothing to drain, and its death is not a
        // failed drain (a shutdown right after a stall would otherwise exit 1).
        if (c.stalled) return;
        c.state = worker_state::draining;
        c.drain_deadline = now + ms_ns(m_opts.drain_timeout);
        (*m_board)[c.seat].state.store(static_cast<std::uint32_t>(worker_state::draining), std::memory_order_release);
        c.fd.send_signal(SIGTERM);
    }

    // ---- reload ------------------------------------------------------------------------

    void begin_reload() {
        for (const child& c : m_children)
            if (c.state != worker_state::draining && c.replaces == 0 &&
                std::find(m_reload.begin(), m_reload.end(), c.pid) == m_reload.end())
                m_reload.push_back(c.pid);
        log(m_opts, "SIGHUP: reloading " + std::to_string(m_reload.size()) + " worker" +
                        (m_reload.size() == 1 ? "" : "s") + ", one at a time");
        if (m_opts.balancing == balance::reuseport && !migrates_requests())
            log(m_opts, "note: reuseport mode with net.ipv4.tcp_migrate_req = 0: a connection still queued on a "
                        "stopping worker's socket is reset (balance::shared, or the sysctl set to 1, avoids it)");
        m_reload_started = true;
        next_reload_step();
    }

    /// Linux >= 5.14 moves connections queued on a closing reuseport socket to a sibling.
    static bool migrates_requests() {
        char c = '0';
        const int fd = ::open("/proc/sys/net/ipv4/tcp_migrate_req", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return false;
        const bool read = ::read(fd, &c, 1) == 1;
        ::close(fd);
        return read && c == '1';
    }

    /// Starts the replacement of the next old worker, unless one is under way.
    void next_reload_step() {
        for (const child& c : m_children)
            if (c.replaces != 0) return; // a replacement is starting
        while (!m_reload.empty()) {
            const pid_t old = m_reload.front();
            m_reload.pop_front();
            child* c = find(old);
            if (!c || c->state == worker_state::draining) continue;
            spawn(c->index, old);
            return;
        }
        if (m_reload_started) {
            m_reload_started = false;
            log(m_opts, "reload complete");
        }
    }

    // ---- workers -----------------------------------------------------------------------

    child* find(pid_t pid) noexcept {
        for (child& c : m_children)
            if (c.pid == pid) return &c;
        return nullptr;
    }

    /// Every index below the target has a worker (not draining), or one waits out its backoff.
    void ensure_workers(std::int64_t now) {
        for (std::size_t i = 0; i < m_target; ++i) {
            bool covered = false;
            for (const child& c : m_children)
                if (c.index == i && c.state != worker_state::draining && !c.stalled) covered = true;
            if (covered) continue;
            position& p = m_positions[i];
            if (p.respawn_at != 0 && now < p.respawn_at) continue;
            p.respawn_at = 0;
            spawn(i, 0);
        }
    }

    void spawn(std::size_t index, pid_t replaces) {
        std::size_t seat_no = m_board->size();
        for (std::size_t i = 0; i < m_board->size(); ++i)
            if ((*m_board)[i].state.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(worker_state::free)) {
                seat_no = i;
                break;
            }
        position& pos = m_positions[index];
        if (seat_no == m_board->size()) { // every seat taken by draining workers: try again later
            pos.respawn_at = now_ns() + ms_ns(m_opts.restart_delay);
            return;
        }
        seat& s = (*m_board)[seat_no];
        const std::uint32_t generation = s.generation.load(std::memory_order_relaxed) + 1;
        const std::int64_t now = now_ns();
        s.generation.store(generation, std::memory_order_relaxed);
        s.index.store(static_cast<std::uint32_t>(index), std::memory_order_relaxed);
        s.pid.store(0, std::memory_order_relaxed);
        s.restarts.store(pos.restarts, std::memory_order_relaxed);
        s.started_ns.store(now, std::memory_order_relaxed);
        s.heartbeat_ns.store(now, std::memory_order_relaxed);
        s.requests.store(0, std::memory_order_relaxed);
        s.delay_p99_ns.store(0, std::memory_order_relaxed);
        s.utilization_ppm.store(0, std::memory_order_relaxed);
        s.state.store(static_cast<std::uint32_t>(worker_state::starting), std::memory_order_release);

        pid_t pid;
        try {
            pid = process::fork_child();
        } catch (const std::exception& e) {
            s.state.store(static_cast<std::uint32_t>(worker_state::free), std::memory_order_release);
            log(m_opts, std::string("cannot start worker ") + std::to_string(index) + ": " + e.what());
            pos.respawn_at = now + ms_ns(m_opts.restart_delay);
            return;
        }
        if (pid == 0) become_worker(index, seat_no, generation);
        s.pid.store(pid, std::memory_order_release);
        child c;
        c.fd = process::pidfd::open(pid); // a zombie until we reap it: cannot fail with ESRCH
        c.pid = pid;
        c.seat = seat_no;
        c.generation = generation;
        c.index = index;
        c.started = now;
        c.replaces = replaces;
        m_children.push_back(std::move(c));
    }

    [[noreturn]] void become_worker(std::size_t index, std::size_t seat_no, std::uint32_t generation) noexcept {
        if (!process::die_with_parent(m_primary)) ::_exit(0);
        // A SIGTERM that arrives before the worker's loop listens for it (the primary's mask,
        // inherited, blocks it) stays pending instead of killing the worker unclean;
        // run_worker unblocks it once its handler is in place.
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        process::reset_signal_state(&term);
        // Job-control and terminal signals are for the primary, which tells the workers what
        // to do with SIGTERM. (A terminal's Ctrl-C reaches the whole process group.)
        for (int s : {SIGINT, SIGHUP, SIGTTIN, SIGTTOU, SIGPIPE}) ::signal(s, SIG_IGN);
        ::prctl(PR_SET_NAME, "tandem-worker");
        // The primary's own descriptors; the listeners stay (shared mode) or go (reuseport).
        ::close(m_signal_fd);
        ::close(m_notify_read.get());
        for (const child& c : m_children) ::close(c.fd.fd());
        deferred<worker_setup> setup;
        setup.opts = &m_opts;
        setup.serve = &m_serve;
        setup.status = m_board.get();
        setup.seat = seat_no;
        setup.generation = generation;
        setup.index = index;
        setup.notify_fd = m_notify_write.get();
        try {
            if (m_opts.balancing == balance::shared) {
                for (const tcp_listener& l : m_listeners) setup.inherited.push_back(l.native_handle());
            } else {
                setup.bound = m_bound;
                for (const tcp_listener& l : m_listeners) ::close(l.native_handle());
            }
        } catch (...) {
            ::_exit(1);
        }
        worker_main<Deferred>(setup);
    }

    void read_notifications() {
        std::uint32_t msg[2];
        while (::read(m_notify_read.get(), msg, sizeof msg) == static_cast<ssize_t>(sizeof msg)) {
            for (child& c : m_children) {
                if (c.seat != msg[0] || c.generation != msg[1] || c.state != worker_state::starting) continue;
                c.state = worker_state::ready;
                c.ready_at = now_ns();
                (*m_board)[c.seat].state.store(static_cast<std::uint32_t>(worker_state::ready), std::memory_order_release);
                log(m_opts, who(c) + " ready");
                if (c.replaces != 0) {
                    const pid_t old = std::exchange(c.replaces, 0);
                    if (child* o = find(old); o && o->state != worker_state::draining) drain(*o, now_ns());
                    next_reload_step();
                }
                break;
            }
        }
        announce_if_ready();
    }

    void announce_if_ready() {
        if (m_announced) return;
        std::size_t ready = 0;
        for (const child& c : m_children) ready += c.state == worker_state::ready;
        if (ready < m_target) return;
        m_announced = true;
        if (!m_opts.on_ready) return;
        try {
            m_opts.on_ready(std::span<const address>(m_bound.data(), m_bound.size()));
        } catch (const std::exception& e) {
            // Thrown out of run(), it would leave the workers running undrained until exit.
            log(m_opts, std::string("on_ready failed: ") + e.what());
        } catch (...) {
            log(m_opts, "on_ready failed");
        }
    }

    void reap(pid_t pid) {
        auto it = std::find_if(m_children.begin(), m_children.end(), [&](const child& c) { return c.pid == pid; });
        if (it == m_children.end()) return;
        deferred<std::optional<process::exit_status>> status;
        try {
            status = it->fd.try_reap();
        } catch (const std::exception&) {
            status = process::exit_status::exited(255);
        }
        if (!status) return; // readable but not yet reapable: next round
        child c = std::move(*it);
        m_children.erase(it);
        seat& s = (*m_board)[c.seat];
        s.state.store(static_cast<std::uint32_t>(worker_state::free), std::memory_order_release);
        const std::int64_t now = now_ns();
        if (c.state == worker_state::draining) {
            log(m_opts, who(c) + " " + (status->success() ? "drained and exited" : status->describe()));
            if (!status->success() && !m_forced && m_stopping) m_forced = true;
            // A reload's replacement drained before it was ready (SIGTTOU took its index):
            // the rest of the reload goes on.
            if (c.replaces != 0 && !m_stopping) next_reload_step();
            return;
        }
        // An unexpected death (or a stall we killed).
        position& p = m_positions[c.index];
        if (!c.stalled) ++p.restarts;
        // A worker killed for stalling after it served is replaced like any other; one that
        // never became ready (it blocks on start) is a failed start, like a crash.
        const bool failed_start = c.state != worker_state::ready;
        const bool young = failed_start || now - c.ready_at < ms_ns(m_opts.min_uptime);
        p.young_deaths = (young && !c.stalled) || failed_start ? p.young_deaths + 1 : 0;
        if (c.replaces != 0) {
            log(m_opts, "reload: the replacement " + who(c) + " " + status->describe() + " before it was ready; " +
                            "keeping the old workers");
            m_reload.clear();
            m_reload_started = false; // abandoned, not complete
        }
        if (m_stopping) {
            log(m_opts, who(c) + " " + status->describe());
            return;
        }
        if (p.young_deaths >= m_opts.max_young_deaths) {
            log(m_opts, "worker " + std::to_string(c.index) + " keeps dying on start (" +
                            std::to_string(p.young_deaths) + " times in a row, last: " + status->describe() +
                            (c.stalled ? ", stalled before it was ready" : "") + "): crash loop, stopping the cluster");
            m_crash_loop = true;
            shutdown("crash loop");
            return;
        }
        std::int64_t delay = 0;
        if (p.young_deaths > 0) {
            delay = ms_ns(m_opts.restart_delay);
            for (unsigned i = 1; i < p.young_deaths && delay < ms_ns(m_opts.max_restart_delay); ++i) delay *= 2;
            delay = std::min(delay, ms_ns(m_opts.max_restart_delay));
        }
        log(m_opts, who(c) + " " + status->describe() + (c.stalled ? " (stalled)" : "") + "; restarting it" +
                        (delay ? " in " + describe_duration(delay) : std::string()));
        if (c.index < m_target) p.respawn_at = delay ? now + delay : 0;
        next_reload_step();
    }

    deferred<options> m_opts;
    serve_function m_serve;
    pid_t m_primary = 0;
    deferred<std::vector<tcp_listener>> m_listeners; // shared: the listening sockets; reuseport: port holders
    deferred<std::vector<address>> m_bound;
    deferred<std::unique_ptr<board>> m_board;
    unique_fd m_notify_read, m_notify_write;
    int m_signal_fd = -1;
    std::vector<child> m_children;
    std::vector<position> m_positions;
    deferred<std::deque<pid_t>> m_reload;
    std::size_t m_target = 0;
    bool m_reload_started = false;
    std::int64_t m_last_check = 0; // when check_timers last ran
    std::int64_t m_stall_epoch = 0; // heartbeats older than this are judged from it (we were paused)
    bool m_announced = false;
    bool m_stopping = false;
    bool m_forced = false;
    bool m_crash_loop = false;
};

} // namespace tandem::cluster::detail
