// tandem — socket addresses: an IPv4 or IPv6 address and port, parsed and printed.
//
// Layer: I/O. Numeric only; names go through resolve() (net/resolve.hpp).
#pragma once

#include "tandem/detail/syscall.hpp"

#include <arpa/inet.h>
#include <cstdint>
#include <cstring>
#include <netinet/in.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/un.h>

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

} // namespace tandem
