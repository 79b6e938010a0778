// tandem — closing the descriptors a forked child inherited, so that a worker never holds the
// parent's listening sockets, pipes or files open.
//
// Layer: process (ground floor of the wing). Meant for the child between fork() and its real
// work: async-signal-safe where the kernel has close_range (5.9+), no allocation either way.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <initializer_list>
#include <sys/syscall.h>
#include <unistd.h>

namespace tandem::process {

/// Closes every descriptor from `first` up (close_range, or /proc/self/fd before Linux 5.9).
inline void close_descriptors_from(int first) noexcept {
#ifdef SYS_close_range
    if (::syscall(SYS_close_range, static_cast<unsigned>(first), ~0u, 0u) == 0) return;
#endif
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        const int own = ::dirfd(dir);
        while (dirent* entry = ::readdir(dir)) {
            const int fd = std::atoi(entry->d_name);
            if (fd >= first && fd != own) ::close(fd);
        }
        ::closedir(dir);
    }
}

/// Entries in a /proc directory, "." and ".." aside (0 if it cannot be read).
inline std::size_t count_proc_entries(const char* path) noexcept {
    std::size_t n = 0;
    if (DIR* dir = ::opendir(path)) {
        while (dirent* entry = ::readdir(dir))
            if (entry->d_name[0] != '.') ++n;
        ::closedir(dir);
    }
    return n;
}

/// Descriptors open in this process now (0 if /proc/self/fd cannot be read).
inline std::size_t open_descriptor_count() noexcept {
    const std::size_t n = count_proc_entries("/proc/self/fd");
    return n > 0 ? n - 1 : 0; // the directory's own
}

/// Closes descriptors [first, last] (inclusive).
inline void close_descriptor_range(int first, int last) noexcept {
    if (first > last) return;
#ifdef SYS_close_range
    if (::syscall(SYS_close_range, static_cast<unsigned>(first), static_cast<unsigned>(last), 0u) == 0) return;
#endif
    if (last == INT_MAX) return close_descriptors_from(first);
    for (int fd = first; fd <= last; ++fd) ::close(fd);
}

/// Closes every descriptor from `first` up except those in `keep` (any order, duplicates
/// and values below `first` allowed). Quadratic in keep.size(), which is a handful.
inline void close_descriptors_except(std::initializer_list<int> keep, int first = 3) noexcept {
    int from = first;
    for (;;) {
        int next = INT_MAX; // the smallest kept descriptor at or above `from`
        for (int fd : keep)
            if (fd >= from && fd < next) next = fd;
        if (next == INT_MAX) return close_descriptors_from(from);
        close_descriptor_range(from, next - 1);
        if (next == INT_MAX - 1) return;
        from = next + 1;
    }
}

/// Puts `fd` at `target` (dup2; a no-op if it is there already) and marks it close-on-exec.
/// Returns `target`, or -1 (errno set).
inline int move_descriptor(int fd, int target) noexcept {
    if (fd != target && ::dup2(fd, target) < 0) return -1;
    if (::fcntl(target, F_SETFD, FD_CLOEXEC) != 0) return -1;
    return target;
}

} // namespace tandem::process
