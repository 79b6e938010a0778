// tandem — a small, strict HTTP/1.1 server: routing, keep-alive, pipelining, chunked
// request and response bodies, timeouts against idle and slow clients, a connection limit
// and graceful shutdown.
//
// Layer: protocols. One coroutine per connection on the calling loop. Timeouts cost no timer
// per request: a sweeper task looks at every connection's deadline a few times per second
// and shuts down the socket of one that is late (its read then returns end of stream).
#pragma once

#include "tandem/http/message.hpp"
#include "tandem/http/parser.hpp"
#include "tandem/net.hpp"
#include "tandem/spawn.hpp"
#include "tandem/sync.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"
#include "tandem/detail/intrusive_list.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <system_error>
#include <utility>
#include <vector>

namespace tandem::http {

/// The request a handler sees. Views are valid until the handler's task finishes.
class request {
public:
    std::string_view method() const noexcept { return m_head->method; }
    std::string_view target() const noexcept { return m_head->target; }
    std::string_view path() const noexcept { return m_head->path; }
    std::string_view query() const noexcept { return m_head->query; }
    int version() const noexcept { return m_head->version; }
    std::span<const http::header> headers() const noexcept { return m_head->headers; }
    /// The first header with this name (case-insensitive), empty if absent.
    std::string_view header(std::string_view name) const noexcept { return m_head->find(name); }
    std::string_view body() const noexcept { return m_body; }
    /// A `:name` segment of the matched route, empty if absent.
    std::string_view param(std::string_view name) const noexcept {
        for (const auto& [n, v] : *m_params)
            if (n == name) return v;
        return {};
    }
    /// A query-string parameter, percent-decoded; nullopt if absent or malformed.
    std::optional<std::string> query_param(std::string_view name) const { return query_value(query(), name); }

private:
    friend class server;
    const request_head* m_head = nullptr;
    std::string_view m_body;
    const std::vector<std::pair<std::string_view, std::string_view>>* m_params = nullptr;
};

using handler = std::function<task<response>(request&)>;

/// Routes by method and path: exact segments, `:name` segments (request::param), and a
/// final `*` matching any rest (a prefix). First match wins. HEAD falls back to GET.
class router {
public:
    using params = std::vector<std::pair<std::string_view, std::string_view>>;

    router& route(std::string_view method, std::string_view pattern, handler h) {
        if (pattern.empty() || pattern.front() != '/') throw std::invalid_argument("tandem: route patterns start with '/'");
        entry e{std::string(method), {}, false, std::move(h)};
        std::string_view rest = pattern.substr(1);
        while (!rest.empty()) {
            const std::size_t slash = rest.find('/');
            std::string_view seg = rest.substr(0, slash);
            if (seg == "*") {
                if (slash != std::string_view::npos) throw std::invalid_argument("tandem: '*' must end a route pattern");
                e.prefix = true;
                break;
            }
            e.segments.emplace_back(seg);
            if (slash == std::string_view::npos) break;
            rest.remove_prefix(slash + 1);
            if (rest.empty()) e.segments.emplace_back(); // trailing slash is significant
        }
        m_routes.push_back(std::move(e));
        return *this;
    }
    router& get(std::string_view p, handler h) { return route("GET", p, std::move(h)); }
    router& post(std::string_view p, handler h) { return route("POST", p, std::move(h)); }
    router& put(std::string_view p, handler h) { return route("PUT", p, std::move(h)); }
    router& patch(std::string_view p, handler h) { return route("PATCH", p, std::move(h)); }
    router& del(std::string_view p, handler h) { return route("DELETE", p, std::move(h)); }

    /// The handler for (method, path), filling `out`. nullptr if none; then `allow` lists
    /// the methods the path does have (empty: 404, else 405).
    const handler* find(std::string_view method, std::string_view path, params& out, std::string& allow) const {
        for (int pass = 0; pass < 2; ++pass) {
            const std::string_view want = pass == 0 ? method : std::string_view("GET");
            if (pass == 1 && method != "HEAD") break;
            for (const entry& e : m_routes) {
                if (e.method != want) continue;
                out.clear();
                if (match(e, path, out)) return &e.handler_fn;
            }
        }
        allow.clear();
        params scratch;
        for (const entry& e : m_routes) {
            if (!match(e, path, scratch)) continue;
            if (allow.find(e.method) != std::string::npos) continue;
            if (!allow.empty()) allow += ", ";
            allow += e.method;
            if (e.method == "GET" && allow.find("HEAD") == std::string::npos) allow += ", HEAD";
        }
        return nullptr;
    }

private:
    struct entry {
        std::string method;
        std::vector<std::string> segments;
        bool prefix;
        handler handler_fn;
    };
    static bool match(const entry& e, std::string_view path, params& out) {
        if (path.empty() || path.front() != '/') return false;
        std::string_view rest = path.substr(1);
        std::size_t i = 0;
        bool at_end = rest.empty();
        while (!at_end) {
            const std::size_t slash = rest.find('/');
            const std::string_view seg = rest.substr(0, slash);
            if (i == e.segments.size()) return e.prefix;
            const std::string& want = e.segments[i++];
            if (!want.empty() && want.front() == ':') {
                if (seg.empty()) return false;
                out.emplace_back(std::string_view(want).substr(1), seg);
            } else if (want != seg) {
                return false;
            }
            if (slash == std::string_view::npos) {
                at_end = true;
            } else {
                rest.remove_prefix(slash + 1);
                if (rest.empty()) { // "/a/": one more, empty segment
                    if (i == e.segments.size()) return e.prefix;
                    if (!e.segments[i++].empty()) return false;
                    at_end = true;
                }
            }
        }
        return i == e.segments.size();
    }
    std::vector<entry> m_routes;
};

struct server_options {
    /// A keep-alive connection waiting for its next request is closed after this.
    std::chrono::milliseconds idle_timeout{5'000};
    /// From a request's first byte to its complete head (slowloris): 408, then close.
    std::chrono::milliseconds header_timeout{10'000};
    /// No progress reading a body or writing a response for this long: close.
    std::chrono::milliseconds io_timeout{30'000};
    /// Graceful shutdown: requests in flight get this long before their sockets are shut.
    std::chrono::milliseconds drain_timeout{10'000};
    /// Graceful shutdown: a keep-alive connection between requests stays open up to this
    /// long (before drain_timeout starts) for a request its client may already have sent,
    /// which is answered with "Connection: close"; then it closes. Closing it at once fails that
    /// request: a client under steady load always has one on the wire (a rolling reload
    /// under wrk lost ~15 requests per reload). Zero: close at once.
    std::chrono::milliseconds drain_linger{250};
    /// More connections wait in the kernel's accept queue.
    std::size_t max_connections = 10'000;
    http::limits limits{};
};

class server {
public:
    explicit server(router routes, server_options options = {})
        : m_router(std::move(routes)), m_options(options), m_slots(options.max_connections) {}
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Accepts and serves connections until shutdown(); then finishes the requests in flight
    /// (up to drain_timeout), closes idle connections and returns.
    task<void> serve(tcp_listener& listener) {
        m_now = now_ns();
        auto sweeper = spawn(sweep(), "http sweeper");
        auto acceptor = spawn(accept_loop(listener), "http acceptor");
        m_acceptor = &acceptor;
        std::exception_ptr failure;
        try {
            co_await acceptor;
        } catch (const cancelled&) {
        } catch (...) {
            failure = std::current_exception();
        }
        m_acceptor = nullptr;
        co_await begin_drain();
        if (m_count != 0) {
            bool drained = true;
            try {
                co_await with_timeout(m_options.drain_timeout, wait_closed());
            } catch (const timed_out&) {
                drained = false;
            }
            if (!drained) {
                m_connections.for_each([](connection& c) { ::shutdown(c.fd, SHUT_RDWR); });
                co_await wait_closed();
            }
        }
        sweeper.cancel();
        try {
            co_await sweeper;
        } catch (const cancelled&) {
        }
        if (failure) std::rethrow_exception(failure);
    }

    /// Stops accepting, lets requests in flight finish, closes idle connections; serve()
    /// returns when all are gone. Loop thread only (call it from a signal-handling task).
    void shutdown() noexcept {
        m_draining = true;
        if (m_acceptor) m_acceptor->cancel();
    }

    std::size_t connection_count() const noexcept { return m_count; }
    std::uint64_t requests_served() const noexcept { return m_requests; }
    const server_options& options() const noexcept { return m_options; }

private:
    using clock = std::chrono::steady_clock;

    /// Per-connection state the sweeper and shutdown can see.
    struct connection : tandem::detail::list_hook {
        int fd = -1;
        std::int64_t deadline = 0; // steady ns; 0: none (a handler is running)
        bool idle = false;         // between requests, nothing buffered
        bool reading_head = false; // a partial head is buffered (a timeout answers 408)
        bool timed_out = false;
        // No request answered yet: its client opened it to send one, which may be on the
        // wire. Draining must not close it unanswered (a rolling reload would fail that
        // request); it closes after its first response, or at its idle deadline.
        bool fresh = true;
    };

    /// The buffer and header storage a connection needs only while a request is in it;
    /// idle connections give theirs back, so 10k idle clients cost their frames, not 16 KiB each.
    struct workspace {
        std::vector<char> data;
        std::vector<header> headers;
        std::string out; // the response head being written
        std::size_t begin = 0;
        std::size_t end = 0;
        std::string_view view() const noexcept { return {data.data() + begin, end - begin}; }
    };

    static std::int64_t now_ns() noexcept { return clock::now().time_since_epoch().count(); }
    /// A deadline `d` from now on the sweeper's clock: it reads the clock once per sweep, so
    /// requests read none; a timeout fires up to one sweep period late, never early.
    std::int64_t after(std::chrono::milliseconds d) const noexcept {
        return m_now + m_period + std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    }

    std::unique_ptr<workspace> take_workspace() {
        if (!m_spare.empty()) {
            auto w = std::move(m_spare.back());
            m_spare.pop_back();
            return w;
        }
        auto w = std::make_unique<workspace>();
        w->data.resize(16 * 1024);
        w->headers.resize(m_options.limits.max_headers);
        return w;
    }
    void give_back(std::unique_ptr<workspace>& w) {
        if (!w) return;
        w->begin = w->end = 0;
        if (w->data.size() <= 64 * 1024 && m_spare.size() < 256) m_spare.push_back(std::move(w));
        w.reset();
    }

    task<void> accept_loop(tcp_listener& listener) {
        for (;;) {
            co_await m_slots.acquire();
            tcp_stream s;
            try {
                s = co_await listener.accept();
            } catch (...) {
                m_slots.release();
                throw;
            }
            s.set_nodelay(true);
            // Counted now, not when handle() first runs: serve() may see the acceptor end
            // (cancelled by shutdown) before this task starts, and must wait for it.
            ++m_count;
            try {
                spawn(handle(std::move(s)), "http connection").detach();
            } catch (...) {
                --m_count;
                m_slots.release();
                throw;
            }
        }
    }

    task<void> sweep() {
        const auto shortest = std::min({m_options.idle_timeout, m_options.header_timeout, m_options.io_timeout});
        const auto period = std::clamp<std::chrono::milliseconds>(shortest / 4, std::chrono::milliseconds(10),
                                                                   std::chrono::milliseconds(1000));
        m_period = std::chrono::duration_cast<std::chrono::nanoseconds>(period).count();
        for (;;) {
            co_await sleep_for(period);
            const std::int64_t now = m_now = now_ns();
            m_connections.for_each([&](connection& c) {
                if (c.deadline == 0 || now < c.deadline) return;
                c.deadline = 0;
                c.timed_out = true;
                // Shutting the read side wakes the pending read with end of stream; a
                // partial head still gets its 408. A stuck writer needs both sides.
                ::shutdown(c.fd, c.reading_head ? SHUT_RD : SHUT_RDWR);
            });
        }
    }

    task<void> wait_closed() {
        while (m_count != 0) {
            m_all_closed.reset();
            co_await m_all_closed.wait();
        }
    }

    /// Keep-alive connections between requests: how many, and closing them.
    std::size_t count_idle() {
        std::size_t n = 0;
        m_connections.for_each([&](connection& c) { n += c.idle && !c.fresh; });
        return n;
    }
    void close_idle() {
        m_connections.for_each([](connection& c) {
            if (c.idle && !c.fresh) ::shutdown(c.fd, SHUT_RD); // between requests: just go
        });
    }

    /// Stops new requests on kept-alive connections: one that comes within drain_linger is
    /// answered with Connection: close (serve_connection then returns); the rest close.
    task<void> begin_drain() {
        m_draining = true;
        if (m_options.drain_linger > std::chrono::milliseconds::zero() && count_idle() != 0) {
            try {
                co_await with_timeout(m_options.drain_linger, wait_closed());
            } catch (const timed_out&) {
            }
        }
        close_idle();
    }

    task<void> handle(tcp_stream s) {
        connection c;
        c.fd = s.native_handle();
        m_connections.push_back(c);
        try {
            co_await serve_connection(s, c);
        } catch (...) {
            // A broken connection (reset, EPIPE, a timeout) ends only itself.
        }
        c.unlink();
        s.close();
        --m_count;
        m_slots.release();
        if (m_count == 0) m_all_closed.set();
    }

    /// Reads more bytes into w (taking a workspace when the connection has none). Returns
    /// 0 at end of stream.
    task<std::size_t> read_more(tcp_stream& s, std::unique_ptr<workspace>& w, std::size_t need_room) {
        if (!w) w = take_workspace(); // serve_connection waited for the first bytes holding none
        if (w->data.size() - w->end < need_room) {
            if (w->begin > 0 && w->end - w->begin + need_room <= w->data.size()) {
                std::memmove(w->data.data(), w->data.data() + w->begin, w->end - w->begin);
                w->end -= w->begin;
                w->begin = 0;
            } else {
                w->data.resize(std::max(w->data.size() * 2, w->end + need_room));
            }
        }
        for (;;) {
            const auto n = s.try_read_some(std::span<char>(w->data.data() + w->end, w->data.size() - w->end));
            if (n) {
                w->end += *n;
                co_return *n;
            }
            co_await s.wait_readable();
        }
    }

    task<void> write_error(tcp_stream& s, int status, std::string_view reason) {
        std::string out = "HTTP/1.1 ";
        detail::append_decimal(out, static_cast<std::uint64_t>(status));
        out += ' ';
        out += reason_phrase(status);
        out += "\r\nDate: ";
        out += detail::http_date();
        out += "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ";
        detail::append_decimal(out, reason.size() + 1);
        out += "\r\n\r\n";
        out += reason;
        out += '\n';
        co_await s.write_all(out);
        // Lingering close: stop sending, then read (and drop) what the client still sends
        // for a moment, so our close does not turn into a reset that destroys the answer.
        s.shutdown_write();
        try {
            co_await with_timeout(std::chrono::seconds(1), [](tcp_stream& st) -> task<void> {
                char sink[4096];
                for (std::size_t total = 0; total < 65536;) {
                    const std::size_t n = co_await st.read_some(std::span<char>(sink));
                    if (n == 0) break;
                    total += n;
                }
            }(s));
        } catch (...) {
        }
    }

    /// The connection's life: wait for a request holding nothing but this small frame (an
    /// idle keep-alive connection costs a few hundred bytes), then serve it in a frame that
    /// exists only while the request does.
    task<void> serve_connection(tcp_stream& s, connection& c) {
        std::unique_ptr<workspace> w;
        for (;;) {
            if (!w || w->end == w->begin) {
                give_back(w);
                if (m_draining && !c.fresh) co_return; // it answered with Connection: close
                c.idle = true;
                c.reading_head = false;
                c.deadline = after(m_options.idle_timeout);
                co_await s.wait_readable();
            }
            const bool keep = co_await serve_request(s, c, w);
            if (!keep) co_return;
        }
    }

    /// Reads, handles and answers one request (bytes may already be buffered in w).
    /// Returns false when the connection must close.
    task<bool> serve_request(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w) {
        const limits& lim = m_options.limits;
        request_head head;
        router::params params;
        std::string chunked_body;
        {
            // ---- the head ---------------------------------------------------------------
            parse_result parsed;
            for (;;) {
                if (w && w->end > w->begin) {
                    parsed = parse_request(w->view(), head, w->headers, lim);
                    if (parsed.state == parse_state::complete) break;
                    if (parsed.state == parse_state::error) {
                        give_back(w);
                        co_await write_error(s, parsed.status, parsed.reason);
                        co_return false;
                    }
                    if (!c.reading_head) {
                        c.reading_head = true;
                        c.idle = false;
                        c.deadline = after(m_options.header_timeout);
                    }
                }
                const std::size_t n = co_await read_more(s, w, 4096);
                if (n == 0) {
                    if (c.timed_out && c.reading_head) co_await write_error(s, 408, "request head timed out");
                    co_return false;
                }
            }
            c.idle = false;
            c.reading_head = false;

            // ---- the body ---------------------------------------------------------------
            std::string_view body;
            std::size_t consumed = parsed.head_size;
            bool buffer_changed = false; // a read may move the buffer under the head's views
            if (head.framing != body_framing::none && head.expect_continue && w->end - w->begin == parsed.head_size)
                co_await s.write_all(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"));
            if (head.framing == body_framing::content_length) {
                const std::size_t need = parsed.head_size + static_cast<std::size_t>(head.content_length);
                while (w->end - w->begin < need) {
                    c.deadline = after(m_options.io_timeout);
                    buffer_changed = true;
                    if (co_await read_more(s, w, need - (w->end - w->begin)) == 0) co_return false;
                }
                consumed = need;
            } else if (head.framing == body_framing::chunked) {
                chunked_body.clear();
                chunked_decoder decoder(lim.max_body);
                std::size_t pos = parsed.head_size;
                for (;;) {
                    const auto r = decoder.decode(w->view().substr(pos), [&](std::string_view d) { chunked_body.append(d); });
                    pos += r.consumed;
                    if (r.state == parse_state::error) {
                        give_back(w);
                        co_await write_error(s, r.status, r.reason);
                        co_return false;
                    }
                    if (r.state == parse_state::complete) break;
                    // The decoded bytes live in chunked_body now: drop the raw ones behind the
                    // head, or tiny chunks with long extensions would grow the buffer ~1000×
                    // the body limit.
                    if (const std::size_t raw = pos - parsed.head_size; raw > 0) {
                        char* at = w->data.data() + w->begin + parsed.head_size;
                        std::memmove(at, at + raw, w->end - (w->begin + pos));
                        w->end -= raw;
                        pos = parsed.head_size;
                    }
                    c.deadline = after(m_options.io_timeout);
                    buffer_changed = true;
                    if (co_await read_more(s, w, 4096) == 0) co_return false;
                }
                consumed = pos;
                body = chunked_body;
            }
            c.deadline = 0;
            if (buffer_changed) parse_request(w->view(), head, w->headers, lim); // refresh the views
            if (head.framing == body_framing::content_length)
                body = w->view().substr(parsed.head_size, static_cast<std::size_t>(head.content_length));

            // ---- the handler ------------------------------------------------------------
            request req;
            req.m_head = &head;
            req.m_body = body;
            req.m_params = &params;
            response resp;
            std::string allow;
            if (const handler* h = m_router.find(head.method, head.path, params, allow)) {
                try {
                    resp = co_await (*h)(req);
                } catch (const cancelled&) {
                    throw;
                } catch (...) {
                    resp = response(500, "internal server error\n");
                }
            } else if (!allow.empty()) {
                resp = response(405, "method not allowed\n");
                resp.set_header("Allow", allow);
            } else {
                resp = response(404, "not found\n");
            }

            // ---- the response -----------------------------------------------------------
            const bool keep = head.keep_alive && !m_draining;
            const bool head_only = head.method == "HEAD" || resp.status == 204 || resp.status == 304 || resp.status < 200;
            const bool streaming = static_cast<bool>(resp.streamer) && !head_only;
            const bool chunked_out = streaming && head.version == 11;
            const bool close_after = !keep || (streaming && !chunked_out);
            std::string& out = w->out;
            out.clear();
            out += head.version == 11 ? "HTTP/1.1 " : "HTTP/1.0 ";
            detail::append_decimal(out, static_cast<std::uint64_t>(resp.status));
            out += ' ';
            out += reason_phrase(resp.status);
            out += "\r\nDate: ";
            out += detail::http_date();
            out += "\r\n";
            for (const auto& [n, v] : resp.headers) {
                out += n;
                out += ": ";
                out += v;
                out += "\r\n";
            }
            if (chunked_out) {
                out += "Transfer-Encoding: chunked\r\n";
            } else if (!resp.streamer && resp.status != 204 && resp.status != 304 && resp.status >= 200) {
                out += "Content-Length: ";
                detail::append_decimal(out, resp.body.size());
                out += "\r\n";
            }
            if (close_after) {
                out += "Connection: close\r\n";
            } else if (head.version == 10) {
                out += "Connection: keep-alive\r\n";
            }
            out += "\r\n";
            c.deadline = after(m_options.io_timeout);
            if (head_only || streaming || resp.body.empty()) {
                co_await s.write_all(out);
            } else {
                const std::string_view parts[] = {out, resp.body};
                co_await s.write_all_gathered(parts);
            }
            if (streaming) {
                stream_writer writer(*this, s, c, m_options.io_timeout, chunked_out);
                co_await resp.streamer(writer);
                if (chunked_out) co_await s.write_all(std::string_view("0\r\n\r\n"));
            }
            c.deadline = 0;
            ++m_requests;
            c.fresh = false;
            w->begin += consumed;
            if (close_after) {
                s.shutdown_write();
                co_return false;
            }
            co_return true;
        }
    }

    /// body_writer for streamed responses: one chunk per write, on the connection's socket.
    class stream_writer final : public body_writer {
    public:
        stream_writer(server& owner, tcp_stream& s, connection& c, std::chrono::milliseconds timeout, bool chunked) noexcept
            : m_server(&owner), m_stream(&s), m_conn(&c), m_timeout(timeout), m_chunked(chunked) {}
        task<void> write(std::string_view data) override {
            if (data.empty()) co_return; // an empty chunk would end the body
            m_conn->deadline = m_server->after(m_timeout);
            if (m_chunked) {
                char size[20];
                const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
                const std::string_view parts[] = {std::string_view(size, static_cast<std::size_t>(n)), data, "\r\n"};
                co_await m_stream->write_all_gathered(parts);
            } else {
                co_await m_stream->write_all(data);
            }
            m_conn->deadline = 0;
        }

    private:
        server* m_server;
        tcp_stream* m_stream;
        connection* m_conn;
        std::chrono::milliseconds m_timeout;
        bool m_chunked;
    };

    router m_router;
    server_options m_options;
    semaphore m_slots;
    event m_all_closed;
    tandem::detail::intrusive_list<connection> m_connections;
    std::vector<std::unique_ptr<workspace>> m_spare;
    join_handle<void>* m_acceptor = nullptr;
    std::size_t m_count = 0;
    std::uint64_t m_requests = 0;
    std::int64_t m_now = 0;    // the sweeper's clock (steady ns)
    std::int64_t m_period = 0; // its period (ns)
    bool m_draining = false;
};

} // namespace tandem::http
