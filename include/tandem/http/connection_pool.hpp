// tandem — the keep-alive connections of one HTTP origin: an origin parsed from a URL, and
// a pool that hands out at most max_connections connections, queues further requests in
// FIFO order (bounded), expires idle connections and checks an idle one before reuse.
//
// Layer: protocols. Loop-local: one pool (and the client that owns it) serves the tasks of
// one event loop; a multi-threaded program has a client per loop.
#pragma once

#include "tandem/fwd.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/loop.hpp"
#include "tandem/net.hpp"
#include "tandem/sync.hpp"
#include "tandem/task.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace tandem::http {

/// Where requests go: a host (a name or a numeric IP) and a port, plus the target a full
/// URL named ("/path?q=1"; "/" when it named none).
struct origin {
    std::string host; // without brackets for IPv6
    std::uint16_t port = 80;
    std::string target = "/";

    /// The Host header value: "example.com", "example.com:8080", "[::1]:8080".
    std::string host_header() const {
        std::string out;
        const bool v6 = host.find(':') != std::string::npos;
        if (v6) out += '[';
        out += host;
        if (v6) out += ']';
        if (port != 80) {
            out += ':';
            out += std::to_string(port);
        }
        return out;
    }

    /// Parses "http://host[:port][/target]". Throws std::invalid_argument with the reason;
    /// for https:// the reason says how to reach TLS services (tandem ships no TLS).
    static origin parse(std::string_view url) {
        auto fail = [&](std::string_view why) {
            throw std::invalid_argument("tandem::http: " + std::string(why) + ": \"" + std::string(url) + "\"");
        };
        std::string_view rest = url;
        const std::size_t scheme_end = rest.find("://");
        if (scheme_end == std::string_view::npos) fail("a URL must start with http://");
        std::string scheme(rest.substr(0, scheme_end));
        for (char& c : scheme)
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
        if (scheme == "https")
            fail("https:// is not supported: tandem ships no TLS. Reach TLS services through a local "
                 "TLS-terminating proxy or sidecar (nginx, haproxy, envoy, stunnel) and give the client its "
                 "http:// address");
        if (scheme != "http") fail("unsupported URL scheme (only http:// is supported)");
        rest.remove_prefix(scheme_end + 3);
        const std::size_t authority_end = rest.find_first_of("/?#");
        std::string_view authority = rest.substr(0, authority_end);
        std::string_view target = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
        if (const std::size_t hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
        if (authority.find('@') != std::string_view::npos) fail("credentials in URLs are not supported");
        origin o;
        std::string_view port_text;
        if (authority.starts_with('[')) {
            const std::size_t close = authority.find(']');
            if (close == std::string_view::npos) fail("unterminated IPv6 address");
            o.host = std::string(authority.substr(1, close - 1));
            std::string_view after = authority.substr(close + 1);
            if (!after.empty()) {
                if (after.front() != ':') fail("junk after the IPv6 address");
                port_text = after.substr(1);
                if (port_text.empty()) fail("empty port");
            }
        } else {
            const std::size_t colon = authority.find(':');
            o.host = std::string(authority.substr(0, colon));
            if (colon != std::string_view::npos) {
                port_text = authority.substr(colon + 1);
                if (port_text.empty()) fail("empty port");
            }
        }
        if (o.host.empty()) fail("no host in the URL");
        for (char c : o.host)
            if (static_cast<unsigned char>(c) <= ' ' || c == '/' || c == '\\' || c == '%' || c == 0x7f)
                fail("invalid character in the host");
        if (!port_text.empty()) {
            unsigned long port = 0;
            for (char c : port_text) {
                if (c < '0' || c > '9') fail("bad port");
                port = port * 10 + static_cast<unsigned long>(c - '0');
                if (port > 65535) fail("port out of range");
            }
            if (port == 0) fail("port out of range");
            o.port = static_cast<std::uint16_t>(port);
        }
        if (target.empty()) o.target = "/";
        else if (target.front() == '?') o.target = "/" + std::string(target);
        else o.target = std::string(target);
        return o;
    }
};

/// More requests are waiting for a connection than pool_options::max_waiting allows.
class pool_overloaded : public std::runtime_error {
public:
    explicit pool_overloaded(std::size_t waiting)
        : std::runtime_error("tandem::http: " + std::to_string(waiting) +
                             " requests already wait for a connection (max_waiting); shed load or raise the limit") {}
};

struct pool_options {
    /// Connections open at once (in use and idle together).
    std::size_t max_connections = 8;
    /// Requests that may wait for a connection; one more gets pool_overloaded.
    std::size_t max_waiting = 1024;
    /// An idle connection older than this is closed instead of reused. Node's server closes
    /// idle connections after 5 s; staying under that avoids most races with the server.
    std::chrono::nanoseconds idle_timeout = std::chrono::seconds(4);
};

/// One keep-alive connection and the bytes read from it but not consumed yet.
struct pooled_connection {
    tcp_stream stream;
    bool reused = false; // it served a request before this one
    event_loop::clock::time_point idle_since{};
    std::uint64_t generation = 0;

    // The buffer is a plain pointer rather than a std::unique_ptr<char[]>: this class is no
    // template, and a unique_ptr member would compile unique_ptr<char[]> in every includer.
    pooled_connection() = default;
    pooled_connection(pooled_connection&& other) noexcept
        : stream(std::move(other.stream)), reused(other.reused), idle_since(other.idle_since),
          generation(other.generation), m_buffer(other.m_buffer), m_capacity(other.m_capacity),
          m_begin(other.m_begin), m_end(other.m_end) {
        other.m_buffer = nullptr;
        other.m_capacity = other.m_begin = other.m_end = 0;
    }
    pooled_connection& operator=(pooled_connection&& other) noexcept {
        if (this != &other) {
            delete[] m_buffer;
            stream = std::move(other.stream);
            reused = other.reused;
            idle_since = other.idle_since;
            generation = other.generation;
            m_buffer = other.m_buffer;
            m_capacity = other.m_capacity;
            m_begin = other.m_begin;
            m_end = other.m_end;
            other.m_buffer = nullptr;
            other.m_capacity = other.m_begin = other.m_end = 0;
        }
        return *this;
    }
    ~pooled_connection() { delete[] m_buffer; }

    /// Bytes received and not consumed yet.
    std::string_view pending() const noexcept { return {m_buffer + m_begin, m_end - m_begin}; }
    void consume(std::size_t n) noexcept {
        m_begin += n;
        if (m_begin == m_end) m_begin = m_end = 0;
    }
    /// Reads what is available after the pending bytes; returns the count, 0 at end of stream.
    /// The buffer grows only while nothing is consumed (a head being parsed: bounded by the
    /// parser's max_head), and is never zero-filled.
    template <class Deferred = void> // compiled only where used (detail/dependent.hpp)
    task<std::size_t> read_more() {
        if (m_begin > 0 && (m_end == m_capacity || m_begin * 2 >= m_end)) {
            std::memmove(m_buffer, m_buffer + m_begin, m_end - m_begin);
            m_end -= m_begin;
            m_begin = 0;
        }
        if (m_end == m_capacity) {
            const std::size_t capacity = m_capacity ? m_capacity * 2 : initial_capacity;
            char* bigger = new char[capacity];
            if (m_end > m_begin) std::memcpy(bigger, m_buffer + m_begin, m_end - m_begin);
            delete[] m_buffer;
            m_buffer = bigger;
            m_capacity = capacity;
        }
        const std::size_t n = co_await stream.read_some<Deferred>(std::span<char>(m_buffer + m_end, m_capacity - m_end));
        m_end += n;
        co_return n;
    }
    /// Frees a buffer that one large head made large.
    void trim() noexcept {
        if (m_capacity > initial_capacity && m_begin == m_end) {
            delete[] m_buffer;
            m_buffer = nullptr;
            m_capacity = m_begin = m_end = 0;
        }
    }

private:
    static constexpr std::size_t initial_capacity = 16 * 1024;
    char* m_buffer = nullptr;
    std::size_t m_capacity = 0;
    std::size_t m_begin = 0;
    std::size_t m_end = 0;
};

/// The pool and its lease: class templates' one instantiation behind aliases, so that a
/// translation unit that makes no client analyses none of their bodies (README, "Headers").
// (declared, with the aliases, in fwd.hpp)

/// A connection lent by a pool. Dropping it closes the connection: only a request that
/// read a complete response gives it back (recycle()), so an exchange that ended any other
/// way (cancelled, timed out, bad response) can never leave bytes for the next request.
template <class T>
class basic_connection_lease {
public:
    basic_connection_lease() noexcept = default;
    basic_connection_lease(basic_connection_pool<T>& pool, pooled_connection c) noexcept
        : m_pool(&pool), m_conn(std::move(c)) {}
    basic_connection_lease(basic_connection_lease&& other) noexcept
        : m_pool(std::exchange(other.m_pool, nullptr)), m_conn(std::move(other.m_conn)) {}
    basic_connection_lease& operator=(basic_connection_lease&&) = delete;
    ~basic_connection_lease() { drop(); }

    pooled_connection& operator*() noexcept { return m_conn; }
    pooled_connection* operator->() noexcept { return &m_conn; }

    /// Returns the connection to the pool as idle (the response was read completely and
    /// the server keeps the connection open).
    void recycle() noexcept;
    /// Closes the connection and frees its slot.
    void drop() noexcept;

private:
    basic_connection_pool<T>* m_pool = nullptr;
    pooled_connection m_conn;
};

/// The connections to one origin. Waiting is FIFO and cancellable; the pool never holds
/// more than max_connections open, nor more than max_waiting requests in its queue.
template <class T>
class basic_connection_pool {
    template <class U>
    using deferred = tandem::detail::dependent_t<U, T>; // detail/dependent.hpp says why

public:
    /// A pool for `host` (a name, resolved off the loop on first use) or fixed addresses.
    basic_connection_pool(std::string host, std::uint16_t port, pool_options options)
        : m_host(std::move(host)), m_port(port), m_options(options), m_slots(checked(options).max_connections) {
        if (numeric(m_host)) m_addresses.emplace_back(m_host, port); // no lookup needed
    }
    basic_connection_pool(address to, pool_options options)
        : m_port(to.port()), m_options(options), m_slots(checked(options).max_connections) {
        m_addresses.push_back(std::move(to));
    }
    basic_connection_pool(const basic_connection_pool&) = delete;
    basic_connection_pool& operator=(const basic_connection_pool&) = delete;
    ~basic_connection_pool() = default; // leases must not outlive the pool (they point into it)

    /// Lends a connection: an idle one that is still open, else a new one. Waits (FIFO)
    /// while max_connections are in use; throws pool_overloaded when max_waiting requests
    /// wait already. Cancellable: a cancelled waiter leaves the queue and takes nothing.
    /// Connecting throws std::system_error (refused, unreachable) or the resolver's error.
    task<basic_connection_lease<T>> acquire() {
        if (!m_slots.try_acquire()) {
            if (m_waiting >= m_options.max_waiting) throw pool_overloaded(m_waiting);
            ++m_waiting;
            struct unwait {
                std::size_t& n;
                ~unwait() { --n; }
            } guard{m_waiting};
            co_await m_slots.acquire();
        }
        // From here the slot is ours; a lease carries it, and so does this guard until then.
        struct slot_guard {
            basic_connection_pool* pool;
            ~slot_guard() {
                if (pool) pool->m_slots.release();
            }
        } slot{this};
        expire_idle(event_loop::clock::now());
        while (!m_idle.empty()) {
            pooled_connection c = std::move(m_idle.back()); // the newest: least likely closed by the peer
            m_idle.pop_back();
            if (still_open(c)) {
                c.reused = true;
                slot.pool = nullptr;
                co_return basic_connection_lease<T>(*this, std::move(c));
            }
            closed_one(c);
        }
        pooled_connection c;
        c.stream = co_await connect();
        c.stream.set_nodelay(true);
        c.generation = m_generation;
        ++m_open;
        ++m_opened;
        slot.pool = nullptr;
        co_return basic_connection_lease<T>(*this, std::move(c));
    }

    /// Closes the idle connections now; those lent out close when their request ends.
    void close() noexcept {
        ++m_generation;
        while (!m_idle.empty()) {
            closed_one(m_idle.back());
            m_idle.pop_back();
        }
    }

    /// Call only when no acquire() runs and no lease exists: then every slot is free. A loop
    /// torn down with requests in flight can lose one: a slot handed to a waiter whose frame
    /// is destroyed before it resumes never comes back through the semaphore.
    void restore_slots() noexcept {
        if (const std::size_t free = m_slots.available(); free < m_options.max_connections)
            m_slots.release(m_options.max_connections - free);
    }

    /// Closes idle connections past idle_timeout (acquire() does this as well).
    void expire_idle(event_loop::clock::time_point now) noexcept {
        while (!m_idle.empty() && now - m_idle.front().idle_since >= m_options.idle_timeout) {
            closed_one(m_idle.front());
            m_idle.pop_front();
        }
    }

    /// Connections open now: lent out and idle.
    std::size_t open_connections() const noexcept { return m_open; }
    std::size_t idle_connections() const noexcept { return m_idle.size(); }
    /// Requests waiting for a connection.
    std::size_t waiting() const noexcept { return m_waiting; }
    /// Connections opened since the pool was made.
    std::size_t connections_opened() const noexcept { return m_opened; }
    const pool_options& options() const noexcept { return m_options; }

private:
    friend class basic_connection_lease<T>;

    static const pool_options& checked(const pool_options& o) {
        if (o.max_connections == 0) throw std::invalid_argument("tandem::http: max_connections must be at least 1");
        return o;
    }

    static bool numeric(const std::string& host) noexcept {
        in6_addr scratch;
        return ::inet_pton(AF_INET, host.c_str(), &scratch) == 1 || ::inet_pton(AF_INET6, host.c_str(), &scratch) == 1;
    }

    /// An idle connection is usable if the peer has neither closed nor reset it nor sent
    /// anything unasked (a 408, say): a non-blocking peek must find nothing to read.
    static bool still_open(const pooled_connection& c) noexcept {
        if (!c.pending().empty()) return false;
        char byte;
        for (;;) {
            const ssize_t n = ::recv(c.stream.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n < 0 && errno == EINTR) continue;
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        }
    }

    void closed_one(pooled_connection& c) noexcept {
        c.stream.close();
        --m_open;
    }

    void give_back(pooled_connection&& c) noexcept {
        if (c.generation != m_generation || !c.pending().empty()) {
            closed_one(c);
        } else {
            c.idle_since = event_loop::clock::now();
            c.trim(); // one big response pins no memory while idle
            try {
                m_idle.push_back(std::move(c));
            } catch (...) { // no memory for the idle list: closing is always correct
                closed_one(c);
            }
        }
        m_slots.release();
    }
    void discard(pooled_connection& c) noexcept {
        closed_one(c);
        m_slots.release();
    }

    task<tcp_stream> connect() {
        if (m_addresses.empty()) {
            // One lookup at a time: the others wait for its answer rather than repeat it.
            auto lock = co_await m_resolving.scoped_lock();
            if (m_addresses.empty()) m_addresses = co_await resolve(m_host, m_port);
        }
        const deferred<std::vector<address>> candidates = m_addresses;
        std::exception_ptr last;
        for (const address& a : candidates) {
            try {
                co_return co_await tcp_stream::connect(a);
            } catch (const std::system_error&) {
                last = std::current_exception();
            }
        }
        if (!m_host.empty() && !numeric(m_host)) m_addresses.clear(); // every address failed: look the name up again
        if (last) std::rethrow_exception(last);
        throw std::system_error(std::make_error_code(std::errc::host_unreachable), "tandem::http: no address to connect to");
    }

    std::string m_host; // empty when constructed from an address
    std::uint16_t m_port;
    pool_options m_options;
    deferred<std::vector<address>> m_addresses;
    async_mutex m_resolving;
    semaphore m_slots;
    deferred<std::deque<pooled_connection>> m_idle; // oldest first
    std::size_t m_open = 0;
    std::size_t m_opened = 0;
    std::size_t m_waiting = 0;
    std::uint64_t m_generation = 0;
};

template <class T>
inline void basic_connection_lease<T>::recycle() noexcept {
    if (basic_connection_pool<T>* p = std::exchange(m_pool, nullptr)) p->give_back(std::move(m_conn));
}

template <class T>
inline void basic_connection_lease<T>::drop() noexcept {
    if (basic_connection_pool<T>* p = std::exchange(m_pool, nullptr)) p->discard(m_conn);
}

} // namespace tandem::http
