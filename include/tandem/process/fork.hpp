// tandem — forking from a clean process: why it is only safe single-threaded, how to tell,
// and what a child resets before it runs anything of its own.
//
// Layer: process (ground floor of the wing). Knows nothing of pools or the loop.
//
// Why: fork() copies only the calling thread. A lock another thread held at that instant
// (malloc's, a logger's) stays locked forever in the child, which deadlocks at its first
// allocation. tandem therefore forks long-lived helpers (the process-pool zygote, a cluster
// supervisor) while the program is still single-threaded, and forks workers from those.
#pragma once

#include "tandem/detail/syscall.hpp"
#include "tandem/process/descriptors.hpp"

#include <csignal>
#include <cstddef>
#include <cstdio>
#include <sys/types.h>
#include <unistd.h>

namespace tandem::process {

/// Threads in this process (from /proc/self/task; 0 if it cannot be read).
inline std::size_t thread_count() noexcept { return count_proc_entries("/proc/self/task"); }

/// Threads the sanitizer runtime starts behind the program's back (TSan's background
/// thread): they hold none of the program's locks, so they do not make fork() unsafe.
#if defined(__SANITIZE_THREAD__)
inline constexpr std::size_t runtime_threads = 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr std::size_t runtime_threads = 1;
#else
inline constexpr std::size_t runtime_threads = 0;
#endif
#else
inline constexpr std::size_t runtime_threads = 0;
#endif

/// True if only this thread (and sanitizer threads) run: fork() is safe.
inline bool single_threaded() noexcept { return thread_count() <= runtime_threads + 1; }

/// fork(), after flushing stdio (or the child would write the parent's buffered output a
/// second time when it exits). Returns the child's pid in the parent and 0 in the child;
/// throws std::system_error if the kernel refuses.
inline pid_t fork_child() {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) detail::throw_errno("tandem: fork");
    return pid;
}

/// In a freshly forked child: every signal back to its default disposition and none
/// blocked, so a parent's crash handler, test framework or signalfd mask does not catch or
/// hide the child's own signals (a job's abort() must kill the job's process).
/// Signals in `keep_blocked` stay blocked, and one already pending stays pending, for a
/// child that will install its own handler first (a cluster worker's SIGTERM); unblocking
/// them here would let the default action kill it.
inline void reset_signal_state(const sigset_t* keep_blocked = nullptr) noexcept {
    sigset_t mask;
    sigemptyset(&mask);
    if (keep_blocked) mask = *keep_blocked;
    // Block first: a pending signal must not reach its default action while we work.
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    for (int sig = 1; sig < NSIG; ++sig)
        if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &mask, nullptr);
}

} // namespace tandem::process
