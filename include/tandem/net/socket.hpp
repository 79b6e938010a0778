// tandem — the socket underneath every socket type: an owned non-blocking fd bound to its loop,
// the optimistic I/O operation (syscall first, wait for readiness only on EAGAIN), the send and
// receive operations built on it, and the peer watch that notices a client going away.
//
// Layer: I/O. Every fd is O_NONBLOCK | O_CLOEXEC, writes never raise SIGPIPE (MSG_NOSIGNAL).
// The operation awaiters live in the caller's frame, so a read or write allocates nothing.
// Sockets are used and closed on the thread of the loop that runs them.
#pragma once

#include "tandem/error.hpp"
#include "tandem/loop.hpp"
#include "tandem/net/address.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <poll.h>
#include <span>
#include <string_view>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <system_error>
#include <utility>

namespace tandem {

namespace detail {

inline std::uint64_t next_socket_id() noexcept {
    static std::atomic<std::uint64_t> next{0};
    return next.fetch_add(1, std::memory_order_relaxed) + 1;
}

[[noreturn]] inline void throw_code(int error, const char* what) {
    throw std::system_error(error, std::system_category(), what);
}

/// getsockname / getpeername into an address.
template <class Getter>
address query_address(int fd, Getter getter, const char* what) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getter(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) throw_errno(what);
    return address::from_native(reinterpret_cast<sockaddr*>(&ss), len);
}

/// An owned, non-blocking socket fd and the loop that waits on it.
class socket_base {
public:
    socket_base() noexcept = default;
    explicit socket_base(int fd) noexcept : m_fd(fd), m_id(next_socket_id()) {}
    socket_base(socket_base&& other) noexcept
        : m_fd(std::move(other.m_fd)), m_id(std::exchange(other.m_id, 0)), m_loop(std::exchange(other.m_loop, nullptr)) {}
    socket_base& operator=(socket_base&& other) noexcept {
        if (this != &other) {
            close();
            m_fd = std::move(other.m_fd);
            m_id = std::exchange(other.m_id, 0);
            m_loop = std::exchange(other.m_loop, nullptr);
        }
        return *this;
    }
    ~socket_base() { close(); }

    bool is_open() const noexcept { return static_cast<bool>(m_fd); }
    int native_handle() const noexcept { return m_fd.get(); }

    /// Closes the socket; a task still waiting on it resumes with std::system_error(ECANCELED).
    void close() noexcept {
        if (!m_fd) return;
        if (m_loop && event_loop::current() == m_loop) m_loop->forget(m_fd.get());
        m_fd.reset();
        m_loop = nullptr;
    }

    /// The address this socket is bound to (port 0 binds pick one: read it here).
    address local_address() const { return query_address(m_fd.get(), ::getsockname, "getsockname"); }

    void set_option(int level, int name, int value) {
        if (::setsockopt(m_fd.get(), level, name, &value, sizeof value) != 0) throw_errno("setsockopt");
    }
    int get_option(int level, int name) const {
        int value = 0;
        socklen_t len = sizeof value;
        if (::getsockopt(m_fd.get(), level, name, &value, &len) != 0) throw_errno("getsockopt");
        return value;
    }

    std::uint64_t id() const noexcept { return m_id; }
    void bind_loop(event_loop& loop) noexcept { m_loop = &loop; }

private:
    unique_fd m_fd;
    std::uint64_t m_id = 0;
    event_loop* m_loop = nullptr;
};

inline int make_socket(int family, int type) {
    const int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw_errno("socket");
    return fd;
}

/// One non-blocking operation on a socket: tried at once, retried by the loop each time the
/// fd is reported ready, until it completes or fails. Op is a callable returning a ssize_t
/// (-1 with errno on failure); it may keep state across attempts (write_all's progress).
template <class Op>
class io_operation : cancellable_wait<io_operation<Op>, io_waiter> {
public:
    /// try_first = false: do not attempt before waiting (the caller just saw EAGAIN); only a
    /// remembered readiness edge completes it at once.
    io_operation(socket_base& socket, bool write, Op op, const char* what, bool try_first = true) noexcept
        : m_socket(socket), m_op(std::move(op)), m_what(what), m_try_first(try_first) {
        this->fd = socket.native_handle();
        this->write = write;
        this->owner = socket.id();
        this->perform = &perform_again;
    }
    io_operation(const io_operation&) = delete;
    io_operation& operator=(const io_operation&) = delete;
    ~io_operation() {
        if (m_loop) tandem::detail::hooks(*m_loop).remove_io_waiter(*this);
    }

    bool await_ready() noexcept {
        if (this->fd < 0) {
            m_error = EBADF;
            return true;
        }
        return false; // the first attempt is start()'s, after the cancellation check
    }
    using io_operation::cancellable_wait::await_suspend;
    std::size_t await_resume() const {
        this->throw_if_cancelled();
        if (this->aborted) throw_code(ECANCELED, m_what);
        if (m_error) throw_code(m_error, m_what);
        return m_result;
    }

private:
    friend class cancellable_wait<io_operation<Op>, io_waiter>;
    bool start() {
        // Attempted here rather than in await_ready: the protocol has checked cancellation
        // first, so an operation in a task already cancelled (a when_any loser started after
        // the winner) moves no data and consumes no readiness edge.
        event_loop* loop = event_loop::current();
        if (m_try_first || (loop && tandem::detail::hooks(*loop).consume_readiness(this->fd, this->write))) {
            // About to complete without suspending: that takes a unit of the step's I/O
            // budget. With none left, go round the loop first (a peer that always has data or
            // room must not starve timers, accepts and other tasks): the operation is retried
            // from the loop's next turn, before anything was moved, so it stays cancellable.
            if (loop && !tandem::detail::hooks(*loop).take_io_budget()) m_budget_spent = true;
            else if (attempt()) return false;
        }
        m_loop = &this_loop();
        m_socket.bind_loop(*m_loop);
        if (m_budget_spent) {
            tandem::detail::hooks(*m_loop).add_io_waiter(*this);
            tandem::detail::hooks(*m_loop).retry_io_soon(this->fd, this->write);
            return true;
        }
        // EAGAIN just now (ours or the caller's) proves any remembered edge is stale.
        tandem::detail::hooks(*m_loop).consume_readiness(this->fd, this->write);
        tandem::detail::hooks(*m_loop).add_io_waiter(*this);
        return true;
    }
    bool stop() noexcept {
        tandem::detail::hooks(*m_loop).remove_io_waiter(*this);
        return true;
    }
    bool attempt() noexcept {
        for (;;) {
            const ssize_t r = m_op();
            if (r >= 0) {
                m_result = static_cast<std::size_t>(r);
                return true;
            }
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
            m_error = errno;
            return true;
        }
    }
    static bool perform_again(io_waiter* w) noexcept { return static_cast<io_operation*>(w)->attempt(); }

    socket_base& m_socket;
    Op m_op;
    const char* m_what;
    bool m_try_first;
    event_loop* m_loop = nullptr;
    std::size_t m_result = 0;
    int m_error = 0;
    bool m_budget_spent = false;
};

template <class Op>
io_operation<Op> make_io(socket_base& s, bool write, Op op, const char* what, bool try_first = true) {
    return io_operation<Op>(s, write, std::move(op), what, try_first);
}

/// Sends everything, resuming after partial writes; returns the total.
struct send_all_op {
    int fd;
    const char* data;
    std::size_t left;
    std::size_t done = 0;
    ssize_t operator()() noexcept {
        while (left > 0) {
            const ssize_t n = ::send(fd, data + done, left, MSG_NOSIGNAL);
            if (n < 0) return -1;
            done += static_cast<std::size_t>(n);
            left -= static_cast<std::size_t>(n);
        }
        return static_cast<ssize_t>(done);
    }
};

/// Gathered write of up to max_parts buffers with sendmsg, resuming after partial writes.
struct send_gather_op {
    static constexpr std::size_t max_parts = 16;
    int fd;
    iovec parts[max_parts];
    std::size_t count;
    std::size_t first = 0;
    std::size_t done = 0;
    ssize_t operator()() noexcept {
        while (first < count) {
            msghdr msg{};
            msg.msg_iov = parts + first;
            msg.msg_iovlen = count - first;
            ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
            if (n < 0) return -1;
            done += static_cast<std::size_t>(n);
            while (n > 0 && first < count) { // consume the written prefix
                const std::size_t take = std::min(static_cast<std::size_t>(n), parts[first].iov_len);
                parts[first].iov_base = static_cast<char*>(parts[first].iov_base) + take;
                parts[first].iov_len -= take;
                n -= static_cast<ssize_t>(take);
                if (parts[first].iov_len == 0) ++first;
            }
            while (first < count && parts[first].iov_len == 0) ++first;
        }
        return static_cast<ssize_t>(done);
    }
};

/// Reads until the buffer is full; end of stream shows as a short count (the caller throws
/// end_of_stream), errors as -1 with errno.
struct recv_exact_op {
    int fd;
    char* data;
    std::size_t left;
    std::size_t done = 0;
    ssize_t operator()() noexcept {
        while (left > 0) {
            const ssize_t n = ::recv(fd, data + done, left, 0);
            if (n < 0) return -1;
            if (n == 0) break; // end of stream: the caller sees a short count
            done += static_cast<std::size_t>(n);
            left -= static_cast<std::size_t>(n);
        }
        return static_cast<ssize_t>(done);
    }
};

/// Watches a connected stream that nobody reads for its peer going away (end of stream or
/// reset) and then calls `on_gone(arg)` once, from the loop. It only peeks: bytes that arrive
/// instead (a pipelined request) end the watch quietly and stay for the next reader. Not an
/// awaitable: an HTTP server arms it while a handler runs, to cancel the handler of a client
/// that left. Loop thread only; disarm (or destroy) it before the socket closes.
class peer_watch : io_waiter {
public:
    using callback = void (*)(void*) noexcept;

    peer_watch() noexcept { this->perform = &on_event; }
    peer_watch(const peer_watch&) = delete;
    peer_watch& operator=(const peer_watch&) = delete;
    ~peer_watch() { disarm(); }

    /// Starts watching. True if the peer is already gone (nothing is armed, on_gone is not
    /// called). One syscall (a peek); the read direction of the socket must be free.
    bool arm(socket_base& s, callback on_gone, void* arg) {
        disarm();
        this->fd = s.native_handle();
        this->owner = s.id();
        const int state = probe(this->fd);
        if (state != quiet) return state == gone;
        m_on_gone = on_gone;
        m_arg = arg;
        m_loop = &this_loop();
        s.bind_loop(*m_loop);
        tandem::detail::hooks(*m_loop).add_io_waiter(*this);
        return false;
    }
    void disarm() noexcept {
        if (m_loop) tandem::detail::hooks(*std::exchange(m_loop, nullptr)).remove_io_waiter(*this);
    }

private:
    enum { quiet, gone, data };
    static int probe(int fd) noexcept {
        char byte;
        for (;;) {
            const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n > 0) return data;
            if (n == 0) return gone;
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? quiet : gone;
        }
    }
    static bool on_event(io_waiter* w) noexcept {
        auto* self = static_cast<peer_watch*>(w);
        const int state = probe(self->fd);
        if (state == quiet) return false; // keep waiting
        self->disarm();                   // leaves the loop's slot before anyone is told
        if (state == gone) self->m_on_gone(self->m_arg);
        return false; // already removed: the loop must not resume anything
    }

    event_loop* m_loop = nullptr;
    callback m_on_gone = nullptr;
    void* m_arg = nullptr;
};

} // namespace detail

} // namespace tandem
