// tandem — non-blocking sockets on the event loop: addresses, TCP, Unix stream sockets, UDP.
//
// Layer: I/O. Knows the loop (readiness, timers); knows nothing of HTTP.
// Every fd is O_NONBLOCK | O_CLOEXEC, writes never raise SIGPIPE (MSG_NOSIGNAL), a peer reset
// is a std::system_error, end of stream is read_some() returning 0. I/O is optimistic: the
// syscall is tried first and the task waits for readiness only on EAGAIN; the operation
// awaiters live in the caller's frame, so a read or write allocates nothing.
// Sockets are used and closed on the thread of the loop that runs them.
#pragma once

#include "tandem/error.hpp"
#include "tandem/loop.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <optional>
#include <poll.h>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace tandem {

/// An IPv4 or IPv6 socket address (numeric; names go through resolve()).
class address {
public:
    address() noexcept = default;

    /// A numeric IPv4 ("127.0.0.1") or IPv6 ("::1", brackets allowed) host and a port.
    /// Throws std::invalid_argument for anything else.
    address(std::string_view ip, std::uint16_t port) {
        std::string host(ip);
        if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
        sockaddr_in v4{};
        if (::inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {
            v4.sin_family = AF_INET;
            v4.sin_port = htons(port);
            std::memcpy(&m_storage, &v4, sizeof v4);
            m_size = sizeof v4;
            return;
        }
        sockaddr_in6 v6{};
        if (::inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr) == 1) {
            v6.sin6_family = AF_INET6;
            v6.sin6_port = htons(port);
            std::memcpy(&m_storage, &v6, sizeof v6);
            m_size = sizeof v6;
            return;
        }
        throw std::invalid_argument("tandem::address: not a numeric IP address: " + std::string(ip));
    }

    /// Parses "1.2.3.4:80" or "[::1]:443". Throws std::invalid_argument.
    static address parse(std::string_view text) {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos || colon + 1 == text.size())
            throw std::invalid_argument("tandem::address: missing port in " + std::string(text));
        std::string_view host = text.substr(0, colon);
        if (host.find(':') != std::string_view::npos && !(host.starts_with('[') && host.ends_with(']')))
            throw std::invalid_argument("tandem::address: IPv6 addresses need brackets: " + std::string(text));
        unsigned long port = 0;
        for (char c : text.substr(colon + 1)) {
            if (c < '0' || c > '9') throw std::invalid_argument("tandem::address: bad port in " + std::string(text));
            port = port * 10 + static_cast<unsigned long>(c - '0');
            if (port > 65535) throw std::invalid_argument("tandem::address: port out of range in " + std::string(text));
        }
        return address(host, static_cast<std::uint16_t>(port));
    }

    static address from_native(const sockaddr* sa, socklen_t size) noexcept {
        address a;
        if (size <= static_cast<socklen_t>(sizeof a.m_storage)) {
            std::memcpy(&a.m_storage, sa, size);
            a.m_size = size;
        }
        return a;
    }

    int family() const noexcept { return m_size ? m_storage.ss_family : AF_UNSPEC; }
    bool is_v4() const noexcept { return family() == AF_INET; }
    bool is_v6() const noexcept { return family() == AF_INET6; }

    std::uint16_t port() const noexcept {
        if (is_v4()) return ntohs(reinterpret_cast<const sockaddr_in*>(&m_storage)->sin_port);
        if (is_v6()) return ntohs(reinterpret_cast<const sockaddr_in6*>(&m_storage)->sin6_port);
        return 0;
    }

    /// "127.0.0.1" or "::1".
    std::string ip() const {
        char buf[INET6_ADDRSTRLEN] = {};
        if (is_v4()) ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&m_storage)->sin_addr, buf, sizeof buf);
        else if (is_v6()) ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&m_storage)->sin6_addr, buf, sizeof buf);
        return buf;
    }

    /// "127.0.0.1:8080" or "[::1]:443" — the forms parse() reads.
    std::string to_string() const {
        if (!is_v4() && !is_v6()) return "(unspecified)";
        // Built with append: g++ 12 -O3 warns falsely (-Wrestrict) on "literal" + string.
        std::string out;
        if (is_v6()) out.append(1, '[');
        out.append(ip());
        if (is_v6()) out.append(1, ']');
        out.append(1, ':');
        out.append(std::to_string(port()));
        return out;
    }

    const sockaddr* native() const noexcept { return reinterpret_cast<const sockaddr*>(&m_storage); }
    socklen_t native_size() const noexcept { return m_size; }

    friend bool operator==(const address& a, const address& b) noexcept {
        return a.m_size == b.m_size && std::memcmp(&a.m_storage, &b.m_storage, a.m_size) == 0;
    }

private:
    sockaddr_storage m_storage{};
    socklen_t m_size = 0;
};

/// Thrown by read_exact / read_until when the stream ends before the requested data.
class end_of_stream : public std::runtime_error {
public:
    end_of_stream() : std::runtime_error("tandem: end of stream before the expected data") {}
};

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

/// A connected byte stream (TCP or Unix). Reads and writes are awaitables that complete
/// without allocating; only one read and one write may be in flight at a time.
class stream_socket : public detail::socket_base {
public:
    using socket_base::socket_base;

    /// Reads what is available (at least one byte), waiting if nothing is. 0 = end of stream.
    /// Cancel-safe: a read that throws tandem::cancelled read nothing.
    auto read_some(std::span<char> buffer) {
        return detail::make_io(*this, false,
                               [fd = native_handle(), buffer] { return ::recv(fd, buffer.data(), buffer.size(), 0); },
                               "recv");
    }
    auto read_some(std::span<std::byte> buffer) {
        return read_some(std::span<char>(reinterpret_cast<char*>(buffer.data()), buffer.size()));
    }

    /// Reads what is available without waiting: std::nullopt if nothing is (EAGAIN), 0 at
    /// end of stream. Throws std::system_error on errors. With wait_readable() it lets a
    /// server hold a buffer only while data is actually there (tokio's try_read).
    std::optional<std::size_t> try_read_some(std::span<char> buffer) {
        for (;;) {
            const ssize_t n = ::recv(native_handle(), buffer.data(), buffer.size(), 0);
            if (n >= 0) return static_cast<std::size_t>(n);
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
            detail::throw_errno("recv");
        }
    }

    /// Waits for the socket to become readable (data, end of stream or an error), consuming
    /// nothing and holding no buffer. Meant after try_read_some returned std::nullopt: it
    /// waits for the next readiness edge without a syscall of its own.
    auto wait_readable() {
        return detail::make_io(*this, false, [] { return ssize_t{0}; }, "wait readable", false);
    }

    /// Reads exactly buffer.size() bytes. Throws end_of_stream if the peer closes first.
    /// Not cancel-safe: a cancelled call may have consumed a prefix (close the stream).
    task<> read_exact(std::span<char> buffer) {
        const std::size_t n =
            co_await detail::make_io(*this, false, detail::recv_exact_op{native_handle(), buffer.data(), buffer.size()}, "recv");
        if (n < buffer.size()) throw end_of_stream{};
    }

    /// Appends to `buffer` until it contains `delimiter`; returns the length up to and
    /// including the delimiter. Throws std::length_error past `max_bytes` (a peer that never
    /// sends the delimiter cannot grow the buffer without bound) and end_of_stream on EOF.
    /// Cancel-safe in the sense that matters for a retry: on any exception (cancelled,
    /// timed_out, errors) `buffer` holds exactly the bytes received, delimiter or not.
    task<std::size_t> read_until(std::string& buffer, std::string_view delimiter, std::size_t max_bytes) {
        std::size_t searched = 0;
        for (;;) {
            const std::size_t at = buffer.find(delimiter, searched);
            if (at != std::string::npos) co_return at + delimiter.size();
            searched = buffer.size() >= delimiter.size() ? buffer.size() - delimiter.size() + 1 : 0;
            if (buffer.size() >= max_bytes) throw std::length_error("tandem::read_until: no delimiter within max_bytes");
            const std::size_t old = buffer.size();
            buffer.resize(std::min(max_bytes, old + 4096));
            std::size_t n = 0;
            try {
                n = co_await read_some(std::span<char>(buffer.data() + old, buffer.size() - old));
            } catch (...) {
                buffer.resize(old); // cancelled, timed out, failed: keep exactly what arrived
                throw;
            }
            buffer.resize(old + n);
            if (n == 0) throw end_of_stream{};
        }
    }

    /// Writes all of `data`, suspending while the socket buffer is full (backpressure: nothing
    /// is queued in user space). Not cancel-safe: a cancelled call may have written a prefix.
    auto write_all(std::string_view data) {
        return detail::make_io(*this, true, detail::send_all_op{native_handle(), data.data(), data.size()}, "send");
    }
    auto write_all(std::span<const std::byte> data) {
        return write_all(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    }

    /// Writes several buffers in order with one sendmsg (writev) per attempt; at most 16.
    /// Not cancel-safe, as write_all.
    /// Build the parts in a local array first (g++ 12 rejects braced lists inside co_await).
    auto write_all_gathered(std::span<const std::string_view> parts) {
        if (parts.size() > detail::send_gather_op::max_parts) throw std::invalid_argument("tandem: at most 16 buffers");
        detail::send_gather_op op{native_handle(), {}, 0};
        for (std::string_view p : parts) op.parts[op.count++] = iovec{const_cast<char*>(p.data()), p.size()};
        return detail::make_io(*this, true, op, "sendmsg");
    }

    /// Half-close: the peer reads end of stream; this side can still read.
    void shutdown_write() {
        if (::shutdown(native_handle(), SHUT_WR) != 0) detail::throw_errno("shutdown");
    }

    void set_receive_buffer_size(int bytes) { set_option(SOL_SOCKET, SO_RCVBUF, bytes); }
    void set_send_buffer_size(int bytes) { set_option(SOL_SOCKET, SO_SNDBUF, bytes); }
};

/// A TCP connection.
class tcp_stream : public stream_socket {
public:
    using stream_socket::stream_socket;

    /// Connects to `to`; a zero timeout waits as long as the kernel does. Throws
    /// std::system_error (ECONNREFUSED, ...) or tandem::timed_out. Cancellable.
    static task<tcp_stream> connect(address to, std::chrono::nanoseconds timeout = std::chrono::nanoseconds::zero()) {
        if (timeout.count() > 0) co_return co_await with_timeout(timeout, connect(to));
        tcp_stream s(detail::make_socket(to.family(), SOCK_STREAM));
        if (::connect(s.native_handle(), to.native(), to.native_size()) != 0) {
            if (errno != EINPROGRESS) detail::throw_errno("connect");
            // Writable means the handshake ended, one way or the other: SO_ERROR says which.
            co_await detail::make_io(s, true,
                                     [fd = s.native_handle()] {
                                         pollfd p{fd, POLLOUT, 0};
                                         if (::poll(&p, 1, 0) == 0) {
                                             errno = EAGAIN;
                                             return ssize_t{-1};
                                         }
                                         return ssize_t{0};
                                     },
                                     "connect");
            if (const int error = s.get_option(SOL_SOCKET, SO_ERROR)) detail::throw_code(error, "connect");
        }
        co_return s;
    }

    address peer_address() const { return detail::query_address(native_handle(), ::getpeername, "getpeername"); }

    void set_nodelay(bool on) { set_option(IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0); }
    void set_keepalive(bool on) { set_option(SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0); }
};

struct listen_options {
    int backlog = 1024;
    bool reuse_address = true; // SO_REUSEADDR: restart without waiting out TIME_WAIT
    bool reuse_port = false;   // SO_REUSEPORT: several listeners (processes) share the port
    bool v6_only = false;      // IPV6_V6ONLY for an IPv6 listener
};

namespace detail {
/// accept() failures that mean "out of fds or memory": wait and retry, never spin.
inline bool out_of_resources(int error) noexcept {
    return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}
/// accept() failures about one connection that died in the queue: take the next one.
inline bool connection_gone(int error) noexcept {
    return error == ECONNABORTED || error == EPROTO || error == EPERM || error == ENETDOWN || error == ENOPROTOOPT ||
           error == EHOSTDOWN || error == ENONET || error == EHOSTUNREACH || error == EOPNOTSUPP || error == ENETUNREACH;
}
} // namespace detail

namespace detail {

/// The accept loop shared by TCP and Unix listeners; returns the new connection's fd.
inline task<int> accept_fd(socket_base& listener) {
    using namespace std::chrono_literals;
    auto pause = 1ms;
    for (;;) {
        int error = 0;
        std::size_t fd = 0;
        try {
            fd = co_await make_io(listener, false,
                                  [lfd = listener.native_handle()] {
                                      return static_cast<ssize_t>(::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
                                  },
                                  "accept");
        } catch (const std::system_error& e) {
            error = e.code().value();
            if (e.code().category() != std::system_category() || !(out_of_resources(error) || connection_gone(error)))
                throw;
        }
        if (error == 0) co_return static_cast<int>(fd);
        if (out_of_resources(error)) { // no fd to accept into: wait instead of spinning
            co_await sleep_for(pause);
            pause = std::min(pause * 2, std::chrono::milliseconds(100));
        }
    }
}

/// sockaddr_un for a path, or for a Linux abstract name written "@name".
inline std::pair<sockaddr_un, socklen_t> unix_address(std::string_view path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const bool abstract = path.starts_with('@');
    const std::string_view name = abstract ? path.substr(1) : path;
    if (name.empty() || name.size() + 1 > sizeof addr.sun_path)
        throw std::invalid_argument("tandem: Unix socket path empty or too long: " + std::string(path));
    std::memcpy(addr.sun_path + (abstract ? 1 : 0), name.data(), name.size());
    const socklen_t size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
    return {addr, size};
}

} // namespace detail

/// A listening TCP socket.
class tcp_listener : public detail::socket_base {
public:
    using socket_base::socket_base;

    /// Binds and listens. Port 0 picks a free port (see local_address()).
    static tcp_listener bind(const address& at, listen_options options = {}) {
        tcp_listener l(detail::make_socket(at.family(), SOCK_STREAM));
        if (options.reuse_address) l.set_option(SOL_SOCKET, SO_REUSEADDR, 1);
        if (options.reuse_port) l.set_option(SOL_SOCKET, SO_REUSEPORT, 1);
        if (at.is_v6()) l.set_option(IPPROTO_IPV6, IPV6_V6ONLY, options.v6_only ? 1 : 0);
        if (::bind(l.native_handle(), at.native(), at.native_size()) != 0) detail::throw_errno("bind");
        if (::listen(l.native_handle(), options.backlog) != 0) detail::throw_errno("listen");
        return l;
    }

    /// Waits for the next connection. Connections that died in the queue are skipped. When
    /// the process is out of fds (EMFILE/ENFILE) it waits and retries with a growing pause
    /// (at most 100 ms) instead of spinning, and recovers once fds are free again.
    /// Cancel-safe: a cancelled accept took no connection from the queue.
    task<tcp_stream> accept() { co_return tcp_stream(co_await detail::accept_fd(*this)); }
};

/// A Unix domain stream socket.
class unix_stream : public stream_socket {
public:
    using stream_socket::stream_socket;

    /// Connects to a socket path; "@name" is a Linux abstract name. Throws std::system_error
    /// (ENOENT, ECONNREFUSED, ...). Cancellable.
    static task<unix_stream> connect(std::string_view path) {
        const auto [addr, size] = detail::unix_address(path);
        unix_stream s(detail::make_socket(AF_UNIX, SOCK_STREAM));
        for (;;) {
            if (::connect(s.native_handle(), reinterpret_cast<const sockaddr*>(&addr), size) == 0) co_return s;
            if (errno == EINTR) continue;
            if (errno != EAGAIN) detail::throw_errno("connect");
            // The listener's backlog is full: Unix sockets report EAGAIN, not EINPROGRESS.
            co_await sleep_for(std::chrono::milliseconds(1));
        }
    }
};

/// A listening Unix domain stream socket. A path-bound listener does not remove its file
/// (another process may have replaced it); unlink it yourself, or use an "@abstract" name.
class unix_listener : public detail::socket_base {
public:
    using socket_base::socket_base;

    static unix_listener bind(std::string_view path, int backlog = 1024) {
        const auto [addr, size] = detail::unix_address(path);
        unix_listener l(detail::make_socket(AF_UNIX, SOCK_STREAM));
        if (::bind(l.native_handle(), reinterpret_cast<const sockaddr*>(&addr), size) != 0) detail::throw_errno("bind");
        if (::listen(l.native_handle(), backlog) != 0) detail::throw_errno("listen");
        return l;
    }

    /// As tcp_listener::accept.
    task<unix_stream> accept() { co_return unix_stream(co_await detail::accept_fd(*this)); }
};

/// A connected pair of Unix stream sockets (socketpair): a pipe that works both ways.
inline std::pair<unix_stream, unix_stream> socket_pair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) detail::throw_errno("socketpair");
    return {unix_stream(fds[0]), unix_stream(fds[1])};
}

/// What receive_from reports: the datagram's size and sender.
struct datagram {
    std::size_t size;
    address from;
};

/// A UDP socket: unconnected (send_to / receive_from) or connected (send / receive).
class udp_socket : public detail::socket_base {
public:
    using socket_base::socket_base;

    /// Binds to `at` (port 0 picks one).
    static udp_socket bind(const address& at) {
        udp_socket u(detail::make_socket(at.family(), SOCK_DGRAM));
        if (::bind(u.native_handle(), at.native(), at.native_size()) != 0) detail::throw_errno("bind");
        return u;
    }

    /// Sends one datagram to `to`; returns its size. Suspends only if the send buffer is full.
    auto send_to(std::string_view data, const address& to) {
        return detail::make_io(*this, true,
                               [fd = native_handle(), data, to] {
                                   return ::sendto(fd, data.data(), data.size(), MSG_NOSIGNAL, to.native(), to.native_size());
                               },
                               "sendto");
    }

    /// Receives one datagram (truncated to the buffer) and who sent it.
    task<datagram> receive_from(std::span<char> buffer) {
        sockaddr_storage from{};
        socklen_t from_size = sizeof from;
        const std::size_t n = co_await detail::make_io(*this, false,
                                                       [fd = native_handle(), buffer, &from, &from_size] {
                                                           from_size = sizeof from;
                                                           return ::recvfrom(fd, buffer.data(), buffer.size(), 0,
                                                                             reinterpret_cast<sockaddr*>(&from), &from_size);
                                                       },
                                                       "recvfrom");
        co_return datagram{n, address::from_native(reinterpret_cast<sockaddr*>(&from), from_size)};
    }

    /// Fixes the peer: send/receive then talk to it only (and errors like ECONNREFUSED from
    /// ICMP are reported).
    void connect(const address& to) {
        if (::connect(native_handle(), to.native(), to.native_size()) != 0) detail::throw_errno("connect");
    }
    auto send(std::string_view data) {
        return detail::make_io(*this, true,
                               [fd = native_handle(), data] { return ::send(fd, data.data(), data.size(), MSG_NOSIGNAL); },
                               "send");
    }
    auto receive(std::span<char> buffer) {
        return detail::make_io(*this, false,
                               [fd = native_handle(), buffer] { return ::recv(fd, buffer.data(), buffer.size(), 0); },
                               "recv");
    }
};

// ============================================================================================
// Name resolution
// ============================================================================================

namespace detail {

/// getaddrinfo's EAI_* codes as std::error_codes.
class resolver_category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "tandem.resolve"; }
    std::string message(int code) const override { return ::gai_strerror(code); }
};
inline const std::error_category& resolver_category() noexcept {
    static const resolver_category_impl category;
    return category;
}

/// A few threads for blocking name lookups only. Kept apart from any CPU pool, so slow DNS
/// never starves other work (Node's shared 4-thread pool let dns.lookup block fs). Threads
/// start on demand (at most 4) and exit after 10 s idle. Never destroyed: a thread may still
/// sit in getaddrinfo when the process exits.
class resolver_threads {
public:
    static resolver_threads& instance() {
        static resolver_threads* pool = new resolver_threads;
        return *pool;
    }
    void submit(unique_function job) {
        std::lock_guard lock(m_mutex);
        m_jobs.push_back(std::move(job));
        if (m_idle == 0 && m_threads < max_threads) {
            ++m_threads;
            std::thread([this] { work(); }).detach();
        } else {
            m_wake.notify_one();
        }
    }

private:
    void work() {
        std::unique_lock lock(m_mutex);
        for (;;) {
            ++m_idle;
            const bool have_job = m_wake.wait_for(lock, std::chrono::seconds(10), [this] { return !m_jobs.empty(); });
            --m_idle;
            if (!have_job) {
                --m_threads;
                return;
            }
            unique_function job = std::move(m_jobs.front());
            m_jobs.pop_front();
            lock.unlock();
            job();
            lock.lock();
        }
    }
    static constexpr int max_threads = 4;
    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::deque<unique_function> m_jobs;
    int m_threads = 0;
    int m_idle = 0;
};

/// Shared by a lookup's awaiter (loop thread) and its job (resolver thread).
struct lookup_state {
    std::mutex mutex;
    bool abandoned = false; // the awaiter is gone or cancelled: deliver nothing
    std::vector<address> addresses;
    int error = 0;
    event_loop* loop = nullptr;
    suspended_wait* waiter = nullptr; // valid while not abandoned
};

class resolve_awaiter : public cancellable_wait<resolve_awaiter> {
public:
    resolve_awaiter(std::string host, std::uint16_t port)
        : m_state(std::make_shared<lookup_state>()), m_host(std::move(host)), m_port(port) {}
    resolve_awaiter(const resolve_awaiter&) = delete;
    resolve_awaiter& operator=(const resolve_awaiter&) = delete;
    ~resolve_awaiter() {
        std::lock_guard lock(m_state->mutex);
        m_state->abandoned = true;
    }

    bool await_ready() const noexcept { return false; }
    std::vector<address> await_resume() {
        throw_if_cancelled();
        if (m_state->error) throw std::system_error(m_state->error, resolver_category(), "resolve " + m_host);
        return std::move(m_state->addresses);
    }

private:
    static void lookup(const std::shared_ptr<lookup_state>& shared, const std::string& host, std::uint16_t port) {
        lookup_state& state = *shared;
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        addrinfo* found = nullptr;
        const int error = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
        std::vector<address> addresses;
        for (addrinfo* ai = found; ai; ai = ai->ai_next) {
            address a = address::from_native(ai->ai_addr, ai->ai_addrlen);
            bool seen = false;
            for (const address& b : addresses) seen = seen || b == a;
            if (!seen) addresses.push_back(a);
        }
        if (found) ::freeaddrinfo(found);
        // Post while holding the mutex: the awaiter marks itself abandoned under the same
        // mutex before it (or its loop) goes away, so a late result is never delivered.
        std::lock_guard lock(state.mutex);
        if (state.abandoned) return;
        state.addresses = std::move(addresses);
        state.error = error;
        // The callback owns a reference: the awaiter may be gone by the time it runs.
        state.loop->post([keep = shared] {
            std::lock_guard relock(keep->mutex);
            if (keep->abandoned) return;
            tandem::detail::hooks(*keep->loop).schedule(keep->waiter->complete(), keep->waiter->context);
        });
    }

    friend class cancellable_wait<resolve_awaiter>;
    bool start() {
        m_state->loop = &this_loop();
        m_state->waiter = this;
        resolver_threads::instance().submit([state = m_state, host = m_host, port = m_port] { lookup(state, host, port); });
        return true;
    }
    bool stop() noexcept {
        std::lock_guard lock(m_state->mutex);
        m_state->abandoned = true; // the lookup finishes on its thread, unheard
        return true;
    }

    std::shared_ptr<lookup_state> m_state;
    std::string m_host;
    std::uint16_t m_port;
};

} // namespace detail

/// Resolves a host name (or numeric address) with getaddrinfo on tandem's resolver threads,
/// never blocking the loop. Returns every address found, IPv4 and IPv6, without duplicates.
/// Throws std::system_error (category "tandem.resolve") on failure. Cancellable: a cancelled
/// lookup returns at once; the thread finishes it and throws the answer away.
inline task<std::vector<address>> resolve(std::string host, std::uint16_t port) {
    co_return co_await detail::resolve_awaiter(std::move(host), port);
}

} // namespace tandem
