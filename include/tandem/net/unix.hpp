// tandem — Unix domain stream sockets: connections, listeners (paths and "@abstract" names),
// and connected pairs.
//
// Layer: I/O.
#pragma once

#include "tandem/detail/std_chrono.hpp"
#include "tandem/net/stream.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/un.h>
#include <utility>

namespace tandem {

namespace detail {

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

/// A Unix domain stream socket.
class unix_stream : public stream_socket {
public:
    using stream_socket::stream_socket;

    /// Connects to a socket path; "@name" is a Linux abstract name. Throws std::system_error
    /// (ENOENT, ECONNREFUSED, ...). Cancellable.
    template <class Deferred = void> // compiled only where used (detail/dependent.hpp)
    static detail::dependent_t<task<unix_stream>, Deferred> connect(std::string_view path) {
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
    template <class Deferred = void> // compiled only where used (detail/dependent.hpp)
    detail::dependent_t<task<unix_stream>, Deferred> accept() {
        co_return unix_stream(co_await detail::accept_fd<Deferred>(*this));
    }
};

/// A connected pair of Unix stream sockets (socketpair): a pipe that works both ways.
inline std::pair<unix_stream, unix_stream> socket_pair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) detail::throw_errno("socketpair");
    return {unix_stream(fds[0]), unix_stream(fds[1])};
}

} // namespace tandem
