// tandem — http::server's per-connection buffer: room for more bytes (compacting or growing
// within the body-memory bound), reading into it, and the pool of spare workspaces.
//
// Layer: protocols. Part of http/server.hpp, which includes it at its end.
#pragma once

#include "tandem/http/server.hpp"

namespace tandem::http {

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
    for (std::size_t i = 0; i < head.headers.size(); ++i) { // indexed: parser.hpp says why
        fix(storage[i].name);
        fix(storage[i].value);
    }
}
} // namespace detail

/// Makes room for `want` more bytes after w.end: compacts, or grows, doubling but to no more
/// than `at_most` bytes free (charged against max_body_memory). `pinned`, if any, is a parsed
/// head whose views follow the bytes. False when the server-wide body memory would be passed.
template <class S>
inline bool basic_server<S>::make_room(workspace& w, std::size_t want, std::size_t at_most, request_head* pinned) {
    if (w.data.size() - w.end >= want) return true;
    const auto old_base = reinterpret_cast<std::uintptr_t>(w.data.data());
    const std::size_t old_size = w.data.size();
    if (w.begin > 0 && w.end - w.begin + want <= w.data.size()) {
        std::memmove(w.data.data(), w.data.data() + w.begin, w.end - w.begin);
        if (pinned)
            detail::relocate(*pinned, old_base, old_size, -static_cast<std::ptrdiff_t>(w.begin),
                             {w.headers.data(), w.headers.size()});
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
        detail::relocate(*pinned, old_base, old_size, static_cast<std::ptrdiff_t>(new_base - old_base),
                         {w.headers.data(), w.headers.size()});
    return true;
}

/// Reads more bytes into w, after making room for `want` (0: the caller made room). Returns 0
/// at end of stream (or when no memory is left for the bytes).
template <class S>
task<std::size_t> basic_server<S>::read_more(stream_type& s, connection& c, std::unique_ptr<workspace>& w,
                                    std::size_t want, request_head* pinned) {
    if (want > 0 && !make_room(*w, want, want, pinned)) co_return 0;
    if (w->data.size() == w->end) co_return 0;
    for (;;) {
        const auto n = try_read(s, c, std::span<char>(w->data.data() + w->end, w->data.size() - w->end));
        if (n) {
            w->end += *n;
            m_stats.bytes_received += *n;
            if (c.now == phase::body) c.body_received += *n;
            co_return *n;
        }
        co_await s.wait_readable(); // nothing there: the next edge is ours
        c.drained = false;
    }
}

/// Reads what the socket holds, or nullopt when it holds nothing. A read shorter than asked
/// emptied the socket's queue, so the next byte to arrive is a new edge-triggered event: the
/// read after it skips its syscall (an EAGAIN per keep-alive request) and lets the caller's
/// wait_readable() find that edge, remembered by the loop or still to come. A read that filled
/// the buffer, or a peer that hung up (its FIN may have come with the last bytes, and brings
/// no edge of its own), reads again; so does the first read after any wait. Tokio clears
/// readiness after a short read the same way. TCP urgent data also stops a read short, with
/// bytes left behind: the reactor remembers it like a hang-up, so such a socket reads again.
template <class S>
inline std::optional<std::size_t> basic_server<S>::try_read(stream_type& s, connection& c, std::span<char> into) {
    if (c.drained && !tandem::detail::hooks(this_loop()).hung_up(c.fd)) return std::nullopt;
    const auto n = s.try_read_some(into);
    c.drained = n && *n != 0 && *n < into.size();
    return n;
}

/// After a large body: back to the base size if what is left fits, so a client that follows
/// its upload with pipelined (or half-sent) requests does not keep the body's memory charged.
template <class S>
inline void basic_server<S>::shrink(workspace& w) noexcept {
    const std::size_t left = w.end - w.begin;
    if (left > base_size) return;
    deferred<std::vector<char>> fresh;
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

template <class S>
inline std::unique_ptr<typename basic_server<S>::workspace> basic_server<S>::take_workspace() {
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

template <class S>
inline void basic_server<S>::give_back(std::unique_ptr<workspace>& w) noexcept {
    if (!w) return;
    w->resp.reset(); // a response cut short (client gone, cancelled) holds nothing for the next
    m_stats.body_bytes_held -= w->charged;
    w->charged = 0;
    w->begin = w->end = 0;
    // The response-head buffer keeps its capacity across requests (no allocation per
    // response), but not a huge one (a handler's megabyte header) for every later request.
    if (w->out.capacity() > base_size) std::string().swap(w->out);
    if (w->data.size() == base_size && m_spare.size() < 256) {
        m_spare.push_back(std::move(w));
    }
    w.reset();
}

} // namespace tandem::http
