// tandem — a small, strict HTTP/1.1 server: keep-alive, pipelining, chunked request and
// response bodies, timeouts against idle and slow clients, bounded memory, a connection
// limit, graceful shutdown, and reports of what happened (error and access hooks, counters).
//
// Layer: protocols. One coroutine per connection on the calling loop. A request walks
// read_head → read_body → dispatch → response, in one frame when
// the request is buffered and the handler does not suspend (serve_request). Timeouts cost no timer per request: a
// sweeper looks at every connection's deadline a few times per second and shuts down the
// socket of one that is late (its read then returns end of stream). Which deadline applies is
// decided in one place, server::expect().
#pragma once

#include "tandem/fwd.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/intrusive_list.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/http/message.hpp"
#include "tandem/http/parser.hpp"
#include "tandem/http/router.hpp"
#include "tandem/http/server_options.hpp"
#include "tandem/net.hpp"
#include "tandem/spawn.hpp"
#include "tandem/sync.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <netinet/tcp.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace tandem::http {

/// The server. A class template's one instantiation behind an alias, so that a translation
/// unit that serves nothing analyses none of its bodies (README, "Headers").
// (declared, with the alias tandem::http::server, in fwd.hpp)

template <class S>
class basic_server {
    /// tcp_stream, spelt so that it depends on S: g++ then leaves every expression on the
    /// connection's stream in the bodies below unanalysed until basic_server<> is instantiated
    /// (a non-dependent co_await is checked at the template's definition, in every includer).
    using stream_type = std::conditional_t<sizeof(S*) != 0, tcp_stream, void>;
    /// The same for clang, which compiles the std members that non-dependent code names where
    /// the template is defined (detail/dependent.hpp): members and locals spelt through S.
    template <class T>
    using deferred = tandem::detail::dependent_t<T, S>;

public:
    explicit basic_server(deferred<router> routes, server_options options = {})
        : m_router(std::move(routes)), m_options(std::move(options)), m_slots(m_options.max_connections) {}
    basic_server(const basic_server&) = delete;
    basic_server& operator=(const basic_server&) = delete;

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
        bool drained = false; // the last read was short: the socket was empty (see try_read)
        std::int64_t body_started = 0;  // steady ns: the body's first read (min_body_rate)
        std::uint64_t body_received = 0; // bytes read since
        // Loop stalls already forgiven (forgive()): the deadline since it was set, the body clock
        // since the body began.
        std::int64_t forgiven = 0;
        std::int64_t body_forgiven = 0;
        // No request answered yet: its client opened it to send one, which may be on the
        // wire. Draining must not close it unanswered (a rolling reload would fail that
        // request); it closes after its first response, or at its idle deadline.
        bool fresh = true;
    };

    /// A request between its stages. It lives in the workspace, beside the bytes its views
    /// point into, rather than in serve_request's frame: that frame then stays small enough
    /// for the allocator's per-thread cache (about 1 KiB), and one is allocated per request.
    /// Trivially destructible, so a workspace given back early (reject) leaves nothing to run.
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
    static_assert(std::is_trivially_destructible_v<exchange>);

    /// The buffer and header storage (and the request) a connection needs only while a request is in it;
    /// idle connections give theirs back, so 10k idle clients cost their frames, not 16 KiB each.
    struct workspace {
        deferred<std::vector<char>> data;
        deferred<std::vector<header>> headers;
        deferred<std::string> out; // the response head being written
        exchange x;      // the request in it
        deferred<std::optional<response>> resp; // its answer, from dispatch until it is written
        std::size_t begin = 0;
        std::size_t end = 0;
        std::size_t charged = 0; // bytes of data beyond base_size, counted in body_bytes_held
        std::string_view view() const noexcept { return {data.data() + begin, end - begin}; }
        char* at(std::size_t offset) noexcept { return data.data() + begin + offset; }
    };
    static constexpr std::size_t base_size = 16 * 1024;
    /// Gives a connection's workspace back however its coroutine ends.
    struct workspace_lease {
        basic_server* owner;
        std::unique_ptr<workspace> w;
        ~workspace_lease() { owner->give_back(w); }
    };

    /// Where a request ends up when it cannot go on.
    enum class verdict : std::uint8_t { go_on, close };

    // ---- the timeout policy, in one place --------------------------------------------------
    /// Enters `p`: idle waits idle_timeout, a head header_timeout from its first byte, body
    /// reads and response writes io_timeout from their last progress (and a body no later
    /// than min_body_rate allows for the bytes it brought), a handler no deadline.
    void expect(connection& c, phase p) noexcept {
        const bool entering = c.now != p;
        c.now = p;
        if (entering || p != phase::head) c.forgiven = 0; // a deadline set now, from this clock
        switch (p) {
        case phase::idle: c.deadline = after(m_options.idle_timeout); break;
        case phase::head:
            if (entering) c.deadline = after(m_options.header_timeout); // not renewed by progress
            break;
        case phase::body:
            if (entering) {
                c.body_started = m_now;
                c.body_received = 0;
                c.body_forgiven = 0;
            }
            c.deadline = std::min(after(m_options.io_timeout), body_due(c));
            break;
        case phase::write: c.deadline = after(m_options.io_timeout); break;
        case phase::handler: c.deadline = 0; break;
        }
    }
    static std::int64_t now_ns() noexcept { return std::chrono::steady_clock::now().time_since_epoch().count(); }
    /// A deadline `d` from now on the sweeper's clock: it reads the clock once per sweep, so
    /// requests read none; a timeout fires up to one sweep period late, never early.
    std::int64_t after(std::chrono::milliseconds d) const noexcept { return later(m_now + m_period, ns(d)); }
    /// d in ns, saturated: milliseconds::max() means never, and its ns would wrap into the past.
    static std::int64_t ns(std::chrono::milliseconds d) noexcept {
        constexpr std::int64_t most = INT64_MAX / 1'000'000;
        return d.count() <= 0 ? 0 : d.count() >= most ? INT64_MAX : d.count() * 1'000'000;
    }
    /// t + d (d >= 0), saturated at INT64_MAX (never).
    static std::int64_t later(std::int64_t t, std::int64_t d) noexcept { return d > INT64_MAX - t ? INT64_MAX : t + d; }
    /// When a body that brought c.body_received bytes falls below min_body_rate.
    std::int64_t body_due(const connection& c) const noexcept {
        if (m_options.min_body_rate == 0) return INT64_MAX;
        const double allowed = static_cast<double>(c.body_received) / static_cast<double>(m_options.min_body_rate) * 1e9;
        const double due = static_cast<double>(c.body_started + m_period) + allowed +
                           static_cast<double>(ns(m_options.body_rate_grace));
        return due >= 9e18 ? INT64_MAX : static_cast<std::int64_t>(due);
    }
    void sweep_one(connection& c, std::int64_t now) noexcept;
    /// Moves c's clocks up to `stalled` ns later: the loop could not serve it for that long.
    /// A clock is moved by the longest stall it lived through, not by their sum: a peer needs
    /// one stall forgiven (its deadline set from the stale clock, or its bytes unread until the
    /// loop came back), and a loop merely busy (every sweep late, no handler blocking it) would
    /// otherwise stretch every timeout by (period + lateness) / period, without a bound.
    static void forgive(connection& c, std::int64_t stalled) noexcept {
        if (c.deadline != 0 && stalled > c.forgiven) {
            const std::int64_t more = stalled - c.forgiven;
            c.forgiven = stalled;
            c.deadline = later(c.deadline, more);
        }
        if (c.now == phase::body && stalled > c.body_forgiven) {
            c.body_started += stalled - c.body_forgiven;
            c.body_forgiven = stalled;
        }
    }

    // ---- connections --------------------------------------------------------------------------
    task<void> accept_loop(tcp_listener& listener);
    task<void> sweep();
    task<void> wait_closed();
    task<void> begin_drain();
    void close_idle() noexcept;
    void cancel_remaining() noexcept;
    task<void> handle(stream_type s);
    task<void> serve_connection(stream_type& s, connection& c);

    // ---- one request ----------------------------------------------------------------------------
    task<bool> serve_request(stream_type& s, connection& c, std::unique_ptr<workspace>& w);
    bool head_buffered(workspace& w, exchange& x);
    bool body_buffered(workspace& w, exchange& x);
    task<verdict> read_head(stream_type& s, connection& c, std::unique_ptr<workspace>& w, exchange& x);
    task<verdict> read_body(stream_type& s, connection& c, std::unique_ptr<workspace>& w, exchange& x);
    task<verdict> read_more_body(stream_type& s, connection& c, std::unique_ptr<workspace>& w, exchange& x,
                                 std::size_t want, std::size_t at_most);
    const route* find_route(exchange& x, deferred<route_params>& params, deferred<std::optional<response>>& resp);
    static void check_response(const response& resp);
    void report_failure(const exchange& x, std::exception_ptr failure) noexcept;
    /// How a response goes out (plan_response decides it).
    struct response_plan {
        bool send_body = false; // a body in memory, sent with the head in one gathered write
        bool streaming = false; // a body from resp.streamer, after the head
        bool chunked = false;   // ... in chunks (HTTP/1.1)
        bool close = false;     // the connection closes after this response
        bool body_copied = false; // the body is in w.out, behind the head (copied_body)
    };
    /// Bodies up to this size are copied behind the head and sent with one send(): cheaper
    /// than a gathered write's frame, and the head buffer keeps its capacity across requests.
    static constexpr std::size_t copied_body = 2048;
    static task<void> write_gathered(stream_type& s, std::string_view head, std::string_view body);
    response_plan plan_response(connection& c, workspace& w, const exchange& x, const deferred<response>& resp);
    task<std::optional<std::uint64_t>> write_streamed(stream_type& s, connection& c, const exchange& x,
                                                      response& resp, bool chunked);
    void finish_response(const exchange& x, int status, std::uint64_t body_bytes) noexcept;
    void log_access(std::string_view method, std::string_view target, int status, std::uint64_t body_bytes,
                    std::int64_t started) noexcept;
    static task<void> linger(stream_type& s);
    task<void> reject(stream_type& s, connection& c, std::unique_ptr<workspace>& w, int status,
                      std::string_view reason, bool head_method);

    // ---- the buffer -------------------------------------------------------------------------------
    task<std::size_t> read_more(stream_type& s, connection& c, std::unique_ptr<workspace>& w, std::size_t want,
                                request_head* pinned);
    static std::optional<std::size_t> try_read(stream_type& s, connection& c, std::span<char> into);
    bool make_room(workspace& w, std::size_t want, std::size_t at_most, request_head* pinned);
    std::unique_ptr<workspace> take_workspace();
    void shrink(workspace& w) noexcept;
    void give_back(std::unique_ptr<workspace>& w) noexcept;
    void count_response(int status) noexcept { ++m_stats.responses[static_cast<std::size_t>(std::clamp(status / 100, 0, 5))]; }

    deferred<router> m_router;
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
// Implementation: the handler call and the streamed-body writer here; connections (accept,
// sweep, drain), one request (head, body, dispatch, response) and the buffer in detail/.
// ============================================================================================

/// Runs one handler as a task of its own under the connection: the blocking watchdog names it
/// by its route ("GET /compute") and registration site, shutdown can cancel it, and while it
/// runs a peer_watch cancels it if the client goes away.
template <class S>
class basic_server<S>::handler_call final : public tandem::detail::task_context, tandem::detail::cancel_slot {
public:
    handler_call(deferred<task<response>> t, const route& r, stream_type& s, connection& c, bool watch) noexcept
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
        // The watch takes the read edges while it is armed (bytes that arrive end it quietly):
        // the connection reads before waiting again.
        m_conn->drained = false;
        if (m_watch_peer && m_watch.arm(*m_stream, &on_peer_gone, this)) on_peer_gone(this);
        return true;
    }
    /// False if the client left; then take() the response. (A bool rather than the response
    /// itself: the result of a co_await takes room in the awaiting frame, the result of a
    /// plain call does not.)
    bool await_resume() const {
        if (m_parent_cancelled) throw cancelled{};
        return !m_client_gone;
    }
    /// The handler's response. Rethrows what the handler threw, except a `cancelled` the
    /// handler was not asked for (it awaited a task cancelled elsewhere, or threw one): that is
    /// the handler's failure (500, error hook), not the connection's end, which would close it
    /// unanswered and unreported.
    response take() {
        try {
            return m_task.handle().promise().result();
        } catch (const cancelled&) {
            if (cancel_requested()) throw;
            std::throw_with_nested(std::logic_error("tandem::http: the handler threw tandem::cancelled without being cancelled"));
        }
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

    deferred<task<response>> m_task;
    const route* m_route;
    stream_type* m_stream;
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
template <class S>
class basic_server<S>::stream_writer final : public body_writer {
public:
    stream_writer(basic_server& owner, stream_type& s, connection& c, bool chunked) noexcept
        : m_server(&owner), m_stream(&s), m_conn(&c), m_chunked(chunked) {}
    task<void> write(std::string_view data) override {
        if (data.empty()) co_return; // an empty chunk would end the body
        m_server->expect(*m_conn, phase::write);
        m_broken = true; // until the write is done: a throw here is the socket's
        std::size_t framing = 0; // bytes_sent counts what the wire carried, chunk framing too
        if (m_chunked) {
            char size[20];
            const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
            const std::string_view parts[] = {std::string_view(size, static_cast<std::size_t>(n)), data, "\r\n"};
            framing = static_cast<std::size_t>(n) + 2;
            co_await m_stream->write_all_gathered(parts);
        } else {
            co_await m_stream->write_all(data);
        }
        m_broken = false;
        m_server->m_stats.bytes_sent += data.size() + framing;
        m_bytes += data.size();
    }
    std::uint64_t bytes() const noexcept { return m_bytes; }
    /// True when a write failed (or was cancelled): the connection, not the handler, broke.
    bool broken() const noexcept { return m_broken; }

private:
    basic_server* m_server;
    stream_type* m_stream;
    connection* m_conn;
    std::uint64_t m_bytes = 0;
    bool m_chunked;
    bool m_broken = false;
};

} // namespace tandem::http

#include "tandem/http/detail/server_connection.hpp"
#include "tandem/http/detail/server_request.hpp"
#include "tandem/http/detail/server_buffer.hpp"
