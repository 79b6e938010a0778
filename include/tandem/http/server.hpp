// tandem — a small, strict HTTP/1.1 server: keep-alive, pipelining, chunked request and
// response bodies, timeouts against idle and slow clients, bounded memory, a connection
// limit, graceful shutdown, and reports of what happened (error and access hooks, counters).
//
// Layer: protocols. One coroutine per connection on the calling loop. A request walks
// read_head → read_body → dispatch → write_response. Timeouts cost no timer per request: a
// sweeper looks at every connection's deadline a few times per second and shuts down the
// socket of one that is late (its read then returns end of stream). Which deadline applies is
// decided in one place, server::expect().
#pragma once

#include "tandem/http/message.hpp"
#include "tandem/http/parser.hpp"
#include "tandem/http/router.hpp"
#include "tandem/net.hpp"
#include "tandem/spawn.hpp"
#include "tandem/sync.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"
#include "tandem/detail/intrusive_list.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <netinet/tcp.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <system_error>
#include <utility>
#include <vector>

namespace tandem::http {

/// What the error hook hears: a handler threw (the client got a 500).
struct handler_error {
    std::string_view method;
    std::string_view target;
    std::string_view route; // the matched route's label, "GET /compute"
    std::exception_ptr error;

    /// One line: `tandem http: GET /x?y (route GET /x) threw: what()`.
    std::string describe() const;
};

/// What the access-log hook hears, once per response written.
struct access_record {
    std::string_view method;
    std::string_view target;
    int status = 0;
    std::uint64_t bytes = 0; // body bytes sent
    std::chrono::nanoseconds duration{}; // from the request's first byte to its response written
};

struct server_options {
    /// A keep-alive connection waiting for its next request is closed after this.
    std::chrono::milliseconds idle_timeout{5'000};
    /// From a request's first byte to its complete head (slowloris): 408, then close.
    std::chrono::milliseconds header_timeout{10'000};
    /// No progress reading a body or writing a response for this long: close. Progress is
    /// each read, and each byte the client acknowledges: a slow but steady download lives.
    std::chrono::milliseconds io_timeout{30'000};
    /// Graceful shutdown: requests in flight get this long; then their handlers are
    /// cancelled, their sockets shut, and serve() returns.
    std::chrono::milliseconds drain_timeout{10'000};
    /// Graceful shutdown: a keep-alive connection between requests stays open up to this
    /// long (before drain_timeout starts) for a request its client may already have sent,
    /// which is answered with "Connection: close"; then it closes. Closing it at once fails that
    /// request: a client under steady load always has one on the wire (a rolling reload
    /// under wrk lost ~15 requests per reload). Zero: close at once.
    std::chrono::milliseconds drain_linger{250};
    /// More connections wait in the kernel's accept queue.
    std::size_t max_connections = 10'000;
    /// Request-body memory all connections together may hold (beyond the 16 KiB each reads
    /// into); a body that would pass it gets 503. Each connection's share grows with the bytes
    /// that actually arrived, never with what Content-Length announced.
    std::size_t max_body_memory = std::size_t{256} << 20;
    /// A client that closes or resets its connection while its handler runs cancels the
    /// handler (a queued offload job is withdrawn, a process-pool worker killed). A client
    /// that only half-closes looks the same on the wire, and is cancelled too (as Go and nginx
    /// do), its pipelined requests unanswered: turn this off to serve clients that half-close
    /// after sending (`nc -N`, some scripts), at the price of finishing abandoned work.
    bool cancel_on_disconnect = true;
    http::limits limits{};
    /// A handler threw; the client got a 500. Default (empty): one line on stderr.
    std::function<void(const handler_error&)> on_error;
    /// Each response written. Default (empty): nothing.
    std::function<void(const access_record&)> access_log;
};

class server {
public:
    explicit server(router routes, server_options options = {})
        : m_router(std::move(routes)), m_options(std::move(options)), m_slots(m_options.max_connections) {}
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Accepts and serves connections until shutdown(); then finishes the requests in flight
    /// for up to drain_timeout, cancels what is left, and returns.
    task<void> serve(tcp_listener& listener);

    /// Stops accepting, lets requests in flight finish, closes idle connections; serve()
    /// returns when all are gone. Loop thread only (call it from a signal-handling task).
    void shutdown() noexcept {
        m_draining = true;
        if (m_acceptor) m_acceptor->cancel();
    }

    std::size_t connection_count() const noexcept { return m_connections_open; }
    std::uint64_t requests_served() const noexcept { return m_served; }
    const server_stats& stats() const noexcept { return m_stats; }
    const server_options& options() const noexcept { return m_options; }

private:
    class handler_call;
    class stream_writer;

    /// What a connection is waiting for; the timeout policy (expect()) maps each to a deadline.
    enum class phase : std::uint8_t { idle, head, body, handler, write };

    /// Per-connection state the sweeper and shutdown can see.
    struct connection : tandem::detail::list_hook {
        int fd = -1;
        std::int64_t deadline = 0; // steady ns; 0: none
        std::uint64_t acked = 0;   // bytes the peer acknowledged at the last look (write progress)
        handler_call* running = nullptr;
        phase now = phase::idle;
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
        std::size_t charged = 0; // bytes of data beyond base_size, counted in body_bytes_held
        std::string_view view() const noexcept { return {data.data() + begin, end - begin}; }
        char* at(std::size_t offset) noexcept { return data.data() + begin + offset; }
    };
    static constexpr std::size_t base_size = 16 * 1024;
    /// Gives a connection's workspace back however its coroutine ends.
    struct workspace_lease {
        server* owner;
        std::unique_ptr<workspace> w;
        ~workspace_lease() { owner->give_back(w); }
    };

    /// A request between its stages.
    struct exchange {
        head_scanner scanner;
        request_head head;
        std::size_t head_size = 0;
        std::size_t consumed = 0; // bytes of the buffer this request used (head, framed body)
        std::string_view body;
        std::string_view route; // the matched route's label, once dispatched
        std::int64_t started = 0; // steady ns, only when an access log wants durations
        bool head_method = false;
    };

    /// Where a request ends up when it cannot go on.
    enum class verdict : std::uint8_t { go_on, close };

    // ---- the timeout policy, in one place --------------------------------------------------
    /// Enters `p`: idle waits idle_timeout, a head header_timeout from its first byte, body
    /// reads and response writes io_timeout from their last progress, a handler no deadline.
    void expect(connection& c, phase p) noexcept {
        const bool entering = c.now != p;
        c.now = p;
        switch (p) {
        case phase::idle: c.deadline = after(m_options.idle_timeout); break;
        case phase::head:
            if (entering) c.deadline = after(m_options.header_timeout); // not renewed by progress
            break;
        case phase::body:
        case phase::write: c.deadline = after(m_options.io_timeout); break;
        case phase::handler: c.deadline = 0; break;
        }
    }
    static std::int64_t now_ns() noexcept { return std::chrono::steady_clock::now().time_since_epoch().count(); }
    /// A deadline `d` from now on the sweeper's clock: it reads the clock once per sweep, so
    /// requests read none; a timeout fires up to one sweep period late, never early.
    std::int64_t after(std::chrono::milliseconds d) const noexcept {
        return m_now + m_period + std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    }
    void sweep_one(connection& c, std::int64_t now) noexcept;

    // ---- connections --------------------------------------------------------------------------
    task<void> accept_loop(tcp_listener& listener);
    task<void> sweep();
    task<void> wait_closed();
    task<void> begin_drain();
    void close_idle() noexcept;
    void cancel_remaining() noexcept;
    task<void> handle(tcp_stream s);
    task<void> serve_connection(tcp_stream& s, connection& c);

    // ---- one request ----------------------------------------------------------------------------
    task<bool> serve_request(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w);
    bool head_buffered(workspace& w, exchange& x);
    bool body_buffered(workspace& w, exchange& x);
    task<verdict> read_head(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w, exchange& x);
    task<verdict> read_body(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w, exchange& x);
    task<std::optional<response>> dispatch(tcp_stream& s, connection& c, exchange& x);
    static void check_response(const response& resp);
    void report_failure(const exchange& x, std::exception_ptr failure) noexcept;
    task<bool> write_response(tcp_stream& s, connection& c, workspace& w, exchange& x, response& resp);
    static task<void> linger(tcp_stream& s);
    task<void> reject(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w, int status,
                      std::string_view reason, bool head_method);

    // ---- the buffer -------------------------------------------------------------------------------
    task<std::size_t> read_more(tcp_stream& s, std::unique_ptr<workspace>& w, std::size_t want, request_head* pinned);
    bool make_room(workspace& w, std::size_t want, std::size_t at_most, request_head* pinned);
    std::unique_ptr<workspace> take_workspace();
    void shrink(workspace& w) noexcept;
    void give_back(std::unique_ptr<workspace>& w) noexcept;
    void count_response(int status) noexcept { ++m_stats.responses[static_cast<std::size_t>(std::clamp(status / 100, 0, 5))]; }

    router m_router;
    server_options m_options;
    semaphore m_slots;
    event m_all_closed;
    tandem::detail::intrusive_list<connection> m_connections;
    std::vector<std::unique_ptr<workspace>> m_spare;
    join_handle<void>* m_acceptor = nullptr;
    server_stats m_stats;
    std::size_t m_connections_open = 0;
    std::uint64_t m_served = 0;
    std::int64_t m_now = 0;    // the sweeper's clock (steady ns)
    std::int64_t m_period = 0; // its period (ns)
    bool m_draining = false;
    bool m_linger_over = false; // draining, and idle keep-alive connections were told to go
    bool m_gave_up = false; // the drain ran out: connections are cut, late starters too
};

// ============================================================================================
// Implementation
// ============================================================================================

inline std::string handler_error::describe() const {
    std::string line = "tandem http: ";
    line.append(method).append(" ").append(target).append(" (route ").append(route).append(") threw: ");
    try {
        if (error) std::rethrow_exception(error);
        line += "nothing";
    } catch (const std::exception& e) {
        line += e.what();
    } catch (...) {
        line += "an exception not derived from std::exception";
    }
    return line;
}

/// Runs one handler as a task of its own under the connection: the blocking watchdog names it
/// by its route ("GET /compute") and registration site, shutdown can cancel it, and while it
/// runs a peer_watch cancels it if the client goes away.
class server::handler_call final : public tandem::detail::task_context, tandem::detail::cancel_slot {
public:
    handler_call(task<response> t, const route& r, tcp_stream& s, connection& c, bool watch) noexcept
        : m_task(std::move(t)), m_route(&r), m_stream(&s), m_conn(&c), m_watch_peer(watch) {
        on_cancel = &forward_cancel;
        // Its own identity for diagnostics, with the same lifetime rule as a spawned task's:
        // retire_root() before it dies.
        mark_root();
    }
    handler_call(const handler_call&) = delete;
    handler_call& operator=(const handler_call&) = delete;
    ~handler_call() {
        m_watch.disarm();
        m_conn->running = nullptr;
        if (m_loop) tandem::detail::hooks(*m_loop).retire_root(*this);
    }

    std::string_view name() const noexcept override { return m_route->label; }
    source_location where() const noexcept override { return m_route->where; }

    /// Cancels the handler (shutdown's drain ran out).
    void cancel() noexcept { request_cancel(); }
    bool client_gone() const noexcept { return m_client_gone; }

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        m_parent = h;
        m_parent_context = tandem::detail::context_of(h);
        if (m_parent_context && m_parent_context->cancel_requested()) {
            m_parent_cancelled = true;
            return false;
        }
        set_parent(m_parent_context);
        if (m_parent_context) m_parent_context->arm(this);
        m_loop = &this_loop();
        m_conn->running = this;
        m_starting = true;
        m_task.handle().promise().set_context(this);
        tandem::detail::hooks(*m_loop).set_current_task(this); // a handler that blocks right away is named too
        m_task.handle().resume();
        tandem::detail::hooks(*m_loop).set_current_task(m_parent_context);
        m_starting = false;
        if (m_done) {
            if (m_parent_context) m_parent_context->disarm();
            return false;
        }
        if (m_watch_peer && m_watch.arm(*m_stream, &on_peer_gone, this)) on_peer_gone(this);
        return true;
    }
    /// The handler's response; nullopt if the client left. Rethrows what the handler threw.
    std::optional<response> await_resume() {
        if (m_parent_cancelled) throw cancelled{};
        if (m_client_gone) return std::nullopt;
        return m_task.handle().promise().result();
    }

private:
    std::coroutine_handle<> finish() noexcept override {
        m_done = true;
        m_watch.disarm();
        if (m_starting) return std::noop_coroutine(); // await_suspend sees m_done
        if (m_parent_context) m_parent_context->disarm();
        tandem::detail::hooks(*m_loop).set_current_task(m_parent_context);
        return m_parent;
    }
    static void forward_cancel(tandem::detail::cancel_slot* slot) noexcept {
        auto* self = static_cast<handler_call*>(slot);
        self->m_parent_cancelled = true;
        self->request_cancel();
    }
    static void on_peer_gone(void* arg) noexcept {
        auto* self = static_cast<handler_call*>(arg);
        self->m_client_gone = true;
        self->request_cancel();
    }

    task<response> m_task;
    const route* m_route;
    tcp_stream* m_stream;
    connection* m_conn;
    tandem::detail::peer_watch m_watch;
    event_loop* m_loop = nullptr;
    std::coroutine_handle<> m_parent;
    task_context* m_parent_context = nullptr;
    bool m_watch_peer;
    bool m_starting = false;
    bool m_done = false;
    bool m_parent_cancelled = false;
    bool m_client_gone = false;
};

/// body_writer for streamed responses: one chunk per write, on the connection's socket.
class server::stream_writer final : public body_writer {
public:
    stream_writer(server& owner, tcp_stream& s, connection& c, bool chunked) noexcept
        : m_server(&owner), m_stream(&s), m_conn(&c), m_chunked(chunked) {}
    task<void> write(std::string_view data) override {
        if (data.empty()) co_return; // an empty chunk would end the body
        m_server->expect(*m_conn, phase::write);
        m_broken = true; // until the write is done: a throw here is the socket's
        if (m_chunked) {
            char size[20];
            const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
            const std::string_view parts[] = {std::string_view(size, static_cast<std::size_t>(n)), data, "\r\n"};
            co_await m_stream->write_all_gathered(parts);
        } else {
            co_await m_stream->write_all(data);
        }
        m_broken = false;
        m_server->m_stats.bytes_sent += data.size();
        m_bytes += data.size();
    }
    std::uint64_t bytes() const noexcept { return m_bytes; }
    /// True when a write failed (or was cancelled): the connection, not the handler, broke.
    bool broken() const noexcept { return m_broken; }

private:
    server* m_server;
    tcp_stream* m_stream;
    connection* m_conn;
    std::uint64_t m_bytes = 0;
    bool m_chunked;
    bool m_broken = false;
};

inline task<void> server::serve(tcp_listener& listener) {
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
    if (m_connections_open != 0) {
        bool drained = true;
        try {
            co_await with_timeout(m_options.drain_timeout, wait_closed());
        } catch (const timed_out&) {
            drained = false;
        }
        if (!drained) {
            cancel_remaining();
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

inline task<void> server::accept_loop(tcp_listener& listener) {
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
        // Counted now, not when the task first runs (the loop's next turn): a shutdown in
        // between must wait for it, or serve() returns with the connection still to run.
        ++m_connections_open;
        ++m_stats.connections_accepted;
        m_stats.connections_open = m_connections_open;
        spawn(handle(std::move(s)), "http connection").detach();
    }
}

inline task<void> server::sweep() {
    const auto shortest = std::min({m_options.idle_timeout, m_options.header_timeout, m_options.io_timeout});
    const auto period = std::clamp<std::chrono::milliseconds>(shortest / 4, std::chrono::milliseconds(10),
                                                               std::chrono::milliseconds(1000));
    m_period = std::chrono::duration_cast<std::chrono::nanoseconds>(period).count();
    for (;;) {
        co_await sleep_for(period);
        const std::int64_t now = m_now = now_ns();
        m_connections.for_each([&](connection& c) { sweep_one(c, now); });
    }
}

namespace detail {
/// Bytes the peer acknowledged on a TCP socket (tcp_info's tcpi_bytes_acked, which glibc's
/// struct predates); nullopt where the kernel does not say.
inline std::optional<std::uint64_t> bytes_acked(int fd) noexcept {
    struct {
        ::tcp_info base;
        std::uint64_t pacing_rate, max_pacing_rate, bytes_acked;
    } info{};
    socklen_t len = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || len < sizeof info) return std::nullopt;
    return info.bytes_acked;
}
} // namespace detail

inline void server::sweep_one(connection& c, std::int64_t now) noexcept {
    if (c.deadline == 0 || now < c.deadline) return;
    if (c.now == phase::write) { // a slow reader that still reads is making progress
        if (const auto acked = detail::bytes_acked(c.fd); acked && *acked != c.acked) {
            c.acked = *acked;
            c.deadline = now + std::chrono::duration_cast<std::chrono::nanoseconds>(m_options.io_timeout).count();
            return;
        }
    }
    c.deadline = 0;
    c.timed_out = true;
    ++m_stats.timeouts;
    // Shutting the read side wakes the pending read with end of stream; a partial head still
    // gets its 408. A stuck writer needs both sides.
    ::shutdown(c.fd, c.now == phase::head ? SHUT_RD : SHUT_RDWR);
}

inline task<void> server::wait_closed() {
    while (m_connections_open != 0) {
        m_all_closed.reset();
        co_await m_all_closed.wait();
    }
}

/// Stops new requests on kept-alive connections: one that comes within drain_linger is
/// answered with Connection: close (serve_connection then returns); the rest close.
inline task<void> server::begin_drain() {
    m_draining = true;
    // Any kept-alive connection may be between requests now or when its response is out.
    if (m_options.drain_linger > std::chrono::milliseconds::zero() && m_connections_open != 0) {
        try {
            co_await with_timeout(m_options.drain_linger, wait_closed());
        } catch (const timed_out&) {
        }
    }
    close_idle();
}

inline void server::close_idle() noexcept {
    m_linger_over = true;
    m_connections.for_each([](connection& c) {
        if (c.now != phase::idle || c.fresh) return;
        // A request already in the socket (its task not yet resumed) is served, with
        // Connection: close; shutting the read side under it would drop it.
        char byte;
        if (::recv(c.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0) return;
        ::shutdown(c.fd, SHUT_RD); // between requests: just go
    });
}

inline void server::cancel_remaining() noexcept {
    m_gave_up = true;
    m_connections.for_each([](connection& c) {
        if (c.running) c.running->cancel();
        ::shutdown(c.fd, SHUT_RDWR);
    });
}

inline task<void> server::handle(tcp_stream s) {
    connection c;
    c.fd = s.native_handle();
    m_connections.push_back(c);
    try {
        if (!m_gave_up) co_await serve_connection(s, c); // accepted just before the drain ran out: close
    } catch (...) {
        // A broken connection (reset, EPIPE, a timeout) ends only itself.
    }
    c.unlink();
    s.close();
    --m_connections_open;
    m_stats.connections_open = m_connections_open;
    m_slots.release();
    if (m_connections_open == 0) m_all_closed.set();
}

/// The connection's life: wait for a request holding nothing but this small frame (an idle
/// keep-alive connection costs a few hundred bytes), then serve it in a workspace that exists
/// only while requests are buffered.
inline task<void> server::serve_connection(tcp_stream& s, connection& c) {
    workspace_lease lease{this, take_workspace()};
    std::unique_ptr<workspace>& w = lease.w;
    for (;;) {
        if (w && w->begin == w->end) {
            // Read before waiting for readiness: epoll is edge-triggered, and a read that
            // filled the buffer, or a FIN that came with the last bytes, brings no new edge.
            w->begin = w->end = 0;
            if (const auto n = s.try_read_some(std::span<char>(w->data.data(), w->data.size()))) {
                if (*n == 0) co_return;
                w->end = *n;
                m_stats.bytes_received += *n;
            }
        }
        if (!w || w->begin == w->end) {
            give_back(w); // EAGAIN: wait holding nothing
            // Draining: a connection whose last response kept it alive goes idle like the
            // others, so a request its client already sent is still answered within
            // drain_linger; once that is over, it just goes.
            if (m_linger_over && !c.fresh) co_return;
            expect(c, phase::idle);
            co_await s.wait_readable();
            w = take_workspace();
            continue;
        }
        if (!co_await serve_request(s, c, w)) co_return;
    }
}

/// Reads, handles and answers one request (bytes are already buffered in w). Returns false
/// when the connection must close. Most requests arrive whole: head_buffered/body_buffered
/// take them without the I/O stages (and without their coroutine frames).
inline task<bool> server::serve_request(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w) {
    exchange x;
    if (m_options.access_log) x.started = now_ns();
    if (!head_buffered(*w, x) && co_await read_head(s, c, w, x) == verdict::close) co_return false;
    ++m_stats.requests;
    if (!body_buffered(*w, x) && co_await read_body(s, c, w, x) == verdict::close) co_return false;
    std::optional<response> resp = co_await dispatch(s, c, x);
    if (!resp) co_return false; // the client left, or shutdown cancelled the handler
    const bool keep = co_await write_response(s, c, *w, x, *resp);
    c.fresh = false;
    w->begin += x.consumed;
    if (w->charged != 0) shrink(*w);
    co_return keep;
}

/// The head, if it is all buffered and valid; false leaves the rest (reading, refusing) to
/// read_head, with the scanner where it stopped.
inline bool server::head_buffered(workspace& w, exchange& x) {
    const parse_result scanned = x.scanner.scan(w.view(), m_options.limits);
    if (scanned.state != parse_state::complete) return false;
    x.head_size = scanned.head_size;
    const parse_result parsed = parse_request_head(w.view().substr(0, x.head_size), x.head, w.headers, m_options.limits);
    x.head_method = x.head.method == "HEAD";
    return parsed.state == parse_state::complete; // else read_head parses again and refuses
}

/// The body, if it needs no reading (none, or a Content-Length body already buffered).
inline bool server::body_buffered(workspace& w, exchange& x) {
    x.consumed = x.head_size;
    if (x.head.framing == body_framing::none) return true;
    if (x.head.framing != body_framing::content_length) return false;
    const std::size_t need = x.head_size + static_cast<std::size_t>(x.head.content_length);
    if (w.end - w.begin < need) return false;
    x.consumed = need;
    x.body = w.view().substr(x.head_size, static_cast<std::size_t>(x.head.content_length));
    return true;
}

inline task<server::verdict> server::read_head(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w,
                                                exchange& x) {
    const limits& lim = m_options.limits;
    head_scanner& scanner = x.scanner;
    if (x.head_size == 0) {
        for (;;) {
            const parse_result scanned = scanner.scan(w->view(), lim);
            if (scanned.state == parse_state::complete) {
                x.head_size = scanned.head_size;
                break;
            }
            if (scanned.state == parse_state::error) {
                co_await reject(s, c, w, scanned.status, scanned.reason, scanner.head_method());
                co_return verdict::close;
            }
            expect(c, phase::head);
            if (co_await read_more(s, w, 4096, nullptr) == 0) {
                if (c.timed_out && c.now == phase::head)
                    co_await reject(s, c, w, 408, "request head timed out", scanner.head_method());
                co_return verdict::close;
            }
        }
    }
    // Parsed once, when complete; read_more keeps the views valid if the buffer moves.
    const parse_result parsed = parse_request_head(w->view().substr(0, x.head_size), x.head, w->headers, lim);
    x.head_method = x.head.method == "HEAD";
    if (parsed.state == parse_state::error) {
        co_await reject(s, c, w, parsed.status, parsed.reason, scanner.head_method());
        co_return verdict::close;
    }
    co_return verdict::go_on;
}

inline task<server::verdict> server::read_body(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w,
                                                exchange& x) {
    request_head& head = x.head;
    x.consumed = x.head_size;
    if (head.framing == body_framing::none) co_return verdict::go_on;
    if (head.expect_continue && w->end - w->begin == x.head_size)
        co_await s.write_all(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"));
    if (head.framing == body_framing::content_length) {
        const std::size_t need = x.head_size + static_cast<std::size_t>(head.content_length);
        while (w->end - w->begin < need) {
            expect(c, phase::body);
            // Room in steps that follow what arrived (at most doubling), never what was announced.
            const std::size_t left = need - (w->end - w->begin);
            if (!make_room(*w, std::min(left, base_size), left, &head)) {
                co_await reject(s, c, w, 503, "server busy: request-body memory is exhausted", x.head_method);
                co_return verdict::close;
            }
            if (co_await read_more(s, w, 0, &head) == 0) co_return verdict::close;
        }
        x.consumed = need;
        x.body = w->view().substr(x.head_size, static_cast<std::size_t>(head.content_length));
        co_return verdict::go_on;
    }
    // Chunked: decoded in place (picohttpparser's way), so the body ends up contiguous behind
    // the head as with Content-Length: [head][decoded body][raw bytes not yet decoded].
    chunked_decoder decoder(m_options.limits.max_body);
    std::size_t body_end = x.head_size; // offsets from w->begin
    std::size_t raw = x.head_size;
    for (;;) {
        const auto r = decoder.decode(w->view().substr(raw), [&](std::string_view d) {
            std::memmove(w->at(body_end), d.data(), d.size());
            body_end += d.size();
        });
        raw += r.consumed;
        if (r.state == parse_state::error) {
            co_await reject(s, c, w, r.status, r.reason, x.head_method);
            co_return verdict::close;
        }
        if (r.state == parse_state::complete) break;
        // Drop the framing already decoded, so tiny chunks with long extensions cannot grow
        // the buffer beyond the body plus one read.
        if (raw > body_end) {
            std::memmove(w->at(body_end), w->at(raw), w->end - w->begin - raw);
            w->end -= raw - body_end;
            raw = body_end;
        }
        expect(c, phase::body);
        if (!make_room(*w, 4096, SIZE_MAX / 4, &head)) {
            co_await reject(s, c, w, 503, "server busy: request-body memory is exhausted", x.head_method);
            co_return verdict::close;
        }
        if (co_await read_more(s, w, 0, &head) == 0) co_return verdict::close;
    }
    x.consumed = raw;
    x.body = w->view().substr(x.head_size, body_end - x.head_size);
    co_return verdict::go_on;
}

inline task<std::optional<response>> server::dispatch(tcp_stream& s, connection& c, exchange& x) {
    route_params params;
    route_match match = m_router.find(x.head.method, x.head.path, params);
    if (!match.found) {
        response r(match.status, std::string(reason_phrase(match.status)) + "\n");
        if (match.status == 405) r.set_header("Allow", std::move(match.allow));
        co_return r;
    }
    x.route = match.found->label;
    request req(x.head, x.body, params, m_stats);
    expect(c, phase::handler);
    std::optional<response> resp;
    std::exception_ptr failure;
    try {
        handler_call call(match.found->fn(req), *match.found, s, c, m_options.cancel_on_disconnect);
        resp = co_await call;
        if (!resp) {
            ++m_stats.clients_gone;
            co_return std::nullopt;
        }
        check_response(*resp);
    } catch (const cancelled&) {
        co_return std::nullopt; // shutdown ran out of patience, or the connection was cancelled
    } catch (...) {
        failure = std::current_exception();
    }
    if (failure) {
        report_failure(x, failure);
        resp = response(500, "internal server error\n");
    }
    co_return resp;
}

inline void server::report_failure(const exchange& x, std::exception_ptr failure) noexcept {
    ++m_stats.handler_errors;
    const handler_error report{x.head.method, x.head.target, x.route, failure};
    try {
        if (m_options.on_error) {
            m_options.on_error(report);
        } else {
            std::fprintf(stderr, "%s\n", report.describe().c_str());
        }
    } catch (...) {
    }
}

/// What a handler returned must be sayable: a final status, headers that cannot split the
/// response (`headers` is public, so set_header's check may have been bypassed). Throws
/// std::invalid_argument, which dispatch reports like any handler error and answers 500.
inline void server::check_response(const response& resp) {
    if (resp.status < 200 || resp.status > 599)
        throw std::invalid_argument("tandem::http: a handler answered status " + std::to_string(resp.status) +
                                    " (a final status is 200-599)");
    for (const auto& [n, v] : resp.headers)
        if (!detail::valid_field(n, v))
            throw std::invalid_argument("tandem::http: a handler's header '" + n + "' would split the response");
}

inline task<bool> server::write_response(tcp_stream& s, connection& c, workspace& w, exchange& x, response& resp) {
    const request_head& head = x.head;
    const bool bodiless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    const bool no_body = x.head_method || bodiless; // HEAD: the head GET would send, no body
    const bool streaming = static_cast<bool>(resp.streamer) && !no_body;
    const bool chunked_out = streaming && head.version == 11;
    bool handler_closes = false;
    for (const auto& [n, v] : resp.headers)
        if (iequals(n, "connection"))
            detail::for_each_list_element(v, [&](std::string_view option) { handler_closes |= iequals(option, "close"); });
    const bool close_after = !head.keep_alive || m_draining || (streaming && !chunked_out) || handler_closes;
    head_framing framing;
    framing.chunked = chunked_out;
    if (!resp.streamer && !bodiless) framing.content_length = resp.body.size();
    framing.close = close_after;
    w.out.clear();
    append_response_head(w.out, head.version, resp.status, resp.headers, framing);
    expect(c, phase::write);
    c.acked = 0;
    std::uint64_t body_bytes = 0;
    if (no_body || streaming || resp.body.empty()) {
        co_await s.write_all(w.out);
    } else {
        const std::string_view parts[] = {w.out, resp.body};
        co_await s.write_all_gathered(parts);
        body_bytes = resp.body.size();
    }
    m_stats.bytes_sent += w.out.size() + body_bytes;
    if (streaming) {
        stream_writer writer(*this, s, c, chunked_out);
        std::exception_ptr failure;
        try {
            co_await resp.streamer(writer);
        } catch (...) {
            if (writer.broken()) throw; // the client's socket failed, not the handler
            failure = std::current_exception();
        }
        if (failure) {
            // The head is gone; all that is left to say is "cut short": close without the
            // last chunk (or before the announced end), and tell the error hook.
            report_failure(x, failure);
            co_await linger(s);
            co_return false;
        }
        if (chunked_out) co_await s.write_all(std::string_view("0\r\n\r\n"));
        body_bytes = writer.bytes();
    }
    ++m_served;
    count_response(resp.status);
    if (m_options.access_log) {
        try {
            m_options.access_log(access_record{head.method, head.target, resp.status, body_bytes,
                                               std::chrono::nanoseconds(now_ns() - x.started)});
        } catch (...) {
        }
    }
    if (close_after) {
        co_await linger(s);
        co_return false;
    }
    co_return true;
}

/// Answers a request that cannot be served (status >= 400), then closes with a lingering
/// close: stop sending, then read (and drop) what the client still sends for a moment, so our
/// close does not turn into a reset that destroys the answer.
inline task<void> server::reject(tcp_stream& s, connection& c, std::unique_ptr<workspace>& w, int status,
                                 std::string_view reason, bool head_method) {
    give_back(w);
    ++m_stats.rejected;
    count_response(status);
    std::string body(reason);
    body += '\n';
    response r(status, std::move(body));
    if (status == 503) r.set_header("Retry-After", "1");
    std::string out;
    append_response_head(out, 11, status, r.headers, head_framing{r.body.size(), false, true});
    if (!head_method) out += r.body;
    expect(c, phase::write);
    co_await s.write_all(out);
    m_stats.bytes_sent += out.size();
    co_await linger(s);
}

/// Closes after a last response without destroying it: stop sending (FIN after the data),
/// then read and drop what the client still sends (its pipelined requests) until it closes,
/// for at most a second and a MiB. Closing a socket with unread bytes sends a reset, which
/// discards the response the kernel has not sent yet.
inline task<void> server::linger(tcp_stream& s) {
    s.shutdown_write();
    try {
        co_await with_timeout(std::chrono::seconds(1), [](tcp_stream& st) -> task<void> {
            char sink[16384];
            for (std::size_t total = 0; total < (std::size_t{1} << 20);) {
                const std::size_t n = co_await st.read_some(std::span<char>(sink));
                if (n == 0) break;
                total += n;
            }
        }(s));
    } catch (...) {
    }
}

namespace detail {
/// Moves the views of a parsed head that point into [from, from + size) by `delta` bytes:
/// the buffer under them moved (compacted or reallocated), their contents did not change.
inline void relocate(request_head& head, std::uintptr_t from, std::size_t size, std::ptrdiff_t delta,
                     std::span<header> storage) noexcept {
    auto fix = [&](std::string_view& v) {
        const auto p = reinterpret_cast<std::uintptr_t>(v.data());
        if (v.data() == nullptr || p < from || p > from + size) return; // a literal ("/"), not the buffer
        v = std::string_view(reinterpret_cast<const char*>(p + static_cast<std::uintptr_t>(delta)), v.size());
    };
    fix(head.method);
    fix(head.target);
    fix(head.path);
    fix(head.query);
    for (header& h : storage.first(head.headers.size())) {
        fix(h.name);
        fix(h.value);
    }
}
} // namespace detail

/// Makes room for `want` more bytes after w.end: compacts, or grows, doubling but to no more
/// than `at_most` bytes free (charged against max_body_memory). `pinned`, if any, is a parsed
/// head whose views follow the bytes. False when the server-wide body memory would be passed.
inline bool server::make_room(workspace& w, std::size_t want, std::size_t at_most, request_head* pinned) {
    if (w.data.size() - w.end >= want) return true;
    const auto old_base = reinterpret_cast<std::uintptr_t>(w.data.data());
    const std::size_t old_size = w.data.size();
    if (w.begin > 0 && w.end - w.begin + want <= w.data.size()) {
        std::memmove(w.data.data(), w.data.data() + w.begin, w.end - w.begin);
        if (pinned) detail::relocate(*pinned, old_base, old_size, -static_cast<std::ptrdiff_t>(w.begin), w.headers);
        w.end -= w.begin;
        w.begin = 0;
        return true;
    }
    const std::size_t new_size = std::max(w.end + want, std::min(w.data.size() * 2, w.end + at_most));
    const std::size_t new_charge = new_size > base_size ? new_size - base_size : 0;
    if (new_charge > w.charged &&
        m_stats.body_bytes_held + (new_charge - w.charged) > m_options.max_body_memory)
        return false;
    w.data.resize(new_size);
    m_stats.body_bytes_held += new_charge - w.charged;
    w.charged = new_charge;
    const auto new_base = reinterpret_cast<std::uintptr_t>(w.data.data());
    if (pinned && new_base != old_base)
        detail::relocate(*pinned, old_base, old_size, static_cast<std::ptrdiff_t>(new_base - old_base), w.headers);
    return true;
}

/// Reads more bytes into w, after making room for `want` (0: the caller made room). Returns 0
/// at end of stream (or when no memory is left for the bytes).
inline task<std::size_t> server::read_more(tcp_stream& s, std::unique_ptr<workspace>& w, std::size_t want,
                                           request_head* pinned) {
    if (want > 0 && !make_room(*w, want, want, pinned)) co_return 0;
    if (w->data.size() == w->end) co_return 0;
    for (;;) {
        const auto n = s.try_read_some(std::span<char>(w->data.data() + w->end, w->data.size() - w->end));
        if (n) {
            w->end += *n;
            m_stats.bytes_received += *n;
            co_return *n;
        }
        co_await s.wait_readable(); // EAGAIN just now: the next edge is ours
    }
}

/// After a large body: back to the base size if what is left fits, so a client that follows
/// its upload with pipelined (or half-sent) requests does not keep the body's memory charged.
inline void server::shrink(workspace& w) noexcept {
    const std::size_t left = w.end - w.begin;
    if (left > base_size) return;
    std::vector<char> fresh;
    try {
        fresh.resize(base_size);
    } catch (...) {
        return; // keep the big one
    }
    std::memcpy(fresh.data(), w.data.data() + w.begin, left);
    w.data.swap(fresh);
    w.begin = 0;
    w.end = left;
    m_stats.body_bytes_held -= w.charged;
    w.charged = 0;
}

inline std::unique_ptr<server::workspace> server::take_workspace() {
    if (!m_spare.empty()) {
        auto w = std::move(m_spare.back());
        m_spare.pop_back();
        return w;
    }
    auto w = std::make_unique<workspace>();
    w->data.resize(base_size);
    w->headers.resize(m_options.limits.max_headers);
    return w;
}

inline void server::give_back(std::unique_ptr<workspace>& w) noexcept {
    if (!w) return;
    m_stats.body_bytes_held -= w->charged;
    w->charged = 0;
    w->begin = w->end = 0;
    if (w->data.size() == base_size && m_spare.size() < 256) {
        m_spare.push_back(std::move(w));
    }
    w.reset();
}

} // namespace tandem::http
