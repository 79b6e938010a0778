// tandem — cluster: Node's multi-core model as a prefork supervisor. The whole server, loop
// and all, runs once per CPU in worker processes that share one port; the primary keeps
// them alive, replaces the dead and the stalled, reloads them one at a time on SIGHUP and
// drains them on SIGTERM.
//
// Layer: offload. Stands on the process wing and on net/loop; knows nothing of HTTP (a
// serve function may run any protocol).
//
//     int main() {
//         return tandem::cluster::run({.workers = 4}, [](tandem::cluster::worker& w) -> tandem::task<> {
//             tandem::http::server server(routes());
//             std::stop_callback on_stop(w.stop_token(), [&] { server.shutdown(); });
//             co_await server.serve(w.listener());
//         });
//     }
//
// Signals to the primary: SIGTERM/SIGINT drain and exit (a second one kills); SIGHUP rolls
// every worker (start a replacement, wait until it accepts, drain the old one); SIGTTIN /
// SIGTTOU add or remove a worker. A worker dies with the primary (PR_SET_PDEATHSIG), even
// when the primary is SIGKILLed.
//
// Parts: cluster/parallelism.hpp (available_parallelism), cluster/options.hpp,
// cluster/board.hpp (the shared status board), cluster/worker.hpp (a worker's side),
// cluster/supervisor.hpp (the primary).
#pragma once

#include "tandem/cluster/board.hpp"
#include "tandem/cluster/options.hpp"
#include "tandem/cluster/parallelism.hpp"
#include "tandem/cluster/supervisor.hpp"
#include "tandem/cluster/worker.hpp"
#include "tandem/detail/dependent.hpp"

#include <utility>

namespace tandem::cluster {

/// Runs a prefork cluster: binds the listeners, forks the workers (each runs `serve` on a
/// loop of its own) and supervises them until SIGTERM/SIGINT or a crash loop.
///
/// Returns the exit status for main: 0 when every worker drained in time after
/// SIGTERM/SIGINT; 1 after a crash loop (a worker kept dying within min_uptime of starting:
/// the log says which and how) or when a worker had to be killed at drain_timeout.
/// Throws std::invalid_argument for options out of range (no address, more than 4096
/// workers, a negative duration, max_young_deaths or backlog below 1), std::system_error
/// if a listener cannot be bound, std::logic_error if threads
/// already run in this process (forking then is unsafe: call run() at the top of main).
///
/// Workers inherit what the process holds when run() is called; build per-worker state
/// (loops, pools, connections) inside `serve`. In the workers, SIGINT, SIGHUP, SIGTTIN and
/// SIGTTOU are ignored (they are the primary's to act on) and SIGTERM requests the stop.
template <class Serve>
int run(const options& opts, Serve&& serve) {
    // Named through Serve, so that clang compiles the supervisor only where run() is used.
    detail::supervisor<tandem::detail::dependent_t<void, Serve>> primary(opts, serve_function(std::forward<Serve>(serve)));
    return primary.run();
}

} // namespace tandem::cluster
