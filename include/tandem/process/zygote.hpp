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
// terminal reaches the parent, which shuts the pool down, not the workers), reaps its
// workers and reports their exit status, and on end-of-stream from the parent kills them
// and exits: no worker outlives the program, even after SIGKILL.
#pragma once

#include "tandem/detail/process_channel.hpp"
#include "tandem/process/descriptors.hpp"
#include "tandem/process/fork.hpp"
#include "tandem/process/parent_death.hpp"
#include "tandem/process/pidfd.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"

#include <atomic>
#include <chrono>
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
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <typeinfo>
#include <unistd.h>
#include <unordered_map>

namespace tandem::detail {

/// Runs a job in a worker: decodes the arguments, calls the function, encodes the result.
/// `fn` is a function's address (or 0 for a stateless callable type named by the entry).
using job_entry = outgoing_payload (*)(std::uintptr_t fn, const std::byte* args, std::size_t size);
/// Runs once in every new worker before its first job.
using worker_initializer = void (*)();

/// The worker's end of its channel, after the descriptor shuffle.
inline constexpr int worker_channel_fd = 3;

inline std::string demangle(const char* mangled) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
    return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}

/// (type name, what()) of the exception being handled.
inline std::pair<std::string, std::string> describe_current_exception() {
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
[[noreturn]] inline void worker_main(worker_initializer init, std::chrono::microseconds spin) noexcept {
    const int ch = worker_channel_fd;
    static std::byte buffer[max_message];
    auto send_error = [&](frame_kind kind, std::uint64_t id) {
        auto [type, what] = describe_current_exception();
        try {
            outgoing_payload::of(type, what).send(ch, frame_header{.kind = kind, .id = id});
        } catch (...) {
            _exit(3);
        }
    };
    if (init) {
        try {
            init();
        } catch (...) {
            send_error(frame_kind::init_failed, 0);
            _exit(2);
        }
    }
    if (outgoing_payload{}.send(ch, frame_header{.kind = frame_kind::ready}) != 0) _exit(0);
    for (;;) {
        incoming_frame job;
        int got = -EAGAIN;
        try {
            if (spin.count() > 0) {
                const auto until = std::chrono::steady_clock::now() + spin;
                while ((got = job.receive(ch, buffer, MSG_DONTWAIT)) == -EAGAIN && std::chrono::steady_clock::now() < until)
                    ::sched_yield();
            }
            if (got == -EAGAIN) got = job.receive(ch, buffer);
        } catch (...) {
            _exit(4); // the parent sent garbage: nothing sane to do but go
        }
        if (got <= 0 || job.header.kind != frame_kind::job) _exit(0); // parent gone, or quit
        try {
            const auto entry = reinterpret_cast<job_entry>(static_cast<std::uintptr_t>(job.header.entry));
            outgoing_payload result = entry(static_cast<std::uintptr_t>(job.header.fn), job.data(), job.size());
            if (result.send(ch, frame_header{.kind = frame_kind::result, .id = job.header.id}) != 0) _exit(0);
        } catch (...) {
            send_error(frame_kind::error, job.header.id);
        }
    }
}

/// The parent's handle on the zygote: one per process, shared by every pool.
class zygote {
public:
    /// The process's zygote, forked on first use. Forking needs a single-threaded process
    /// unless `allow_threads` (see process_pool_options::allow_threads).
    static std::shared_ptr<zygote> instance(bool allow_threads) {
        registry& r = the_registry();
        std::lock_guard lock(r.mutex);
        if (!r.shared || !r.shared->alive()) {
            check_single_threaded(allow_threads);
            r.shared = std::shared_ptr<zygote>(new zygote());
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

    zygote(const zygote&) = delete;
    zygote& operator=(const zygote&) = delete;
    ~zygote() {
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
    /// spawned/exited on `reports`, tagged with `token`. Returns 0 or an errno.
    int spawn(int channel, int reports, std::uint64_t token, worker_initializer init,
              std::chrono::microseconds spin) noexcept {
        const frame_header h{.kind = frame_kind::spawn,
                             .id = static_cast<std::uint64_t>(spin.count()),
                             .entry = reinterpret_cast<std::uintptr_t>(init),
                             .fn = token};
        return note(outgoing_payload::send_frame(m_control.get(), h, nullptr, 0, channel, reports));
    }
    /// SIGKILLs a worker, if it is still the zygote's live child (no pid-reuse race: only its
    /// parent may reap it).
    void kill(pid_t worker) noexcept {
        const frame_header h{.kind = frame_kind::kill, .id = static_cast<std::uint64_t>(worker)};
        note(outgoing_payload::send_frame(m_control.get(), h, nullptr, 0, -1, -1));
    }

private:
    struct registry {
        std::mutex mutex;
        std::shared_ptr<zygote> shared;
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
        new (&r.shared) std::shared_ptr<zygote>(); // the old value is the parent's: forget it
        new (&r.mutex) std::mutex();
    }

    zygote() {
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
        ::signal(SIGINT, SIG_IGN);
        ::signal(SIGPIPE, SIG_IGN);
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        ::sigprocmask(SIG_BLOCK, &chld, nullptr);
        const int sigfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sigfd < 0) _exit(101);
        ::prctl(PR_SET_NAME, "tandem-zygote");

        std::unordered_map<pid_t, int> workers; // pid → its pool's report descriptor
        static std::byte buffer[max_message];
        auto report = [](int fd, frame_kind kind, std::uint64_t id, std::uint64_t value) {
            const frame_header h{.kind = kind, .id = id, .fn = value};
            outgoing_payload::send_frame(fd, h, nullptr, 0, -1, -1); // a pool that left reads nothing
        };
        auto reap = [&] {
            int status = 0;
            pid_t pid;
            while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
                auto it = workers.find(pid);
                if (it == workers.end()) continue;
                report(it->second, frame_kind::exited, static_cast<std::uint64_t>(pid), static_cast<std::uint32_t>(status));
                ::close(it->second);
                workers.erase(it);
            }
        };
        for (;;) {
            pollfd fds[2] = {{control, POLLIN, 0}, {sigfd, POLLIN, 0}};
            if (::poll(fds, 2, -1) < 0 && errno != EINTR) break;
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
                got = cmd.receive(control, buffer, MSG_DONTWAIT, 2);
            } catch (...) {
                continue;
            }
            if (got == -EAGAIN) continue;
            if (got <= 0) break; // the parent is gone
            if (cmd.header.kind == frame_kind::kill) {
                const auto pid = static_cast<pid_t>(cmd.header.id);
                if (workers.count(pid)) ::kill(pid, SIGKILL);
            } else if (cmd.header.kind == frame_kind::spawn && cmd.passed[0] && cmd.passed[1]) {
                const pid_t self = ::getpid();
                const pid_t pid = ::fork();
                if (pid == 0) {
                    become_worker(cmd.passed[0].release(), self,
                                  reinterpret_cast<worker_initializer>(static_cast<std::uintptr_t>(cmd.header.entry)),
                                  std::chrono::microseconds(static_cast<long>(cmd.header.id)));
                }
                if (pid < 0) {
                    report(cmd.passed[1].get(), frame_kind::spawn_failed, static_cast<std::uint64_t>(errno),
                           cmd.header.fn);
                    continue;
                }
                report(cmd.passed[1].get(), frame_kind::spawned, static_cast<std::uint64_t>(pid), cmd.header.fn);
                workers.emplace(pid, cmd.passed[1].release());
            }
        }
        for (auto& [pid, fd] : workers) ::kill(pid, SIGKILL);
        while (!workers.empty()) {
            int status;
            const pid_t pid = ::waitpid(-1, &status, 0);
            if (pid < 0 && errno != EINTR) break;
            workers.erase(pid);
        }
        _exit(0);
    }

    [[noreturn]] static void become_worker(int channel, pid_t zygote_pid, worker_initializer init,
                                           std::chrono::microseconds spin) noexcept {
        if (process::move_descriptor(channel, worker_channel_fd) < 0) _exit(100);
        process::close_descriptors_from(worker_channel_fd + 1);
        // Die with the zygote (which dies with the parent).
        if (!process::die_with_parent(zygote_pid)) _exit(0);
        process::reset_signal_state();
        ::prctl(PR_SET_NAME, "tandem-worker");
        worker_main(init, spin);
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
inline void start_zygote() { (void)detail::zygote::instance(false); }

} // namespace tandem
