// tandem — http::server's one request: head, body, dispatch, response, and the refusals.
//
// Layer: protocols. Part of http/server.hpp, which includes it at its end.
#pragma once

#include "tandem/http/server.hpp"

namespace tandem::http {

/// Reads, handles and answers one request (bytes are already buffered in w). Returns false
/// when the connection must close. Most requests arrive whole and are answered by a handler
/// that does not suspend, with a body already in memory: for them this is the only frame the
/// server allocates (besides the handler's own). head_buffered/body_buffered take the request
/// without the I/O stages, the handler runs inline (handler_call), and plan_response and
/// finish_response around one send answer it; reading, streaming and closing are
/// coroutines of their own, entered only when needed.
template <class S>
task<bool> basic_server<S>::serve_request(stream_type& s, connection& c, std::unique_ptr<workspace>& w) {
    exchange& x = w->x;
    x = exchange{};
    if (m_options.access_log) x.started = now_ns();
    if (!head_buffered(*w, x) && co_await read_head(s, c, w, x) == verdict::close) co_return false;
    ++m_stats.requests;
    if (!body_buffered(*w, x) && co_await read_body(s, c, w, x) == verdict::close) co_return false;
    // Dispatch. The response lives in the workspace, not in this frame: with its headers in
    // place it would take this frame past the frame pool's largest block.
    deferred<std::optional<response>>& resp = w->resp;
    deferred<route_params> params;
    if (const route* found = find_route(x, params, resp); found) {
        request req(x.head, x.body, params, m_stats);
        expect(c, phase::handler);
        std::exception_ptr failure;
        try {
            handler_call call(found->fn(req), *found, s, c, m_options.cancel_on_disconnect);
            if (!co_await call) {
                ++m_stats.clients_gone;
                co_return false;
            }
            resp.emplace(call.take());
            check_response(*resp);
        } catch (const cancelled&) {
            co_return false; // shutdown ran out of patience, or the connection was cancelled
        } catch (...) {
            failure = std::current_exception();
        }
        if (failure) {
            report_failure(x, failure);
            resp.emplace(500, "internal server error\n");
        }
    }
    // The response.
    const response_plan plan = plan_response(c, *w, x, *resp);
    // A small body went into w->out behind the head; a large one goes out beside it, gathered,
    // from a coroutine of its own: its awaiter (16 iovecs) would more than double this frame.
    std::uint64_t body_bytes = plan.send_body ? resp->body.size() : 0;
    if (plan.send_body && !plan.body_copied) {
        co_await write_gathered(s, w->out, resp->body);
    } else {
        co_await s.write_all(w->out);
    }
    m_stats.bytes_sent += w->out.size() + (plan.body_copied ? 0 : body_bytes);
    if (plan.streaming) {
        const std::optional<std::uint64_t> streamed = co_await write_streamed(s, c, x, *resp, plan.chunked);
        if (!streamed) co_return false; // the handler failed mid-body: cut short, closed
        body_bytes = *streamed;
    }
    finish_response(x, resp->status, body_bytes);
    c.fresh = false;
    if (plan.close) {
        co_await linger(s);
        co_return false;
    }
    resp.reset(); // the body and a stream's function go now, not when the next request comes
    w->begin += x.consumed;
    if (w->charged != 0) shrink(*w);
    co_return true;
}

/// The head, if it is all buffered and valid; false leaves the rest (reading, refusing) to
/// read_head, with the parser where it stopped.
template <class S>
inline bool basic_server<S>::head_buffered(workspace& w, exchange& x) {
    const parse_result parsed = x.scanner.parse(w.view(), x.head, {w.headers.data(), w.headers.size()}, m_options.limits);
    x.head_size = parsed.head_size;
    x.head_method = x.scanner.head_method();
    return parsed.state == parse_state::complete;
}

/// The body, if it needs no reading (none, or a Content-Length body already buffered).
template <class S>
inline bool basic_server<S>::body_buffered(workspace& w, exchange& x) {
    x.consumed = x.head_size;
    if (x.head.framing == body_framing::none) return true;
    if (x.head.framing != body_framing::content_length) return false;
    const std::size_t need = x.head_size + static_cast<std::size_t>(x.head.content_length);
    if (w.end - w.begin < need) return false;
    x.consumed = need;
    x.body = w.view().substr(x.head_size, static_cast<std::size_t>(x.head.content_length));
    return true;
}

template <class S>
task<typename basic_server<S>::verdict> basic_server<S>::read_head(stream_type& s, connection& c, std::unique_ptr<workspace>& w,
                                                exchange& x) {
    const limits& lim = m_options.limits;
    head_scanner& parser = x.scanner;
    for (;;) {
        // Each call looks only at the bytes the last one had not seen; the head is parsed as
        // they pass, so a complete one is not read again.
        const parse_result parsed = parser.parse(w->view(), x.head, {w->headers.data(), w->headers.size()}, lim);
        if (parsed.state == parse_state::complete) {
            x.head_size = parsed.head_size;
            x.head_method = parser.head_method();
            co_return verdict::go_on;
        }
        if (parsed.state == parse_state::error) {
            co_await reject(s, c, w, parsed.status, parsed.reason, parser.head_method());
            co_return verdict::close;
        }
        expect(c, phase::head);
        if (co_await read_more(s, c, w, 4096, nullptr) == 0) {
            if (c.timed_out && c.now == phase::head)
                co_await reject(s, c, w, 408, "request head timed out", parser.head_method());
            co_return verdict::close;
        }
    }
}

template <class S>
task<typename basic_server<S>::verdict> basic_server<S>::read_body(stream_type& s, connection& c, std::unique_ptr<workspace>& w,
                                                exchange& x) {
    request_head& head = x.head;
    x.consumed = x.head_size;
    if (head.framing == body_framing::none) co_return verdict::go_on;
    if (head.expect_continue && w->end - w->begin == x.head_size) {
        constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
        co_await s.write_all(go_on);
        m_stats.bytes_sent += go_on.size();
    }
    // The body's clock starts now, and the bytes of it that came with the head count toward
    // min_body_rate: an upload at the allowed rate whose first burst rode with the head is
    // not cut for the bytes the rate never saw.
    expect(c, phase::body);
    c.body_received = w->end - w->begin - x.head_size;
    if (head.framing == body_framing::content_length) {
        const std::size_t need = x.head_size + static_cast<std::size_t>(head.content_length);
        while (w->end - w->begin < need) {
            // Room in steps that follow what arrived (at most doubling), never what was announced.
            const std::size_t left = need - (w->end - w->begin);
            if (co_await read_more_body(s, c, w, x, std::min(left, base_size), left) == verdict::close)
                co_return verdict::close;
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
        if (co_await read_more_body(s, c, w, x, 4096, SIZE_MAX / 4) == verdict::close) co_return verdict::close;
    }
    x.consumed = raw;
    x.body = w->view().substr(x.head_size, body_end - x.head_size);
    co_return verdict::go_on;
}

/// One more read of a body, into room for `want` bytes (growing by at most `at_most`): 503
/// when the server's body memory is spent, 408 when the sweeper cut a body that made no
/// progress for io_timeout or fell below min_body_rate.
template <class S>
task<typename basic_server<S>::verdict> basic_server<S>::read_more_body(stream_type& s, connection& c, std::unique_ptr<workspace>& w,
                                              exchange& x, std::size_t want, std::size_t at_most) {
    expect(c, phase::body);
    if (!make_room(*w, want, at_most, &x.head)) {
        co_await reject(s, c, w, 503, "server busy: request-body memory is exhausted", x.head_method);
        co_return verdict::close;
    }
    const std::size_t n = co_await read_more(s, c, w, 0, &x.head);
    if (n == 0 && c.timed_out && c.now == phase::body)
        co_await reject(s, c, w, 408, "request body timed out", x.head_method);
    co_return n == 0 ? verdict::close : verdict::go_on;
}

/// The route that takes the request, or nullptr with `resp` set to the answer when none does:
/// 404, 405 with Allow, or 204 with Allow (OPTIONS). A plain function, so that the match and
/// its Allow list take no room in serve_request's frame.
template <class S>
inline const route* basic_server<S>::find_route(exchange& x, deferred<route_params>& params,
                                                deferred<std::optional<response>>& resp) {
    route_match match = m_router.find(x.head.method, x.head.path, params);
    if (match.found) {
        x.route = match.found->label;
        return match.found;
    }
    response& r = resp.emplace(match.status, match.status == 204 ? std::string() : std::string(reason_phrase(match.status)) + "\n");
    if (match.status == 405 || match.status == 204) r.set_header("Allow", std::move(match.allow));
    return nullptr;
}

template <class S>
inline void basic_server<S>::report_failure(const exchange& x, std::exception_ptr failure) noexcept {
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
template <class S>
inline void basic_server<S>::check_response(const response& resp) {
    if (resp.status < 200 || resp.status > 599)
        throw std::invalid_argument("tandem::http: a handler answered status " + std::to_string(resp.status) +
                                    " (a final status is 200-599)");
    for (const auto& [n, v] : resp.headers)
        if (!detail::field_check::valid(n, v))
            throw std::invalid_argument("tandem::http: a handler's header '" + n.str() + "' would split the response");
}

/// Decides how `resp` is framed and whether the connection closes after it, and builds its
/// head in w.out (reused across requests, so a kept-alive connection allocates it once).
template <class S>
inline typename basic_server<S>::response_plan basic_server<S>::plan_response(connection& c, workspace& w, const exchange& x,
                                                   const deferred<response>& resp) {
    const request_head& head = x.head;
    const bool bodiless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    const bool no_body = x.head_method || bodiless; // HEAD: the head GET would send, no body
    response_plan plan;
    plan.streaming = static_cast<bool>(resp.streamer) && !no_body;
    plan.chunked = plan.streaming && head.version == 11;
    plan.send_body = !no_body && !plan.streaming && !resp.body.empty();
    bool handler_closes = false;
    for (const auto& [n, v] : resp.headers)
        if (iequals(n, "connection"))
            detail::for_each_list_element(v, [&](std::string_view option) { handler_closes |= iequals(option, "close"); });
    plan.close = !head.keep_alive || m_draining || (plan.streaming && !plan.chunked) || handler_closes;
    head_framing framing;
    framing.chunked = plan.chunked;
    if (!resp.streamer && !bodiless) framing.content_length = resp.body.size();
    framing.close = plan.close;
    w.out.clear();
    append_response_head(w.out, head.version, resp.status, {resp.headers.data(), resp.headers.size()}, framing);
    if (plan.send_body && resp.body.size() <= copied_body) {
        w.out += resp.body;
        plan.body_copied = true;
    }
    expect(c, phase::write);
    c.acked = 0;
    return plan;
}

/// A streamed body, after its head: the bytes it sent, or nullopt when the handler failed
/// mid-body (reported; the connection is closed, the response cut short).
template <class S>
task<std::optional<std::uint64_t>> basic_server<S>::write_streamed(stream_type& s, connection& c, const exchange& x,
                                                          response& resp, bool chunked) {
    stream_writer writer(*this, s, c, chunked);
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
        co_return std::nullopt;
    }
    if (chunked) {
        constexpr std::string_view last_chunk = "0\r\n\r\n";
        co_await s.write_all(last_chunk);
        m_stats.bytes_sent += last_chunk.size();
    }
    co_return writer.bytes();
}

/// A response head and a body too large to copy behind it, in one gathered write per attempt.
template <class S>
task<void> basic_server<S>::write_gathered(stream_type& s, std::string_view head, std::string_view body) {
    const std::string_view parts[] = {head, body};
    co_await s.write_all_gathered(parts);
}

/// Counts a response that went out whole and tells the access log.
template <class S>
inline void basic_server<S>::finish_response(const exchange& x, int status, std::uint64_t body_bytes) noexcept {
    ++m_served;
    count_response(status);
    log_access(x.head.method, x.head.target, status, body_bytes, x.started);
}

/// Tells the access log (if any) of a response written; `started` 0: no duration known.
template <class S>
inline void basic_server<S>::log_access(std::string_view method, std::string_view target, int status,
                               std::uint64_t body_bytes, std::int64_t started) noexcept {
    if (!m_options.access_log) return;
    try {
        m_options.access_log(access_record{method, target, status, body_bytes,
                                           std::chrono::nanoseconds(started == 0 ? 0 : now_ns() - started)});
    } catch (...) {
    }
}

/// Answers a request that cannot be served (status >= 400), then closes with a lingering
/// close: stop sending, then read (and drop) what the client still sends for a moment, so our
/// close does not turn into a reset that destroys the answer.
template <class S>
task<void> basic_server<S>::reject(stream_type& s, connection& c, std::unique_ptr<workspace>& w, int status,
                          std::string_view reason, bool head_method) {
    // The access log hears of refusals too (an attack shows there as its 400s). What the
    // head said is copied first: its bytes are in the workspace, given back here.
    std::string method, target;
    std::int64_t started = 0;
    if (m_options.access_log && w) {
        method = w->x.head.method;
        target = w->x.head.target;
        started = w->x.started;
    }
    give_back(w);
    ++m_stats.rejected;
    count_response(status);
    std::string body(reason);
    body += '\n';
    deferred<response> r(status, std::move(body));
    if (status == 503) r.set_header("Retry-After", "1");
    std::string out;
    append_response_head(out, 11, status, {r.headers.data(), r.headers.size()}, head_framing{r.body.size(), false, true});
    if (!head_method) out += r.body;
    expect(c, phase::write);
    co_await s.write_all(out);
    m_stats.bytes_sent += out.size();
    log_access(method, target, status, head_method ? 0 : r.body.size(), started);
    co_await linger(s);
}

/// Closes after a last response without destroying it: stop sending (FIN after the data),
/// then read and drop what the client still sends (its pipelined requests) until it closes,
/// for at most a second and a MiB. Closing a socket with unread bytes sends a reset, which
/// discards the response the kernel has not sent yet.
template <class S>
task<void> basic_server<S>::linger(stream_type& s) {
    s.shutdown_write();
    try {
        co_await with_timeout(std::chrono::seconds(1), [](stream_type& st) -> task<void> {
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

} // namespace tandem::http
