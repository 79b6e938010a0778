// Shared by the HTTP server tests: a server on an ephemeral loopback port around a test body.
#pragma once

#include "tandem/http.hpp"
#include "tandem/spawn.hpp"

#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <system_error>
#include <utility>

namespace http_harness {

inline tandem::address local(std::uint16_t port) { return tandem::address("127.0.0.1", port); }

/// Runs `body(port, server)` against a server on an ephemeral port, then shuts it down and
/// waits for serve() to return.
template <class Body>
void with_server(tandem::http::router routes, tandem::http::server_options options, Body body) {
    auto main = [](tandem::http::router r, tandem::http::server_options o, Body b) -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(tandem::address("127.0.0.1", 0));
        const std::uint16_t port = listener.local_address().port();
        tandem::http::server server(std::move(r), std::move(o));
        auto serving = tandem::spawn(server.serve(listener), "server");
        // A body that throws (a timed-out check) still stops the server before it is
        // destroyed, so the failure is reported, not a use-after-free at loop teardown.
        std::exception_ptr failure;
        try {
            co_await b(port, server);
        } catch (...) {
            failure = std::current_exception();
        }
        server.shutdown();
        co_await serving;
        if (failure) std::rethrow_exception(failure);
    };
    tandem::sync_wait(main(std::move(routes), std::move(options), std::move(body)));
}

/// What a client read until the server closed, and whether the close was a reset.
struct drained {
    std::string data;
    bool reset = false;
};
inline tandem::task<drained> read_until_close(tandem::tcp_stream& s) {
    drained out;
    char buf[65536];
    try {
        for (;;) {
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            if (n == 0) break;
            out.data.append(buf, n);
        }
    } catch (const std::system_error&) {
        out.reset = true;
    }
    co_return out;
}

/// Sends raw bytes (then half-closes if asked) and reads until the server closes.
inline tandem::task<std::string> raw_exchange(std::uint16_t port, std::string request, bool close_write = false) {
    auto s = co_await tandem::tcp_stream::connect(local(port));
    co_await s.write_all(request);
    if (close_write) s.shutdown_write();
    std::string reply;
    char buf[4096];
    for (;;) {
        const std::size_t n = co_await s.read_some(std::span<char>(buf));
        if (n == 0) break;
        reply.append(buf, n);
    }
    co_return reply;
}

} // namespace http_harness
