// tandem — connected byte streams (the base of TCP and Unix streams) and the accept loop their
// listeners share.
//
// Layer: I/O. A peer reset is a std::system_error, end of stream is read_some() returning 0.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/net/socket.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"

#include <cstddef>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <system_error>

namespace tandem {

/// Thrown by read_exact / read_until when the stream ends before the requested data.
class end_of_stream : public std::runtime_error {
public:
    end_of_stream() : std::runtime_error("tandem: end of stream before the expected data") {}
};

/// A connected byte stream (TCP or Unix). Reads and writes are awaitables that complete
/// without allocating; only one read and one write may be in flight at a time.
class stream_socket : public detail::socket_base {
public:
    using socket_base::socket_base;

    /// Reads what is available (at least one byte), waiting if nothing is. 0 = end of stream.
    /// Cancel-safe: a read that throws tandem::cancelled read nothing.
    template <class = void> // compiled only where used: the first io_operation costs a TU ~0.2 G instructions
    auto read_some(std::span<char> buffer) {
        return detail::make_io(*this, false,
                               [fd = native_handle(), buffer] { return ::recv(fd, buffer.data(), buffer.size(), 0); },
                               "recv");
    }
    // T named in the call: g++ would deduce read_some's type, so compile it, at once; and in
    // the parameter, for clang, which would compile the span's members (detail/dependent.hpp).
    template <class T = void>
    auto read_some(detail::dependent_t<std::span<std::byte>, T> buffer) {
        return read_some<T>(std::span<char>(reinterpret_cast<char*>(buffer.data()), buffer.size()));
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
    template <class = void>
    auto wait_readable() {
        return detail::make_io(*this, false, [] { return ssize_t{0}; }, "wait readable", false);
    }

    /// Reads exactly buffer.size() bytes. Throws end_of_stream if the peer closes first.
    /// Not cancel-safe: a cancelled call may have consumed a prefix (close the stream).
    template <class = void> // compiled only where used (bench/README.md, "Include cost")
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
    template <class T = void>
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
                n = co_await read_some<T>(std::span<char>(buffer.data() + old, buffer.size() - old));
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
    template <class = void>
    auto write_all(std::string_view data) {
        return detail::make_io(*this, true, detail::send_all_op{native_handle(), data.data(), data.size()}, "send");
    }
    template <class T = void> // as read_some(std::span<std::byte>)
    auto write_all(detail::dependent_t<std::span<const std::byte>, T> data) {
        return write_all<T>(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    }

    /// Writes several buffers in order with one sendmsg (writev) per attempt; at most 16.
    /// Not cancel-safe, as write_all.
    /// Build the parts in a local array first (g++ 12 rejects braced lists inside co_await).
    template <class = void>
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
/// Its types are named through Deferred: compiled only where a listener accepts (dependent.hpp).
template <class Deferred = void>
dependent_t<task<int>, Deferred> accept_fd(socket_base& listener) {
    dependent_t<std::chrono::milliseconds, Deferred> pause{1};
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

} // namespace detail

} // namespace tandem
