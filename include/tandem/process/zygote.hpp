// tandem — the zygote: a small single-threaded process, forked once, that forks every
// process_pool worker; and tandem::start_zygote(), which forks it early.
//
// Layer: process. Stands on the wing's ground floor (fork, descriptors, parent_death,
// pidfd) and the channel; knows nothing of the pool that talks to it.
//
// Why: fork() copies only the calling thread. Forking a worker from a parent that runs a
// loop, a thread pool and a logger would copy locks those threads held (malloc's among them)
// in their locked state, and the worker would deadlock at its first allocation. The zygote is
// forked before any such thread exists and stays single-threaded, so replacing a crashed
// worker at any later time is safe.
//
// The zygote closes every descriptor it inherited except its control channel (a worker never
// inherits the parent's listening sockets), moves to its own process group (a Ctrl-C in the
// terminal reaches the parent, which shuts the pool down, not the workers), drops the
// parent's signal dispositions and mask (it must see SIGCHLD to report), reaps its
// workers and reports their exit status, and on end-of-stream from the parent kills them
// and exits: no worker outlives the program, even after SIGKILL.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/fork_generation.hpp"
#include "tandem/detail/spin.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"
#include "tandem/process/channel.hpp"
#include "tandem/process/descriptors.hpp"
#include "tandem/process/fork.hpp"
#include "tandem/process/parent_death.hpp"
#include "tandem/process/pidfd.hpp"
#include "tandem/process/start_board.hpp"

#include <atomic>
#include <sched.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <dirent.h>
#include <fcntl.h>
#include <exception>
#include <memory>
#include <new>
#include <mutex>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <typeinfo>
#include <unistd.h>
#include <deque>
#include <vector>

namespace tandem::detail {

/// The worker's end of its channel, after the descriptor shuffle.
inline constexpr int worker_channel_fd = 3;
/// Where a new worker finds its pool's start board (mapped, then closed).
inline constexpr int worker_board_fd = 4;

template <class = void> // compiled only where used (bench/README.md, "Include cost")
std::string demangle(const char* mangled) {
    int status = 0;
    struct freed { // not a std::unique_ptr: its constexpr members would compile in every TU
        char* p;
        ~freed() { std::free(p); }
    } name{abi::__cxa_demangle(mangled, nullptr, nullptr, &status)};
    return status == 0 && name.p ? std::string(name.p) : std::string(mangled);
}

/// (type name, what()) of the exception being handled.
template <class Deferred = void> // Deferred: see detail/dependent.hpp
dependent_t<std::pair<std::string, std::string>, Deferred> describe_current_exception() {
    std::string type = "unknown exception";
    if (const std::type_info* t = abi::__cxa_current_exception_type()) type = demangle(t->name());
    try {
        throw;
    } catch (const std::exception& e) {
        return {type, e.what()};
    } catch (...) {
        return {type, ""};
    }
}

/// A worker's life: run the initializer, then jobs until the parent says quit or goes away.
/// Between jobs it polls its channel for `spin` before blocking (see process_pool_options).
/// Each job's id goes on the start board (slot `slot`) before the job runs.
template <class Deferred = void> // Deferred: see detail/dependent.hpp
[[noreturn]] void worker_main(worker_initializer init, std::chrono::microseconds spin,
                                     const process::start_board& board, std::size_t slot) noexcept {
    const int ch = worker_channel_fd;
    static std::byte buffer[max_message];
    auto send_error = [&](frame_header h) {
        auto [type, what] = describe_current_exception<Deferred>();
        try {
            outgoing_payload::of(type, what).send(ch, h);
        } catch (...) {
            _exit(3);
        }
    };
    if (init) {
        try {
            init();
        } catch (...) {
            send_error(frame_header::init_failed());
            _exit(2);
        }
    }
    if (outgoing_payload{}.send(ch, frame_header::ready()) != 0) _exit(0);
    // A job that fork()s and returns in both processes would leave two readers on one
    // channel: the copy could answer for the worker, or take its next job or its quit (then
    // the worker waits forever and so does the pool's shutdown). Only the worker speaks; a
    // copy that comes back here leaves at once.
    const fork_generation self;
    for (;;) {
        incoming_frame job;
        int got = -EAGAIN;
        try {
            spin_until_ready(spin, [&] { return (got = job.receive(ch, buffer, MSG_DONTWAIT)) != -EAGAIN; });
            if (got == -EAGAIN) got = job.receive(ch, buffer);
        } catch (...) {
            _exit(4); // the parent sent garbage: nothing sane to do but go
        }
        if (got <= 0 || job.header.kind() != frame_kind::job) _exit(0); // parent gone, or quit
        board.mark_started(slot, job.header.job_id());
        try {
            const auto entry = reinterpret_cast<job_entry>(job.header.entry());
            outgoing_payload result = entry(job.header.function(), job.data(), job.size());
            if (self.forked_copy()) _exit(0);
            if (result.send(ch, frame_header::result(job.header.job_id())) != 0) _exit(0);
        } catch (...) {
            if (self.forked_copy()) _exit(0);
            send_error(frame_header::error(job.header.job_id()));
        }
    }
}

/// The zygote's ends of its pools' report sockets. A spawn request passes its pool's socket
/// every time; the zygote keeps one descriptor per pool (duplicates, found by inode, are
/// closed), so a pool of 1,000 workers costs the zygote one descriptor, not 1,000.
///
/// The zygote never blocks on a pool: a report that does not fit waits in that pool's
/// backlog until the socket has room. Otherwise a pool that sends many spawn requests before
/// it reads any report (a constructor starting 1,000 workers) and a zygote whose reports
/// fill the pool's socket would each wait for the other forever. A backlog holds at most a
/// spawned and an exited report per worker the pool asked for. (A class template only so
/// that including this header compiles none of its bodies.)
template <class Deferred> // Deferred: see detail/dependent.hpp
class basic_report_links {
public:
    using key = std::uint64_t; // the socket's inode
    static constexpr key none = 0;

    /// Takes a pool's socket for one more worker; none if it cannot be identified.
    key adopt(unique_fd fd) {
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0) return none;
        const key k = static_cast<key>(st.st_ino) + 1;
        auto it = find(k);
        if (it == m_links.end()) it = m_links.emplace(m_links.end(), k, link{});
        link& l = it->second;
        if (!l.fd) l.fd = std::move(fd); // else: a duplicate, closed here
        ++l.users;
        return k;
    }
    void send(key k, const frame_header& h) {
        auto it = find(k);
        if (it == m_links.end() || it->second.gone) return;
        link& l = it->second;
        if (l.backlog.empty() && try_send(l, h)) return;
        if (!l.gone) l.backlog.push_back(h);
    }
    /// A worker of the pool was reaped (or never started).
    void drop_user(key k) {
        auto it = find(k);
        if (it == m_links.end()) return;
        if (it->second.users > 0) --it->second.users;
        close_if_done(it);
    }
    /// Adds a POLLOUT entry for every socket with a backlog.
    void add_backlogged(dependent_t<std::vector<pollfd>, Deferred>& fds) const {
        for (const auto& [k, l] : m_links)
            if (!l.backlog.empty() && !l.gone) fds.push_back({l.fd.get(), POLLOUT, 0});
    }
    /// Sends what fits of the backlogs whose sockets became writable (fds from `first` on).
    void flush_writable(const dependent_t<std::vector<pollfd>, Deferred>& fds, std::size_t first) {
        for (std::size_t i = first; i < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            for (auto it = m_links.begin(); it != m_links.end(); ++it) {
                if (it->second.fd.get() != fds[i].fd) continue;
                link& l = it->second;
                while (!l.backlog.empty() && try_send(l, l.backlog.front())) l.backlog.pop_front();
                if (l.gone) l.backlog.clear();
                close_if_done(it);
                break;
            }
        }
    }

private:
    struct link {
        unique_fd fd;
        std::size_t users = 0;
        dependent_t<std::deque<frame_header>, Deferred> backlog;
        bool gone = false; // the pool closed its end: drop its reports
    };
    // A vector searched in order, not a hash map: a process has a handful of pools, and
    // <unordered_map> would cost every translation unit that includes tandem (bench/README.md,
    // "Include cost").
    using iterator = typename std::vector<std::pair<key, link>>::iterator;

    iterator find(key k) {
        return std::find_if(m_links.begin(), m_links.end(), [k](const auto& entry) { return entry.first == k; });
    }

    /// True if sent; false if it must wait (EAGAIN) or the pool is gone (then `gone`).
    static bool try_send(link& l, const frame_header& h) noexcept {
        const int err = outgoing_payload::send_frame(l.fd.get(), h, nullptr, 0, {}, MSG_DONTWAIT);
        if (err == 0) return true;
        if (err != EAGAIN && err != EWOULDBLOCK) l.gone = true;
        return false;
    }
    void close_if_done(iterator it) {
        if (it->second.users == 0 && (it->second.backlog.empty() || it->second.gone)) m_links.erase(it);
    }

    std::vector<std::pair<key, link>> m_links;
};

using report_links = basic_report_links<void>;

template <class>
class basic_zygote;
using zygote = basic_zygote<void>;

/// The parent's handle on the zygote: one per process, shared by every pool.
/// A class template with one instantiation only so that including this header compiles none
/// of its bodies (bench/README.md, "Include cost").
template <class Deferred> // Deferred: see detail/dependent.hpp
class basic_zygote {
public:
    /// The process's zygote, forked on first use. Forking needs a single-threaded process
    /// unless `allow_threads` (see process_pool_options::allow_threads).
    static std::shared_ptr<basic_zygote> instance(bool allow_threads) {
        registry& r = the_registry();
        std::lock_guard lock(r.mutex);
        if (r.owner != ::getpid()) {
            // A forked copy of the program: the zygote it remembers is its parent's.
            new (&r.shared) std::shared_ptr<basic_zygote>(); // forgotten, not destroyed
            r.owner = ::getpid();
        }
        if (r.shared && !r.shared->alive()) {
            // Killed (an operator, the OOM killer): replace it, or every job of the pool
            // being built would fail. Forking a new one has the same rule as the first.
            if (!allow_threads && !process::single_threaded())
                throw std::logic_error("tandem: the process-pool zygote (pid " + std::to_string(r.shared->pid()) +
                                       ") died, and a new one cannot be forked safely now that this process runs " +
                                       std::to_string(process::thread_count()) +
                                       " threads; process_pool_options::allow_threads forces it");
            r.shared.reset();
        }
        if (!r.shared) {
            check_single_threaded(allow_threads);
            r.shared = std::shared_ptr<basic_zygote>(new basic_zygote());
        }
        return r.shared;
    }

    /// Throws std::logic_error if other threads run (forking now would be unsafe).
    static void check_single_threaded(bool allow_threads) {
        const std::size_t threads = process::thread_count();
        if (!allow_threads && !process::single_threaded())
            throw std::logic_error(
                "tandem: process_pool must be created before this process starts threads (it has " +
                std::to_string(threads) +
                "): a forked copy would inherit locks held by the other threads and deadlock. "
                "Create the first process_pool at the top of main, or call tandem::start_zygote() there; "
                "process_pool_options::allow_threads forces it");
    }

    basic_zygote(const basic_zygote&) = delete;
    basic_zygote& operator=(const basic_zygote&) = delete;
    ~basic_zygote() {
        m_control.reset(); // end of stream: the zygote kills what is left and exits
        int status;
        retry_on_eintr([&] { return ::waitpid(m_pid, &status, 0); });
    }

    pid_t pid() const noexcept { return m_pid; }
    /// False once the zygote is known dead: a send failed, or (where pidfds exist) the
    /// process ended, even if nobody has talked to it since.
    bool alive() const noexcept {
        if (m_dead.load(std::memory_order_relaxed)) return false;
        if (m_pidfd && m_pidfd.exited()) {
            m_dead.store(true, std::memory_order_relaxed);
            return false;
        }
        return true;
    }
    /// The zygote's pidfd (readable once it dies), or -1 on kernels without pidfds.
    int pidfd() const noexcept { return m_pidfd ? m_pidfd.fd() : -1; }

    /// Forks a worker that serves `channel` and runs `init` first; the zygote reports
    /// spawned/exited on `reports`, tagged with `token`, whose low 32 bits are the worker's
    /// slot on `board` (a start_board's fd, or -1). Returns 0 or an errno.
    int spawn(int channel, int reports, int board, std::uint64_t token, worker_initializer init,
              std::chrono::microseconds spin) noexcept {
        const auto h = frame_header::spawn(token, reinterpret_cast<std::uintptr_t>(init), spin.count());
        return note(outgoing_payload::send_frame(m_control.get(), h, nullptr, 0, {channel, reports, board}));
    }
    /// SIGKILLs a worker, if it is still the zygote's live child (no pid-reuse race: only its
    /// parent may reap it).
    void kill(pid_t worker) noexcept {
        note(outgoing_payload::send_frame(m_control.get(), frame_header::kill(worker), nullptr, 0, {}));
    }

private:
    struct registry {
        std::mutex mutex;
        std::shared_ptr<basic_zygote> shared;
        pid_t owner = ::getpid();
    };
    static registry& the_registry() noexcept {
        static registry r;
        return r;
    }
    /// In a freshly forked zygote: the registry is a copy of the parent's, its mutex held by
    /// the forking call and its zygote the parent's. Start over, so a job may build a
    /// process_pool of its own (it gets its own zygote). The copies are dropped, not
    /// destroyed: they describe the parent's resources.
    static void reset_registry_after_fork() noexcept {
        registry& r = the_registry();
        new (&r.shared) std::shared_ptr<basic_zygote>(); // the old value is the parent's: forget it
        new (&r.mutex) std::mutex();
        r.owner = ::getpid();
    }

    basic_zygote() {
        auto [parent_end, zygote_end] = make_channel();
        const pid_t pid = process::fork_child();
        if (pid == 0) {
            const int fd = zygote_end.release();
            parent_end.release(); // closed below with the rest
            reset_registry_after_fork();
            run(fd);
        }
        m_pid = pid;
        m_control = std::move(parent_end);
        m_pidfd = process::pidfd::try_open(pid); // liveness; without it (Linux < 5.3), EPIPE tells
    }

    int note(int error) noexcept {
        if (error == EPIPE || error == ECONNRESET || error == ENOTCONN) m_dead.store(true, std::memory_order_relaxed);
        return error;
    }

    /// The zygote's life: fork workers on request, reap them, report.
    [[noreturn]] static void run(int control) noexcept {
        // Keep only the control channel, at fd 3.
        if (process::move_descriptor(control, worker_channel_fd) < 0) _exit(100);
        control = worker_channel_fd;
        process::close_descriptors_from(control + 1);
        ::setpgid(0, 0);
        // Nothing of the parent's signal set-up: with SIGCHLD ignored (a daemon's habit) the
        // kernel would reap the workers itself and no death would ever be reported; a
        // blocked SIGTERM would make the zygote deaf to an operator; a handler would run the
        // parent's code on descriptors the zygote closed.
        process::reset_signal_state();
        ::signal(SIGINT, SIG_IGN);
        ::signal(SIGPIPE, SIG_IGN);
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        ::sigprocmask(SIG_BLOCK, &chld, nullptr);
        const int sigfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sigfd < 0) _exit(101);
        ::prctl(PR_SET_NAME, "tandem-zygote");

        basic_report_links<Deferred> links;
        // Each worker's pool's report link, sorted by pid.
        struct worker_link {
            pid_t pid;
            typename basic_report_links<Deferred>::key link;
        };
        std::vector<worker_link> workers;
        auto worker_at = [&](pid_t pid) {
            return std::lower_bound(workers.begin(), workers.end(), pid,
                                    [](const worker_link& w, pid_t p) { return w.pid < p; });
        };
        auto find_worker = [&](pid_t pid) {
            auto it = worker_at(pid);
            return it != workers.end() && it->pid == pid ? it : workers.end();
        };
        static std::byte buffer[max_message];
        auto reap = [&] {
            int status = 0;
            pid_t pid;
            while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
                auto it = find_worker(pid);
                if (it == workers.end()) continue;
                links.send(it->link, frame_header::exited(pid, status));
                links.drop_user(it->link);
                workers.erase(it);
            }
        };
        dependent_t<std::vector<pollfd>, Deferred> fds;
        for (;;) {
            fds.assign({{control, POLLIN, 0}, {sigfd, POLLIN, 0}});
            links.add_backlogged(fds);
            if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
            links.flush_writable(fds, 2);
            if (fds[1].revents) {
                signalfd_siginfo info;
                while (::read(sigfd, &info, sizeof info) > 0) {
                }
                reap();
            }
            if (!fds[0].revents) continue;
            incoming_frame cmd;
            int got;
            try {
                got = cmd.receive(control, buffer, MSG_DONTWAIT, max_passed);
            } catch (...) {
                continue;
            }
            if (got == -EAGAIN) continue;
            if (got <= 0) break; // the parent is gone
            if (cmd.header.kind() == frame_kind::kill) {
                const pid_t pid = cmd.header.pid();
                if (find_worker(pid) != workers.end()) ::kill(pid, SIGKILL);
            } else if (cmd.header.kind() == frame_kind::spawn && cmd.passed[0] && cmd.passed[1]) {
                const auto link = links.adopt(std::move(cmd.passed[1]));
                if (link == links.none) continue;
                const pid_t self = ::getpid();
                const pid_t pid = ::fork();
                if (pid == 0) {
                    become_worker(cmd.passed[0].release(), cmd.passed[2].release(),
                                  static_cast<std::size_t>(cmd.header.token() & 0xffffffffu), self,
                                  reinterpret_cast<worker_initializer>(cmd.header.initializer()),
                                  std::chrono::microseconds(cmd.header.spin_us()));
                }
                if (pid < 0) {
                    links.send(link, frame_header::spawn_failed(cmd.header.token(), errno));
                    links.drop_user(link);
                    continue;
                }
                links.send(link, frame_header::spawned(pid, cmd.header.token()));
                workers.insert(worker_at(pid), worker_link{pid, link}); // a pid is unique until reaped
            }
        }
        for (const worker_link& w : workers) ::kill(w.pid, SIGKILL);
        while (!workers.empty()) {
            int status;
            const pid_t pid = ::waitpid(-1, &status, 0);
            if (pid < 0 && errno != EINTR) break;
            if (auto it = find_worker(pid); it != workers.end()) workers.erase(it);
        }
        _exit(0);
    }

    [[noreturn]] static void become_worker(int channel, int board, std::size_t slot, pid_t zygote_pid,
                                           worker_initializer init, std::chrono::microseconds spin) noexcept {
        if (process::move_descriptor(channel, worker_channel_fd) < 0) _exit(100);
        ::fcntl(worker_channel_fd, F_SETFD, FD_CLOEXEC); // a job's subprocess does not get the channel
        if (board >= 0 && process::move_descriptor(board, worker_board_fd) < 0) _exit(100);
        process::close_descriptors_from(board >= 0 ? worker_board_fd + 1 : worker_channel_fd + 1);
        const process::start_board started = process::start_board::attach(board >= 0 ? worker_board_fd : -1);
        // Die with the zygote (which dies with the parent).
        if (!process::die_with_parent(zygote_pid)) _exit(0);
        process::reset_signal_state();
        ::prctl(PR_SET_NAME, "tandem-worker");
        worker_main<Deferred>(init, spin, started, slot);
    }

    pid_t m_pid = -1;
    unique_fd m_control;
    process::pidfd m_pidfd;
    mutable std::atomic<bool> m_dead{false};
};

} // namespace tandem::detail

namespace tandem {

/// Forks the process-pool zygote now. Call it at the top of main when process pools will be
/// created later, after threads have started. Throws std::logic_error if threads already run.
template <class Deferred = void> // Deferred: see detail/dependent.hpp
void start_zygote() {
    (void)detail::basic_zygote<Deferred>::instance(false);
}

} // namespace tandem
