// tandem — an HTTP/1.1 client for calling other services: one client per origin serves any
// number of concurrent requests over a pool of keep-alive connections (connection_pool.hpp).
// Content-Length, chunked and close-delimited responses; one timeout bounds each whole
// request; stale keep-alive connections are detected before reuse; http:// only (no TLS).
//
// Layer: protocols.
#pragma once

#include "tandem/fwd.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/http/connection_pool.hpp"
#include "tandem/http/message.hpp"
#include "tandem/http/parser.hpp"
#include "tandem/net.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"
#include "tandem/when.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

namespace tandem::http {

/// A response as the client received it; it owns its data.
struct client_response {
    int status = 0;
    std::string reason;
    int version = 11; // 10 or 11
    header_list headers;
    std::string body;

    /// The first header with this name (case-insensitive), or an empty view.
    std::string_view header(std::string_view name) const noexcept { return detail::find_header(headers, name); }
    /// 2xx.
    bool ok() const noexcept { return status >= 200 && status < 300; }
};

/// A request to send. It is a value: the client keeps its own copy for as long as the
/// request runs, so it may be built from temporaries.
struct client_request {
    std::string method = "GET";
    std::string target = "/"; // origin-form: "/path?q=1"
    header_list headers;      // Host, and Content-Length for a body, are added unless given
    std::string body;

    /// Replaces the header called `name` (case-insensitive), or adds it.
    client_request& set_header(field_text name, field_text value) {
        detail::set_header(headers, std::move(name), std::move(value));
        return *this;
    }
};

/// The server sent something that is not HTTP/1.1, or closed the connection mid-response.
class protocol_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct client_options {
    /// Bounds each whole request: waiting for a connection, connecting, sending and reading
    /// the response. Zero means none. Expiry throws tandem::timed_out.
    std::chrono::milliseconds timeout{30'000};
    /// Connections kept to the origin at most; further requests wait in FIFO order.
    std::size_t max_connections = 8;
    /// Requests that may wait for a connection; one more throws pool_overloaded at once.
    std::size_t max_waiting = 1024;
    /// Idle connections older than this are closed, not reused.
    std::chrono::milliseconds idle_timeout{4'000};
    /// Largest response body accepted (protocol_error beyond).
    std::uint64_t max_body = 64u << 20;
    /// Largest response head (status line and headers) accepted.
    std::size_t max_head = 64u << 10;
    /// Sent as the Host header (default: from the URL, or the address).
    std::string host;
};

/// The client: a class template's one instantiation behind an alias, so that a translation
/// unit that makes no client analyses none of its bodies (README, "Headers").
// (declared, with the alias tandem::http::client, in fwd.hpp)

/// One-shot options for fetch().
struct fetch_options {
    std::string method = "GET";
    header_list headers;
    std::string body;
    std::chrono::milliseconds timeout{30'000};
    std::uint64_t max_body = 64u << 20;
};

/// A client for one origin (scheme, host, port). Many tasks of one event loop may share it:
/// requests run concurrently on up to max_connections keep-alive connections, and every
/// request's arguments are copied into the request, so `auto t = c.get("/p/" + id);` may be
/// awaited later. Requests keep what they share with the client alive: one may outlive the
/// client (detached, or destroyed with its loop) and still unwind safely.
///
/// Cancel safety: every request may be cancelled (or time out) at any suspension point. A
/// request that ends without a complete response closes its connection rather than give
/// it back, so no later request can read a stale response.
template <class Deferred>
class basic_client {
    template <class T>
    using deferred = tandem::detail::dependent_t<T, Deferred>; // detail/dependent.hpp says why

public:
    /// A client for a numeric address; Host is options.host or the address.
    explicit basic_client(address to, client_options options = {}) {
        options = checked(std::move(options));
        if (options.host.empty()) options.host = to.port() == 80 ? bracketed_ip(to) : to.to_string();
        const pool_options p = pool_of(options);
        m_state = std::make_shared<state>(std::move(options), std::move(to), p);
    }

    /// A client for "http://host[:port]"; the host name is resolved off the loop on first
    /// use. Throws std::invalid_argument for other schemes, and with advice for https://.
    explicit basic_client(std::string_view url, client_options options = {}) : basic_client(origin_only(url), std::move(options)) {}
    explicit basic_client(const char* url, client_options options = {}) : basic_client(std::string_view(url), std::move(options)) {}
    explicit basic_client(origin o, client_options options = {}) {
        options = checked(std::move(options));
        if (options.host.empty()) options.host = o.host_header();
        const pool_options p = pool_of(options);
        m_state = std::make_shared<state>(std::move(options), std::move(o.host), o.port, p);
    }

    basic_client(const basic_client&) = delete;
    basic_client& operator=(const basic_client&) = delete;

    /// Sends `r` and reads the whole response. Retries once on a new connection when the
    /// request provably was not processed: a reused connection failed before any of the
    /// request was written, or (idempotent methods) closed or reset before any response
    /// byte. Throws tandem::timed_out, protocol_error, pool_overloaded, std::system_error
    /// (connect/IO failures), std::invalid_argument (a malformed request). Cancellable.
    task<client_response> send(client_request r) { return run(m_state, std::move(r)); }

    task<client_response> request(std::string method, std::string target, std::string body = {},
                                  header_list headers = {}) {
        return send(client_request{std::move(method), std::move(target), std::move(headers), std::move(body)});
    }
    task<client_response> get(std::string target, header_list headers = {}) {
        return request("GET", std::move(target), {}, std::move(headers));
    }
    task<client_response> head(std::string target, header_list headers = {}) {
        return request("HEAD", std::move(target), {}, std::move(headers));
    }
    task<client_response> post(std::string target, std::string body,
                               std::string content_type = "application/octet-stream") {
        return request("POST", std::move(target), std::move(body), {{"Content-Type", std::move(content_type)}});
    }
    task<client_response> put(std::string target, std::string body,
                              std::string content_type = "application/octet-stream") {
        return request("PUT", std::move(target), std::move(body), {{"Content-Type", std::move(content_type)}});
    }

    /// Whether any connection (idle or in use) is open.
    bool connected() const noexcept { return m_state->pool.open_connections() > 0; }
    /// Closes the idle connections now; those in use close when their request ends.
    void close() noexcept { m_state->pool.close(); }
    /// Connections opened so far (keep-alive keeps this low).
    std::size_t connections_opened() const noexcept { return m_state->pool.connections_opened(); }
    /// Connections open now (idle and in use); never above max_connections.
    std::size_t open_connections() const noexcept { return m_state->pool.open_connections(); }
    std::size_t idle_connections() const noexcept { return m_state->pool.idle_connections(); }
    /// Requests waiting for a connection.
    std::size_t waiting() const noexcept { return m_state->pool.waiting(); }
    const client_options& options() const noexcept { return m_state->options; }

private:
    /// What the client's requests share. Each request holds it too, so a request that
    /// outlives its client (detached, or destroyed with the loop afterwards) unwinds safely:
    /// its lease and its place in the queue point into this, not into the client.
    struct state {
        state(client_options o, address to, const pool_options& p) : options(std::move(o)), pool(std::move(to), p) {}
        state(client_options o, std::string host, std::uint16_t port, const pool_options& p)
            : options(std::move(o)), pool(std::move(host), port, p) {}
        client_options options;
        deferred<connection_pool> pool;
        event_loop* loop = nullptr;
        std::size_t in_flight = 0; // requests started and not finished

        /// The pool's connections and waiters belong to one loop: a client used from a second
        /// loop while requests run on the first would corrupt both. Between requests it may
        /// move (a script's successive sync_wait calls); idle connections stay with the old loop.
        void enter_loop() {
            event_loop* here = event_loop::current();
            if (here != loop) {
                if (in_flight > 0)
                    throw std::logic_error(
                        "tandem::http::client: used from two event loops at once; make one client per loop");
                pool.close();
                loop = here;
            }
            ++in_flight;
        }
    };

    /// The request's coroutine: its parameters (the shared state and the request) are its own.
    static task<client_response> run(std::shared_ptr<state> s, client_request r) {
        validate(r);
        s->enter_loop();
        struct leave {
            state& s;
            ~leave() {
                if (--s.in_flight == 0) s.pool.restore_slots();
            }
        } in_flight{*s};
        if (s->options.timeout.count() > 0 && s->options.timeout < forever)
            co_return co_await with_timeout(s->options.timeout, perform(*s, r));
        co_return co_await perform(*s, r);
    }

    /// Refuses a Host that would inject header lines into every request.
    static client_options checked(client_options o) {
        for (char c : o.host)
            if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
                throw std::invalid_argument("tandem::http::client: invalid character in client_options::host: \"" +
                                            o.host + "\"");
        return o;
    }

    static pool_options pool_of(const client_options& o) {
        pool_options p;
        p.max_connections = o.max_connections;
        p.max_waiting = o.max_waiting;
        p.idle_timeout = o.idle_timeout >= forever ? std::chrono::nanoseconds::max()
                                                   : std::chrono::nanoseconds(o.idle_timeout);
        return p;
    }
    static std::string bracketed_ip(const address& a) { return a.is_v6() ? "[" + a.ip() + "]" : a.ip(); }
    static origin origin_only(std::string_view url) {
        origin o = origin::parse(url);
        if (o.target != "/")
            throw std::invalid_argument("tandem::http::client: give the client an origin (\"http://host:port\") and "
                                        "the path to get()/send(): \"" + std::string(url) + "\"");
        return o;
    }

    static bool idempotent(std::string_view method) noexcept {
        return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" || method == "OPTIONS" ||
               method == "TRACE";
    }

    /// Rejects what would corrupt the request on the wire (header injection, a target with
    /// spaces) before anything is sent.
    static void validate(const deferred<client_request>& r) {
        auto bad = [](const std::string& what, std::string_view value) {
            throw std::invalid_argument("tandem::http::client: invalid " + what + ": \"" + std::string(value) + "\"");
        };
        if (r.method.empty() || !detail::is_token(r.method)) bad("method", r.method);
        if (r.target.empty() || (r.target.front() != '/' && r.target != "*")) bad("target (must start with '/')", r.target);
        for (char c : r.target)
            if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) bad("character in the target", r.target);
        for (const auto& [n, v] : r.headers) {
            if (n.empty() || !detail::is_token(n)) bad("header name", n);
            // The server's rule for its own headers: field characters only (CR, LF, NUL and
            // other controls but HTAB would split the request or be refused by the peer).
            if (detail::skip_field_chars(v, 0, v.size()) != v.size()) bad("header value", v);
            // The client frames the body itself. A length that disagrees with the body, or a
            // transfer coding the body is not in, would leave bytes the server reads as the
            // start of another request (request smuggling; the responses desynchronise).
            if (iequals(n, "transfer-encoding"))
                bad("header (the client sends the body with Content-Length; give it the body whole)", n);
            if (iequals(n, "content-length")) {
                std::uint64_t length = 0;
                if (!detail::parse_decimal(detail::trim_ows(v), length) || length != r.body.size())
                    bad("Content-Length (it must be the body's size, " + std::to_string(r.body.size()) + ")", v);
            }
        }
    }

    /// The request head, Host and Content-Length added unless the caller gave them.
    static std::string head_of(const client_options& options, const deferred<client_request>& r) {
        std::string head;
        head.reserve(64 + r.target.size() + options.host.size() + r.headers.size() * 32);
        head.append(r.method).append(" ").append(r.target).append(" HTTP/1.1\r\n");
        const bool has_host = detail::has_header(r.headers, "host");
        const bool has_length =
            detail::has_header(r.headers, "content-length") || detail::has_header(r.headers, "transfer-encoding");
        if (!has_host) head.append("Host: ").append(options.host).append("\r\n");
        for (const auto& [n, v] : r.headers) head.append(n).append(": ").append(v).append("\r\n");
        if (!has_length && (!r.body.empty() || r.method == "POST" || r.method == "PUT" || r.method == "PATCH")) {
            head += "Content-Length: ";
            detail::append_decimal(head, r.body.size());
            head += "\r\n";
        }
        head += "\r\n";
        return head;
    }

    static constexpr std::size_t first_body_capacity = 64 * 1024;
    /// Timeouts from here on (about 146 years; milliseconds::max() among them) mean none:
    /// converted to the clock's nanoseconds, or added to now, they would overflow into the
    /// past and expire at once.
    static constexpr std::chrono::milliseconds forever =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds::max()) / 2;

    /// How far an exchange got before it failed: what decides whether a retry is safe.
    enum class progress : std::uint8_t { nothing_written, written, response_started };

    static task<client_response> perform(state& s, const deferred<client_request>& r) {
        const std::string head = head_of(s.options, r);
        for (int attempt = 0;; ++attempt) {
            connection_lease lease = co_await s.pool.acquire();
            const bool reused = lease->reused;
            progress p = progress::nothing_written;
            try {
                co_return co_await exchange(s.options, lease, r, head, p);
            } catch (const std::system_error& e) {
                if (e.code() == std::errc::operation_canceled) throw; // closed under us: not the peer
                if (!retriable(reused, attempt, p, r.method)) throw;
            } catch (const protocol_error&) {
                if (!retriable(reused, attempt, p, r.method)) throw;
            }
            // The lease dies here: the failed connection is closed before the retry.
        }
    }

    static bool retriable(bool reused, int attempt, progress p, std::string_view method) noexcept {
        if (!reused || attempt > 0) return false;
        return p == progress::nothing_written || (p == progress::written && idempotent(method));
    }

    static task<client_response> exchange(const client_options& options, connection_lease& lease,
                                          const deferred<client_request>& r, const std::string& head, progress& p) {
        deferred<pooled_connection>& c = *lease;
        const std::size_t sent = send_now(c, head, r.body); // throws with nothing written
        p = progress::written;
        std::exception_ptr write_error;
        bool keep = false;
        deferred<client_response> out;
        if (sent == head.size() + r.body.size()) {
            out = co_await read_response(options, c, r, p, write_error, keep);
        } else {
            // The rest is written while the response is read: a server may answer while it
            // reads the body (an echo, a streaming proxy), and writing it all first would
            // deadlock both ways once the socket buffers fill.
            auto both = co_await when_all(write_rest(c, head, r.body, sent, write_error),
                                          read_response(options, c, r, p, write_error, keep));
            out = std::move(std::get<1>(both));
        }
        if (keep && !write_error) lease.recycle();
        co_return out;
    }

    /// Reads the response; `keep` tells whether the connection may serve another request.
    /// A server may answer before it has read the whole body (413, 401) and close: the
    /// write then fails (write_error), but its answer may be waiting in the socket. Only if
    /// no complete head comes does the write's error stand.
    static task<client_response> read_response(const client_options& options, deferred<pooled_connection>& c,
                                               const deferred<client_request>& r, progress& p,
                                               const std::exception_ptr& write_error, bool& keep) {
        deferred<std::array<header, 100>> storage;
        limits lim;
        lim.max_head = options.max_head;
        lim.max_request_line = options.max_head;
        lim.max_headers = storage.size();
        deferred<response_head> parsed;
        parse_result pr;
        // The head is parsed again only when a line has ended since the last try (or it grew
        // past max_head): the parser's answer cannot change in between. Re-parsing at every
        // read would let a server that drips its head byte by byte cost max_head squared.
        std::size_t scanned = 0; // pending bytes the last parse saw
        for (;;) {
            const std::string_view in = c.pending();
            if (!in.empty()) p = progress::response_started;
            if (in.find('\n', scanned) != std::string_view::npos || in.size() > options.max_head) {
                pr = parse_response(in, parsed, storage, r.method == "HEAD", lim);
                if (pr.state == parse_state::error) throw protocol_error("tandem::http: bad response: " + std::string(pr.reason));
                if (pr.state == parse_state::complete) {
                    if (parsed.status >= 200) break;
                    if (parsed.status == 101) throw protocol_error("tandem::http: unexpected 101 Switching Protocols");
                    c.consume(pr.head_size); // 100 Continue, 103 Early Hints: skip to the final response
                    scanned = 0;
                    continue;
                }
            }
            scanned = in.size();
            std::size_t got = 0;
            try {
                got = co_await c.read_more();
            } catch (const std::system_error&) {
                if (write_error) std::rethrow_exception(write_error);
                throw;
            }
            if (got == 0) {
                if (write_error) std::rethrow_exception(write_error);
                throw protocol_error("tandem::http: connection closed before a response");
            }
        }
        deferred<client_response> out;
        out.status = parsed.status;
        out.reason = std::string(parsed.reason);
        out.version = parsed.version;
        out.headers.reserve(parsed.headers.size());
        for (const header& h : parsed.headers) out.headers.emplace_back(h.name, h.value); // copied: no std::string between
        keep = parsed.keep_alive && !wants_close(r);
        const body_framing framing = parsed.framing;
        const std::uint64_t length = parsed.content_length;
        c.consume(pr.head_size); // parsed's views die here; what is needed was copied

        if (framing == body_framing::content_length) {
            if (length > options.max_body) throw protocol_error("tandem::http: response body larger than max_body");
            const std::size_t size = static_cast<std::size_t>(length);
            const std::string_view have = c.pending().substr(0, size);
            // The body grows with what arrives (doubling), not to what the header claims: a
            // few bytes saying "Content-Length: 60000000" must not cost 60 MB at once.
            out.body.resize(std::min(size, std::max(have.size(), first_body_capacity)));
            std::memcpy(out.body.data(), have.data(), have.size());
            c.consume(have.size());
            // The rest goes straight into the body: no copy through the connection's buffer.
            for (std::size_t got = have.size(); got < size;) {
                if (got == out.body.size()) out.body.resize(std::min(size, got * 2));
                const std::size_t n =
                    co_await c.stream.read_some(deferred<std::span<char>>(out.body.data() + got, out.body.size() - got));
                if (n == 0) throw protocol_error("tandem::http: connection closed inside a response body");
                got += n;
            }
        } else if (framing == body_framing::chunked) {
            chunked_decoder decoder(options.max_body);
            for (;;) {
                const auto d = decoder.decode(c.pending(), [&](std::string_view s) { out.body.append(s); });
                c.consume(d.consumed);
                if (d.state == parse_state::error) throw protocol_error("tandem::http: bad chunked body: " + std::string(d.reason));
                if (d.state == parse_state::complete) break;
                if (co_await c.read_more() == 0) throw protocol_error("tandem::http: connection closed inside a chunked body");
            }
        } else if (framing == body_framing::until_close) {
            for (;;) {
                if (out.body.size() + c.pending().size() > options.max_body)
                    throw protocol_error("tandem::http: response body larger than max_body");
                out.body.append(c.pending());
                c.consume(c.pending().size());
                if (co_await c.read_more() == 0) break;
            }
            keep = false; // its end was the body's end
        }
        co_return out;
    }

    static bool wants_close(const deferred<client_request>& r) noexcept {
        return iequals(detail::find_header(r.headers, "connection"), "close");
    }

    /// The first attempt at writing the request: a plain sendmsg, so that a connection the
    /// peer has already reset is found before any byte of the request left (then a retry is
    /// safe whatever the method). Returns the bytes sent.
    static std::size_t send_now(deferred<pooled_connection>& c, const std::string& head, const std::string& body) {
        iovec parts[2] = {{const_cast<char*>(head.data()), head.size()}, {const_cast<char*>(body.data()), body.size()}};
        msghdr msg{};
        msg.msg_iov = parts;
        msg.msg_iovlen = body.empty() ? 1 : 2;
        ssize_t n;
        do n = ::sendmsg(c.stream.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno != EAGAIN && errno != EWOULDBLOCK) tandem::detail::throw_errno("sendmsg");
        return 0;
    }

    /// Writes what send_now() left. A peer that closed or reset the connection is recorded
    /// in write_error rather than thrown: its answer may still be read.
    static task<> write_rest(deferred<pooled_connection>& c, const std::string& head, const std::string& body, std::size_t sent,
                             std::exception_ptr& write_error) {
        std::string_view rest[2];
        std::size_t count = 0;
        if (sent < head.size()) rest[count++] = std::string_view(head).substr(sent);
        const std::size_t body_from = sent > head.size() ? sent - head.size() : 0;
        if (body_from < body.size()) rest[count++] = std::string_view(body).substr(body_from);
        try {
            co_await c.stream.write_all_gathered(deferred<std::span<const std::string_view>>(rest, count));
        } catch (const std::system_error& e) {
            if (e.code() != std::errc::broken_pipe && e.code() != std::errc::connection_reset) throw;
            write_error = std::current_exception();
        }
    }

    std::shared_ptr<state> m_state;
};

/// One request to a full URL ("http://host:port/path?q=1") on a connection of its own,
/// closed afterwards: for scripts and tests. Services calling another service repeatedly
/// should keep a client, which reuses connections. Throws what client::send throws, and
/// std::invalid_argument for a URL that is not http://.
/// (`options` is spelt through Deferred so that only a caller compiles this coroutine:
/// detail/dependent.hpp.)
template <class Deferred = void>
task<client_response> fetch(std::string url, tandem::detail::dependent_t<fetch_options, Deferred> options) {
    origin o = origin::parse(url);
    client_options co;
    co.timeout = options.timeout;
    co.max_body = options.max_body;
    co.max_connections = 1;
    client_request r;
    r.method = std::move(options.method);
    r.target = o.target;
    r.headers = std::move(options.headers);
    r.body = std::move(options.body);
    r.set_header("Connection", "close");
    tandem::detail::dependent_t<client, Deferred> c(std::move(o), std::move(co));
    co_return co_await c.send(std::move(r));
}
// An overload, not a default argument: g++ 12 frees a coroutine parameter initialised from
// a default argument twice (free(): invalid pointer, seen here).
template <class Deferred = void>
task<client_response> fetch(std::string url) { return fetch<Deferred>(std::move(url), fetch_options{}); }

} // namespace tandem::http
