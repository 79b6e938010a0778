// tandem — http::server's connections: serve, accept, the timeout sweeper, the drain, and the
// loop of requests on one connection.
//
// Layer: protocols. Part of http/server.hpp, which includes it at its end.
#pragma once

#include "tandem/http/server.hpp"

namespace tandem::http {

template <class S>
task<void> basic_server<S>::serve(tcp_listener& listener) {
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

template <class S>
task<void> basic_server<S>::accept_loop(tcp_listener& listener) {
    for (;;) {
        co_await m_slots.acquire();
        stream_type s;
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

template <class S>
task<void> basic_server<S>::sweep() {
    const auto shortest = std::min({m_options.idle_timeout, m_options.header_timeout, m_options.io_timeout});
    const auto period = std::clamp<std::chrono::milliseconds>(shortest / 4, std::chrono::milliseconds(10),
                                                               std::chrono::milliseconds(1000));
    m_period = std::chrono::duration_cast<std::chrono::nanoseconds>(period).count();
    for (;;) {
        co_await sleep_for(period);
        const std::int64_t now = now_ns();
        // A sweep that wakes late means the loop was stalled (a handler that blocked it) or
        // busy (long turns): peers' bytes may wait unread, and deadlines set since the last
        // sweep were counted from the stale clock (after() allows one period of staleness, not
        // more). The lateness does not count against anyone; forgive() bounds it to the longest
        // stall each deadline lived through, so a loop late at every sweep stretches no timeout
        // without end. Any lateness, not only past a period: a deadline is then never early.
        const std::int64_t late = now - m_now - m_period;
        const std::int64_t forgiven = late > 0 ? late : 0;
        m_now = now;
        m_connections.for_each([&](connection& c) {
            if (forgiven != 0) forgive(c, forgiven);
            sweep_one(c, now);
        });
    }
}

namespace detail {
/// Bytes the peer acknowledged on a TCP socket (tcp_info's tcpi_bytes_acked, which glibc's
/// struct predates); nullopt where the kernel does not say. (A template: only the server
/// compiles it.)
template <class Deferred = void>
inline tandem::detail::dependent_t<std::optional<std::uint64_t>, Deferred> bytes_acked(int fd) noexcept {
    struct {
        ::tcp_info base;
        std::uint64_t pacing_rate, max_pacing_rate, bytes_acked;
    } info{};
    socklen_t len = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || len < sizeof info) return std::nullopt;
    return info.bytes_acked;
}
} // namespace detail

template <class S>
inline void basic_server<S>::sweep_one(connection& c, std::int64_t now) noexcept {
    if (c.deadline == 0 || now < c.deadline) return;
    if (c.now == phase::write) { // a slow reader that still reads is making progress
        if (const auto acked = detail::bytes_acked(c.fd); acked && *acked != c.acked) {
            c.acked = *acked;
            c.deadline = later(now, ns(m_options.io_timeout));
            c.forgiven = 0;
            return;
        }
    }
    c.deadline = 0;
    c.timed_out = true;
    ++m_stats.timeouts;
    // Shutting the read side wakes the pending read with end of stream; a partial head or body
    // still gets its 408. A stuck writer needs both sides.
    ::shutdown(c.fd, c.now == phase::head || c.now == phase::body ? SHUT_RD : SHUT_RDWR);
}

template <class S>
task<void> basic_server<S>::wait_closed() {
    while (m_connections_open != 0) {
        m_all_closed.reset();
        co_await m_all_closed.wait();
    }
}

/// Stops new requests on kept-alive connections: one that comes within drain_linger is
/// answered with Connection: close (serve_connection then returns); the rest close.
template <class S>
task<void> basic_server<S>::begin_drain() {
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

template <class S>
inline void basic_server<S>::close_idle() noexcept {
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

template <class S>
inline void basic_server<S>::cancel_remaining() noexcept {
    m_gave_up = true;
    m_connections.for_each([](connection& c) {
        if (c.running) c.running->cancel();
        ::shutdown(c.fd, SHUT_RDWR);
    });
}

template <class S>
task<void> basic_server<S>::handle(stream_type s) {
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
template <class S>
task<void> basic_server<S>::serve_connection(stream_type& s, connection& c) {
    workspace_lease lease{this, take_workspace()};
    std::unique_ptr<workspace>& w = lease.w;
    for (;;) {
        if (w && w->begin == w->end) {
            // Read before waiting for readiness unless the last read emptied the socket
            // (try_read): epoll is edge-triggered, and a read that filled the buffer, or a
            // FIN that came with the last bytes, brings no new edge.
            w->begin = w->end = 0;
            if (const auto n = try_read(s, c, std::span<char>(w->data.data(), w->data.size()))) {
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
            c.drained = false;
            w = take_workspace();
            continue;
        }
        if (!co_await serve_request(s, c, w)) co_return;
    }
}

} // namespace tandem::http
