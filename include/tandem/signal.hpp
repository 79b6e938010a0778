// tandem — awaiting POSIX signals (SIGINT, SIGTERM, ...) from coroutines.
//
// Layer: loop. One process-wide handler counts deliveries per signal and writes to the
// wake-up fd of every loop that has a signal_set; each set remembers how many deliveries it
// has consumed, so a signal arriving between two waits is not lost, and every set listening
// to a signal sees it (like several process.on('SIGINT') listeners in Node).
#pragma once

#include "tandem/loop.hpp"
#include "tandem/task.hpp"

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <signal.h>
#include <stdexcept>
#include <system_error>
#include <unistd.h>

namespace tandem {

namespace detail::signals {

inline constexpr int max_signal = 65;
inline constexpr int max_wake_fds = 64;

// Lock-free state read by the handler (only atomics and write(2): async-signal-safe).
inline std::atomic<std::uint64_t> deliveries[max_signal];
inline std::atomic<int> wake_fds[max_wake_fds]; // fd + 1; 0 = free slot

// Installation state, changed under the mutex by signal_set constructors/destructors.
struct registry {
    std::mutex mutex;
    int handler_users[max_signal] = {};
    struct sigaction previous[max_signal] = {};
};
inline registry& the_registry() {
    static registry r;
    return r;
}

inline void on_signal(int signo) noexcept {
    const int saved_errno = errno;
    if (signo > 0 && signo < max_signal) deliveries[signo].fetch_add(1, std::memory_order_release);
    for (auto& slot : wake_fds) {
        const int fd = slot.load(std::memory_order_acquire) - 1;
        if (fd < 0) continue;
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    }
    errno = saved_errno;
}

inline void install(int signo) {
    if (signo <= 0 || signo >= max_signal || signo == SIGKILL || signo == SIGSTOP)
        throw std::invalid_argument("tandem::signal_set: signal cannot be caught");
    registry& r = the_registry();
    std::lock_guard lock(r.mutex);
    if (r.handler_users[signo]++ > 0) return;
    struct sigaction sa {};
    sa.sa_handler = &on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (::sigaction(signo, &sa, &r.previous[signo]) != 0) {
        --r.handler_users[signo];
        throw std::system_error(errno, std::system_category(), "sigaction");
    }
}

inline void uninstall(int signo) noexcept {
    registry& r = the_registry();
    std::lock_guard lock(r.mutex);
    if (--r.handler_users[signo] == 0) ::sigaction(signo, &r.previous[signo], nullptr);
}

inline int add_wake_fd(int fd) {
    for (int i = 0; i < max_wake_fds; ++i) {
        int expected = 0;
        if (wake_fds[i].compare_exchange_strong(expected, fd + 1, std::memory_order_acq_rel)) return i;
    }
    throw std::runtime_error("tandem::signal_set: too many loops listening for signals");
}

inline void remove_wake_fd(int slot) noexcept { wake_fds[slot].store(0, std::memory_order_release); }

} // namespace detail::signals

/// A set of signals a loop listens for. While a signal_set exists, its signals no longer
/// have their default action (SIGINT no longer kills the process); the previous disposition
/// is restored when the last set for a signal dies. Create and use it on the loop's thread;
/// it must not outlive the loop.
///
///     tandem::signal_set stop_signals({SIGINT, SIGTERM});
///     int sig = co_await stop_signals.wait();
class signal_set {
public:
    explicit signal_set(std::initializer_list<int> signals) : signal_set(this_loop(), signals) {}
    signal_set(event_loop& loop, std::initializer_list<int> signals)
        : m_loop(&loop), m_signals(new entry[signals.size()]) {
        try {
            for (int signo : signals) {
                if (listed(signo)) continue; // once: a second entry would report each delivery again
                detail::signals::install(signo);
                m_signals[m_count++] = entry{signo, detail::signals::deliveries[signo].load(std::memory_order_acquire)};
            }
            m_wake_slot = detail::signals::add_wake_fd(tandem::detail::hooks(loop).wakeup_write_fd());
        } catch (...) { // a signal that cannot be caught, or too many loops: undo what was done
            uninstall_all();
            throw;
        }
    }
    signal_set(const signal_set&) = delete;
    signal_set& operator=(const signal_set&) = delete;
    ~signal_set() {
        detail::signals::remove_wake_fd(m_wake_slot);
        uninstall_all();
    }

    /// Consumes a delivery that has not been waited for yet; 0 if none. Repeated deliveries
    /// of one signal between two waits coalesce into one, as the kernel does.
    int poll() noexcept {
        for (std::size_t i = 0; i < m_count; ++i) {
            entry& e = m_signals[i];
            const std::uint64_t now = detail::signals::deliveries[e.signo].load(std::memory_order_acquire);
            if (now != e.seen) {
                e.seen = now;
                return e.signo;
            }
        }
        return 0;
    }

    class wait_awaiter : public detail::wake_listener, detail::cancellable_wait<wait_awaiter> {
    public:
        explicit wait_awaiter(signal_set& set) noexcept : m_set(set) {}
        bool await_ready() noexcept { return (m_signo = m_set.poll()) != 0; }
        using cancellable_wait::await_suspend;
        int await_resume() const {
            throw_if_cancelled();
            return m_signo;
        }

    private:
        friend cancellable_wait;
        bool start() noexcept {
            tandem::detail::hooks(*m_set.m_loop).add_wake_listener(*this);
            return true;
        }
        bool stop() noexcept {
            unlink();
            return true;
        }
        void on_wake() noexcept override {
            if ((m_signo = m_set.poll()) == 0) return;
            unlink();
            tandem::detail::hooks(*m_set.m_loop).schedule(complete(), context);
        }
        signal_set& m_set;
        int m_signo = 0;
    };

    /// Suspends until one of the set's signals arrives; returns its number. Cancel-safe: a
    /// delivery not consumed stays for the next wait.
    [[nodiscard]] wait_awaiter wait() noexcept { return wait_awaiter{*this}; }

private:
    struct entry {
        int signo;
        std::uint64_t seen;
    };
    bool listed(int signo) const noexcept {
        for (std::size_t i = 0; i < m_count; ++i)
            if (m_signals[i].signo == signo) return true;
        return false;
    }
    void uninstall_all() noexcept {
        for (std::size_t i = 0; i < m_count; ++i) detail::signals::uninstall(m_signals[i].signo);
        delete[] m_signals;
    }
    event_loop* m_loop;
    // Owned: one entry per signal given. A raw array: std::vector's constexpr members would
    // be compiled in every translation unit that includes this header (detail/dependent.hpp).
    entry* m_signals;
    std::size_t m_count = 0;
    int m_wake_slot = -1;
};

} // namespace tandem
