// tandem — cluster::options: what a prefork cluster is asked to do.
//
// Layer: offload (cluster).
#pragma once

#include "tandem/cluster/board.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/net.hpp"

#include <cstddef>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace tandem::cluster {

/// How new connections reach the workers.
enum class balance {
    /// One listening socket, bound by the primary and inherited by every worker: one accept
    /// queue, and a connection waits only until *some* worker is free (EPOLLEXCLUSIVE wakes
    /// one idle worker). Spreads unevenly; reloads lose nothing (the queue outlives workers).
    shared,
    /// One SO_REUSEPORT socket per worker: the kernel hashes each connection to one worker's
    /// queue. Spreads evenly, but a connection hashed to a blocked worker waits for it, and
    /// closing a worker's socket drops what is queued on it unless the kernel migrates it
    /// (net.ipv4.tcp_migrate_req = 1, Linux 5.14+).
    reuseport,
};

inline const char* to_string(balance b) noexcept { return b == balance::shared ? "shared" : "reuseport"; }

struct options {
    /// Where to listen; port 0 picks a free port (the same one for every worker).
    std::vector<address> listen{address("127.0.0.1", 0)};
    /// Worker processes; 0: available_parallelism(). At most 4096 (run() throws
    /// std::invalid_argument past it, as for a negative duration or max_young_deaths = 0).
    std::size_t workers = 0;
    /// SIGTTIN can grow the cluster up to this many workers (capped at 4096).
    std::size_t max_workers = 64;
    balance balancing = balance::shared;
    int backlog = 4096;
    /// SIGTERM/SIGINT and reloads: a worker finishing its requests gets this long, then SIGKILL.
    std::chrono::milliseconds drain_timeout{10'000};
    /// A worker whose loop is blocked this long is reported by task name and replaced.
    /// Zero turns the stall watchdog off (and with it the watchdog thread in each worker);
    /// otherwise at least 20 ms.
    std::chrono::milliseconds stall_timeout{30'000};
    /// Backoff after a worker dies young: restart_delay, doubling up to max_restart_delay.
    std::chrono::milliseconds restart_delay{100};
    std::chrono::milliseconds max_restart_delay{10'000};
    /// A worker that dies sooner than this after it became ready died young; so did one that
    /// died, or was killed for stalling, before it became ready. (A stall after it served
    /// is replaced at once and does not count.)
    std::chrono::milliseconds min_uptime{1'000};
    /// This many young deaths in a row at one index is a crash loop: the cluster stops, exit 1.
    unsigned max_young_deaths = 5;
    /// Called in the primary once the first `workers` workers accept, with the bound
    /// addresses (real ports). The examples print their "listening on" line here. An
    /// exception from it is logged; the cluster runs on.
    std::function<void(std::span<const address>)> on_ready;
    /// Called in the primary once per heartbeat interval (at most 250 ms) with every
    /// worker's figures from the status board: the primary's view of the cluster.
    std::function<void(std::span<const worker_stats>)> on_tick;
    /// Where the primary's and the workers' one-line reports go (default: stderr, prefixed
    /// "tandem cluster: "). Called from the primary and from workers (never concurrently
    /// within one process but from several processes at once: write each line whole).
    std::function<void(std::string_view)> log;
};

namespace detail {

inline void default_log(std::string_view line) {
    std::string out = "tandem cluster: ";
    out += line;
    out += '\n';
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, out.data(), out.size()); // one write: lines stay whole
}

inline void log(const options& o, std::string_view line) {
    try {
        if (o.log) {
            o.log(line);
        } else {
            default_log(line);
        }
    } catch (...) {
        // A failing logger must not take the supervisor down.
    }
}

} // namespace detail

} // namespace tandem::cluster
