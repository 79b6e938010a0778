// tandem — epoll reactor. Layer: detail (loop).
// Each fd is registered once, edge-triggered, for both directions; the loop remembers edges
// that arrive while nobody waits. Timeouts have nanosecond resolution through epoll_pwait2
// (Linux 5.11+); older kernels fall back to epoll_wait with the timeout rounded up.
#pragma once

#include "tandem/detail/fd_indexed.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"

#include <cstdint>
#include <limits>
#include <optional>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace tandem::detail {

class epoll_reactor {
public:
    static constexpr const char* name = "epoll";

    epoll_reactor() : m_epoll(::epoll_create1(EPOLL_CLOEXEC)) {
        if (!m_epoll) throw_errno("epoll_create1");
    }

    /// Declares interest. epoll registers the fd on first use and ignores the directions:
    /// edge-triggered registration for both never needs changing.
    /// EPOLLPRI: TCP urgent data stops a read short at its mark with bytes left behind, so it
    /// is remembered like a hang-up (see hung_up).
    void watch(int fd, bool /*read*/, bool /*write*/) { add(fd, EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET); }

    /// Declares interest in readability alone, for a user that never waits to write on fd
    /// (the process pool's dispatcher): no EPOLLOUT edge, and so no wake-up, each time the
    /// peer drains the socket. Forget it before watching it otherwise.
    void watch_read_only(int fd) { add(fd, EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLET); }

    /// Registers a listening socket that other processes' loops watch too (a prefork
    /// cluster's shared accept queue) so that a new connection wakes one waiting loop, not
    /// all of them (EPOLLEXCLUSIVE, Linux 4.5+). Read readiness only: the kernel refuses
    /// EPOLLRDHUP with it, and a listener never writes. Replaces a plain registration.
    void watch_exclusive(int fd) {
        forget(fd);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLET | EPOLLEXCLUSIVE;
        ev.data.fd = fd;
        m_flags.cover(fd); // first: a registration is never left unrecorded
        if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl(ADD, EPOLLEXCLUSIVE)");
        m_flags[fd] |= registered;
    }

    void forget(int fd) noexcept {
        if (!has(fd, registered)) {
            if (m_flags.known(fd)) m_flags[fd] = 0;
            return;
        }
        m_flags[fd] = 0;
        // Fails harmlessly (EBADF/ENOENT) if the fd was already closed.
        ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
    }

    /// True if a wait would report something now. Consumes no edge: it polls the epoll fd,
    /// which is readable while events are pending.
    bool has_events_now() noexcept {
        pollfd p{m_epoll.get(), POLLIN, 0};
        return ::poll(&p, 1, 0) > 0;
    }

    /// Waits up to `timeout` (a std::optional<std::chrono::nanoseconds>; nullopt: forever) and
    /// calls on_event(fd, readable, writable). A template in the timeout's type too, so that
    /// std::optional is compiled only where a loop waits (dependent.hpp).
    template <class Timeout, class OnEvent>
    void wait(const Timeout& timeout, OnEvent&& on_event) {
        const int n = wait_raw(timeout);
        for (int i = 0; i < n; ++i) {
            const std::uint32_t e = m_events[i].events;
            const bool failed = (e & (EPOLLERR | EPOLLHUP)) != 0;
            if (failed || (e & (EPOLLRDHUP | EPOLLPRI)) != 0) note_hang_up(m_events[i].data.fd);
            on_event(m_events[i].data.fd, failed || (e & (EPOLLIN | EPOLLPRI | EPOLLRDHUP)) != 0, failed || (e & EPOLLOUT) != 0);
        }
    }

    /// True once fd reported the peer's end of stream (EPOLLRDHUP), a hang-up, an error or
    /// TCP urgent data (EPOLLPRI), until it is forgotten: from then on a short read does not
    /// prove the socket empty. Edges are one-shot but this is a state: a reader that emptied
    /// the socket in one short read still has to read once more to see a FIN that came with
    /// the last bytes, as no new edge will say so (tokio keeps READ_CLOSED sticky the same
    /// way); a read stops short at an urgent byte's mark with the bytes after it still queued.
    bool hung_up(int fd) const noexcept { return has(fd, hung_up_flag); }

private:
    static constexpr std::uint8_t registered = 1, hung_up_flag = 2;
    bool has(int fd, std::uint8_t flag) const noexcept { return m_flags.known(fd) && (m_flags[fd] & flag) != 0; }

    void note_hang_up(int fd) noexcept {
        // A reported fd was registered through add or watch_exclusive, which made its room.
        if (m_flags.known(fd)) m_flags[fd] |= hung_up_flag;
    }
    void add(int fd, std::uint32_t events) {
        if (has(fd, registered)) return;
        m_flags.cover(fd); // first: a registration is never left unrecorded
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = fd;
        if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST) throw_errno("epoll_ctl(ADD)");
        m_flags[fd] |= registered;
    }

    template <class Timeout>
    int wait_raw(const Timeout& timeout) {
        int n;
#if defined(SYS_epoll_pwait2)
        // Only a finite, non-zero timeout needs nanoseconds; zero and "forever" (the hot
        // cases: busy loop, idle loop) take the plain call.
        if (m_have_pwait2 && timeout && timeout->count() > 0) {
            timespec ts{};
            if (timeout) {
                ts.tv_sec = static_cast<time_t>(timeout->count() / 1'000'000'000);
                ts.tv_nsec = static_cast<long>(timeout->count() % 1'000'000'000);
            }
            n = static_cast<int>(::syscall(SYS_epoll_pwait2, m_epoll.get(), m_events, max_events,
                                           timeout ? &ts : nullptr, nullptr, 0));
            if (n >= 0) return n;
            if (errno == EINTR) return 0;
            if (errno != ENOSYS) throw_errno("epoll_pwait2");
            m_have_pwait2 = false;
        }
#endif
        int ms = -1;
        if (timeout) { // rounded up, and capped: a far deadline must not overflow into "forever" or the past
            const auto rounded = timeout->count() / 1'000'000 + (timeout->count() % 1'000'000 != 0);
            ms = static_cast<int>(std::min<decltype(rounded)>(rounded, std::numeric_limits<int>::max()));
        }
        n = ::epoll_wait(m_epoll.get(), m_events, max_events, ms);
        if (n < 0) {
            if (errno == EINTR) return 0;
            throw_errno("epoll_wait");
        }
        return n;
    }

    static constexpr int max_events = 256;
    unique_fd m_epoll;
    fd_indexed<std::uint8_t> m_flags; // per fd: registered, hung_up_flag (not a vector: see fd_indexed.hpp)
    bool m_have_pwait2 = true;
    epoll_event m_events[max_events];
};

} // namespace tandem::detail
