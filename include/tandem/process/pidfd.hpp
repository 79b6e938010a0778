// tandem — process::pidfd: a descriptor for one process (Linux 5.3+), to wait for, signal and
// reap it without the pid-reuse race of kill(pid)/waitpid(pid).
//
// Layer: process (ground floor of the wing). Knows nothing of pools or the loop; a pidfd
// becomes readable when its process ends, so a reactor can watch it like a socket.
//
// Why: a pid is a name that the kernel hands out again once the process is reaped; a signal
// sent to a stale pid hits a stranger. A pidfd always means the process it was opened for.
// Reaping goes through waitid(P_PIDFD) for the same reason (Linux 5.4+).
#pragma once

#include "tandem/process/exit_status.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"

#include <cerrno>
#include <csignal>
#include <optional>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

namespace tandem::process {

class pidfd {
public:
    pidfd() = default;

    /// A pidfd for `pid` (close-on-exec). Throws std::system_error (ESRCH: no such process;
    /// ENOSYS: kernel older than 5.3).
    static pidfd open(pid_t pid) {
        pidfd p = try_open(pid);
        if (!p) detail::throw_errno("tandem: pidfd_open");
        return p;
    }
    /// As open(), but an empty pidfd (errno set) instead of an exception.
    static pidfd try_open(pid_t pid) noexcept {
        pidfd p;
        p.m_fd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
        if (p.m_fd) p.m_pid = pid;
        return p;
    }

    explicit operator bool() const noexcept { return static_cast<bool>(m_fd); }
    int fd() const noexcept { return m_fd.get(); }
    pid_t pid() const noexcept { return m_pid; }

    /// True once the process has ended (reaped or not). Never blocks.
    bool exited() const noexcept {
        if (!m_fd) return true;
        pollfd p{m_fd.get(), POLLIN, 0};
        return detail::retry_on_eintr([&] { return ::poll(&p, 1, 0); }) > 0;
    }

    /// Sends `sig` to the process; never to a stranger that reused its pid. 0 or an errno
    /// (ESRCH: it has ended).
    int send_signal(int sig) const noexcept {
        if (!m_fd) return EBADF;
        return ::syscall(SYS_pidfd_send_signal, m_fd.get(), sig, nullptr, 0) == 0 ? 0 : errno;
    }

    /// Reaps our child if it has ended: its exit status, or nothing if it still runs.
    /// Throws std::system_error (ECHILD: not our child, or already reaped).
    /// (A template only so that std::optional's constexpr members are compiled where it is
    /// called, not in every translation unit: detail/dependent.hpp.)
    template <class Deferred = void>
    detail::dependent_t<std::optional<exit_status>, Deferred> try_reap() const {
        siginfo_t info{};
        if (!wait_for(WNOHANG, info)) return std::nullopt;
        return exit_status::from_siginfo(info);
    }
    /// Waits for our child to end and reaps it.
    exit_status reap() const {
        siginfo_t info{};
        wait_for(0, info);
        return exit_status::from_siginfo(info);
    }

private:
    /// False: WNOHANG, and the child still runs.
    bool wait_for(int options, siginfo_t& info) const {
        // P_PIDFD is 3 in the kernel ABI; spelled as a number for C libraries that predate it.
        const int r = detail::retry_on_eintr(
            [&] { return ::waitid(static_cast<idtype_t>(3), static_cast<id_t>(m_fd.get()), &info, WEXITED | options); });
        if (r != 0) detail::throw_errno("tandem: waitid(P_PIDFD)");
        return info.si_pid != 0;
    }

    detail::unique_fd m_fd;
    pid_t m_pid = 0;
};

} // namespace tandem::process
