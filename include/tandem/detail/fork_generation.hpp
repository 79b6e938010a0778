// tandem — how many fork()s separate this process from the one that started the program,
// counted by a pthread_atfork child handler: "am I a forked copy of the process that set this
// up?" is one load, not a getpid() system call (600 ns on a busy VM).
// Layer: detail. Knows nothing of pools or the loop.
#pragma once

#include <atomic>
#include <pthread.h>
#include <unistd.h>

namespace tandem::detail {

class fork_generation {
public:
    /// Remembers the current process.
    fork_generation() noexcept : m_generation((registered(), counter().load(std::memory_order_relaxed))) {}
    /// True in a fork()ed child of the process that built this object (or a copy of it).
    bool forked_copy() const noexcept {
        return registered() ? counter().load(std::memory_order_relaxed) != m_generation : ::getpid() != m_pid;
    }

private:
    static std::atomic<unsigned>& counter() noexcept {
        static std::atomic<unsigned> forks{0};
        return forks;
    }
    static bool registered() noexcept {
        static const bool ok =
            ::pthread_atfork(nullptr, nullptr, [] { counter().fetch_add(1, std::memory_order_relaxed); }) == 0;
        return ok;
    }

    unsigned m_generation;
    pid_t m_pid = ::getpid(); // where the handler could not be registered
};

} // namespace tandem::detail
