// tandem — cross-thread (and signal-handler) wake-up of a sleeping reactor. Layer: detail.
// Linux: one eventfd. Elsewhere: a non-blocking self-pipe.
#pragma once

#include "tandem/config.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"

#include <cstdint>
#include <fcntl.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#endif

namespace tandem::detail {

class wakeup {
public:
    wakeup() {
#if defined(__linux__)
        m_read.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        if (!m_read) throw_errno("eventfd");
        m_write_fd = m_read.get();
#else
        int fds[2];
        if (::pipe(fds) != 0) throw_errno("pipe");
        m_read.reset(fds[0]);
        m_write.reset(fds[1]);
        for (int fd : fds) {
            ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
            ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
        m_write_fd = m_write.get();
#endif
    }

    int read_fd() const noexcept { return m_read.get(); }
    /// The fd a signal handler writes to; async-signal-safe to write 8 bytes.
    int write_fd() const noexcept { return m_write_fd; }

    /// Async-signal-safe and thread-safe.
    void signal() const noexcept {
        const std::uint64_t one = 1;
        // EAGAIN means the counter/pipe is already full, i.e. a wake-up is pending anyway.
        [[maybe_unused]] auto n = retry_on_eintr([&] { return ::write(m_write_fd, &one, sizeof one); });
    }

    void drain() const noexcept {
        std::uint64_t buf[16];
        while (retry_on_eintr([&] { return ::read(m_read.get(), buf, sizeof buf); }) > 0) {
#if defined(__linux__)
            break; // one read empties an eventfd
#endif
        }
    }

private:
    unique_fd m_read;
#if !defined(__linux__)
    unique_fd m_write;
#endif
    int m_write_fd = -1;
};

} // namespace tandem::detail
