// tandem — http::serve: one call that binds, serves until SIGINT or SIGTERM, and shuts down
// gracefully. What a program needs to be a well-behaved server, without copying a helper.
//
//   int main() {
//       http::router routes;
//       routes.get("/", ...);
//       tandem::event_loop loop;
//       loop.run(http::serve(tandem::address("127.0.0.1", 8080), std::move(routes)));
//   }
//
// Layer: protocols.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/http/server.hpp"
#include "tandem/net.hpp"
#include "tandem/signal.hpp"
#include "tandem/spawn.hpp"

#include <csignal>
#include <cstdio>
#include <utility>

namespace tandem::http {

/// What serve() does around the server.
struct serve_options {
    /// Called once the listener accepts, with the bound address (port 0 picks one). Default
    /// (empty): prints "listening on http://ADDRESS" on stdout and flushes.
    std::function<void(const address&)> on_listening;
    listen_options listen{.backlog = 4096};
};

/// Binds `at`, serves `routes` until SIGINT or SIGTERM arrives, then stops accepting, lets
/// requests in flight finish (server_options::drain_timeout, then cancels them) and returns.
/// Throws what bind throws (std::system_error: EADDRINUSE, ...). Loop thread only; end it with
/// a signal (or raise(SIGTERM)), not by cancelling the calling task.
template <class Deferred = void> // compiled only where used (detail/dependent.hpp)
task<void> serve(address at, tandem::detail::dependent_t<router, Deferred> routes, server_options options = {},
                 serve_options how = {}) {
    using server_type = tandem::detail::dependent_t<server, Deferred>;
    signal_set stop_signals({SIGINT, SIGTERM});
    tcp_listener listener = tcp_listener::bind(at, how.listen);
    server_type srv(std::move(routes), std::move(options));
    const address bound = listener.local_address();
    if (how.on_listening) {
        how.on_listening(bound);
    } else {
        std::printf("listening on http://%s\n", bound.to_string().c_str());
        std::fflush(stdout);
    }
    auto on_signal = [](signal_set& signals, server_type& s) -> task<void> {
        (void)co_await signals.wait();
        s.shutdown();
    };
    auto watcher = spawn(on_signal(stop_signals, srv), "http signals");
    std::exception_ptr failure;
    try {
        co_await srv.serve(listener);
    } catch (...) {
        failure = std::current_exception();
    }
    watcher.cancel();
    try {
        co_await watcher;
    } catch (const cancelled&) {
    }
    if (failure) std::rethrow_exception(failure);
}

} // namespace tandem::http
