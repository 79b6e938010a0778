// tandem — TCP: connections (connect with a timeout) and listeners.
//
// Layer: I/O.
#pragma once

#include "tandem/detail/std_chrono.hpp"
#include "tandem/net/stream.hpp"
#include "tandem/task.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace tandem {

/// A TCP connection.
class tcp_stream : public stream_socket {
public:
    using stream_socket::stream_socket;

    /// Connects to `to`; a zero timeout waits as long as the kernel does. Throws
    /// std::system_error (ECONNREFUSED, ...) or tandem::timed_out. Cancellable.
    template <class Deferred = void> // compiled only where used (detail/dependent.hpp)
    static detail::dependent_t<task<tcp_stream>, Deferred> connect(address to, std::chrono::nanoseconds timeout = std::chrono::nanoseconds::zero()) {
        if (timeout.count() > 0) co_return co_await with_timeout(timeout, connect<Deferred>(to));
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
    template <class Deferred = void> // compiled only where used (detail/dependent.hpp)
    detail::dependent_t<task<tcp_stream>, Deferred> accept() {
        co_return tcp_stream(co_await detail::accept_fd<Deferred>(*this));
    }
};

} // namespace tandem
