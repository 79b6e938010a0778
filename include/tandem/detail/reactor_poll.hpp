// tandem — portable poll() reactor: the fallback for non-Linux POSIX, and forced on Linux
// with TANDEM_REACTOR_POLL so the suite proves the loop does not depend on epoll's quirks.
// Level-triggered: only fds with a waiter are polled. Layer: detail (loop).
#pragma once

#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/syscall.hpp"

#include <optional>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <vector>

namespace tandem::detail {

class poll_reactor {
public:
    static constexpr const char* name = "poll";

    void watch(int fd, bool read, bool write) {
        const short events = static_cast<short>((read ? POLLIN : 0) | (write ? POLLOUT : 0));
        if (static_cast<std::size_t>(fd) >= m_interest.size()) m_interest.resize(fd + 1, 0);
        if (m_interest[fd] != events) {
            m_interest[fd] = events;
            m_dirty = true;
        }
    }

    /// Readability alone (see epoll_reactor::watch_read_only; poll is level-triggered and
    /// already asks only for what it is told).
    void watch_read_only(int fd) { watch(fd, true, false); }
    /// poll() has no one-waiter wake-up: every loop polling a shared listener wakes, and
    /// all but one find accept() empty. Registration happens in watch() as usual.
    void watch_exclusive(int /*fd*/) noexcept {}

    void forget(int fd) noexcept {
        if (static_cast<std::size_t>(fd) < m_interest.size() && m_interest[fd] != 0) {
            m_interest[fd] = 0;
            m_dirty = true;
        }
    }

    /// Unknown here, and never needed: poll is level-triggered, so a wait sees an end of
    /// stream, or bytes queued behind an urgent byte's mark, that are already there (see
    /// epoll_reactor::hung_up).
    bool hung_up(int /*fd*/) const noexcept { return false; }

    /// True if a wait would report something now (level-triggered: nothing is consumed).
    bool has_events_now() {
        if (m_dirty) rebuild();
        return ::poll(m_fds.data(), m_fds.size(), 0) > 0;
    }

    /// Waits up to `timeout` (a std::optional<std::chrono::nanoseconds>; nullopt: forever) and
    /// calls on_event(fd, readable, writable). A template in the timeout's type too, so that
    /// std::optional is compiled only where a loop waits (dependent.hpp).
    template <class Timeout, class OnEvent>
    void wait(const Timeout& timeout, OnEvent&& on_event) {
        if (m_dirty) rebuild();
        timespec ts{};
        if (timeout) {
            ts.tv_sec = static_cast<time_t>(timeout->count() / 1'000'000'000);
            ts.tv_nsec = static_cast<long>(timeout->count() % 1'000'000'000);
        }
        const int n = ::ppoll(m_fds.data(), m_fds.size(), timeout ? &ts : nullptr, nullptr);
        if (n < 0) {
            if (errno == EINTR) return;
            throw_errno("ppoll");
        }
        if (n == 0) return;
        // on_event may change interests (it resumes nothing, but the loop re-declares them),
        // so iterate over a snapshot of the results.
        m_ready.clear();
        for (const pollfd& p : m_fds)
            if (p.revents) m_ready.push_back(p);
        for (const pollfd& p : m_ready) {
            const bool failed = (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
            on_event(p.fd, failed || (p.revents & POLLIN) != 0, failed || (p.revents & POLLOUT) != 0);
        }
    }

private:
    void rebuild() {
        m_fds.clear();
        for (std::size_t fd = 0; fd < m_interest.size(); ++fd)
            if (m_interest[fd]) m_fds.push_back(pollfd{static_cast<int>(fd), m_interest[fd], 0});
        m_dirty = false;
    }

    std::vector<short> m_interest; // indexed by fd
    std::vector<pollfd> m_fds;
    std::vector<pollfd> m_ready;
    bool m_dirty = false;
};

} // namespace tandem::detail
