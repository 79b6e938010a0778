// tandem — UDP sockets: datagrams to and from any peer, or a connected peer.
//
// Layer: I/O.
#pragma once

#include "tandem/net/socket.hpp"
#include "tandem/task.hpp"

#include <cstddef>
#include <span>
#include <string_view>
#include <sys/socket.h>

namespace tandem {

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
    template <class = void> // compiled only where used: the first io_operation costs a TU ~0.2 G instructions
    auto send_to(std::string_view data, const address& to) {
        return detail::make_io(*this, true,
                               [fd = native_handle(), data, to] {
                                   return ::sendto(fd, data.data(), data.size(), MSG_NOSIGNAL, to.native(), to.native_size());
                               },
                               "sendto");
    }

    /// Receives one datagram (truncated to the buffer) and who sent it.
    template <class Deferred = void> // compiled only where used (detail/dependent.hpp)
    detail::dependent_t<task<datagram>, Deferred> receive_from(std::span<char> buffer) {
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
    template <class = void>
    auto send(std::string_view data) {
        return detail::make_io(*this, true,
                               [fd = native_handle(), data] { return ::send(fd, data.data(), data.size(), MSG_NOSIGNAL); },
                               "send");
    }
    template <class = void>
    auto receive(std::span<char> buffer) {
        return detail::make_io(*this, false,
                               [fd = native_handle(), buffer] { return ::recv(fd, buffer.data(), buffer.size(), 0); },
                               "recv");
    }
};

} // namespace tandem
