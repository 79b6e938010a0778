// tandem — what an HTTP server is told (timeouts, limits, the connection cap) and what it
// reports through (the error hook, the access log).
//
// Layer: protocols, pure: values and callbacks; no sockets, no loop.
#pragma once

#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/http/parser.hpp"

#include <cstdint>
#include <cstddef>
#include <exception>
#include <string>
#include <string_view>

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
    /// No progress reading a body (408, then close) or writing a response (close) for this
    /// long. Progress is each read, and each byte the client acknowledges: a slow but steady
    /// download lives.
    std::chrono::milliseconds io_timeout{30'000};
    /// A request body must arrive at this many bytes per second at least, on average from
    /// body_rate_grace after its first read on: one trickled a byte at a time, each within
    /// io_timeout, would hold its connection forever. Too slow: 408, then close. The rate
    /// and grace are ASP.NET Kestrel's defaults; 0 turns the minimum off.
    std::size_t min_body_rate = 240;
    std::chrono::milliseconds body_rate_grace{5'000};
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
    /// Each response written, refusals (400, 408, 413, 431, 503...) included: their method and
    /// target are empty when the head never parsed. Default (empty): nothing.
    std::function<void(const access_record&)> access_log;
};

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

} // namespace tandem::http
