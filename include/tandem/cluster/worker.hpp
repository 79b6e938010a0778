// tandem — cluster::worker: what a worker process's serve function is handed (its
// listeners, its index, a stop signal, the status board), and the worker's life around it.
//
// Layer: offload (cluster). A worker is an ordinary tandem program on its own event_loop;
// this file wires that loop to the board (heartbeat, figures, block record) and to SIGTERM.
#pragma once

#include "tandem/cluster/board.hpp"
#include "tandem/cluster/options.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/loop.hpp"
#include "tandem/net.hpp"
#include "tandem/signal.hpp"
#include "tandem/spawn.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <stop_token>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace tandem::cluster {

class worker;

/// The serve function: runs once in each worker, on the worker's loop, and returns when the
/// worker should exit (normally after worker::stop_token() asked it to).
using serve_function = std::function<task<void>(worker&)>;

/// A worker's view of itself. Loop thread only.
class worker {
public:
    /// 0 .. workers-1. A replacement (crash, stall, reload) gets the index of the worker it
    /// replaces; during a reload two processes briefly share one.
    std::size_t index() const noexcept { return m_index; }
    pid_t pid() const noexcept { return m_pid; }

    /// This worker's listening socket (the first, if several addresses were given). In the
    /// shared mode every worker holds the same socket; in the reuseport mode, its own.
    tcp_listener& listener() noexcept { return m_listeners[0]; }
    std::span<tcp_listener> listeners() noexcept { return m_listeners; }

    /// Stop is requested when the primary asks this worker to go (SIGTERM: shutdown, reload,
    /// SIGTTOU). Stop accepting and let requests in flight finish, e.g.
    ///     std::stop_callback on_stop(w.stop_token(), [&] { server.shutdown(); });
    /// The callback runs on this loop's thread. The listeners are closed two loop turns
    /// later, so no connection waits in a queue nobody will accept from.
    std::stop_token stop_token() const noexcept { return m_stop.get_token(); }
    bool stopping() const noexcept { return m_stop.stop_requested(); }

    /// Where the "requests served" figure on the board comes from (read at each heartbeat),
    /// e.g. [&] { return server.requests_served(); }.
    void count_requests(std::function<std::uint64_t()> counter) { m_counter = std::move(counter); }

    /// Every live worker's figures, read from the shared board (no message, no syscall).
    /// (A template only so that the vector's members are compiled where it is called:
    /// tandem/detail/dependent.hpp.)
    template <class Deferred = void>
    tandem::detail::dependent_t<std::vector<worker_stats>, Deferred> cluster_stats() const {
        return m_board->snapshot<Deferred>();
    }

    /// `listeners` are the worker process's own (worker_main holds them for its life).
    worker(std::size_t index, std::span<tcp_listener> listeners, board& b, std::size_t seat)
        : m_index(index), m_pid(::getpid()), m_listeners(listeners), m_board(&b), m_seat(seat) {}
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

private:
    friend struct worker_access;
    std::size_t m_index;
    pid_t m_pid;
    std::span<tcp_listener> m_listeners; // not a vector: see cluster_stats()
    board* m_board;
    std::size_t m_seat;
    std::stop_source m_stop;
    std::function<std::uint64_t()> m_counter;
};

struct worker_access {
    static detail::seat& seat(worker& w) noexcept { return (*w.m_board)[w.m_seat]; }
    static void request_stop(worker& w) noexcept { w.m_stop.request_stop(); }
    /// Closing takes the socket out of this loop's epoll set: a shared queue's one-waiter
    /// wake-up is not spent on a worker that will not accept, and a reuseport socket leaves
    /// the group, so the kernel hashes new connections to the others.
    static void close_listeners(worker& w) noexcept {
        for (tcp_listener& l : w.m_listeners) l.close();
    }
    static std::uint64_t requests(worker& w) {
        return w.m_counter ? w.m_counter() : 0;
    }
};

namespace detail {

/// What a freshly forked worker needs from the primary.
struct worker_setup {
    const options* opts = nullptr;
    const serve_function* serve = nullptr;
    board* status = nullptr;
    std::size_t seat = 0;
    std::uint32_t generation = 0;
    std::size_t index = 0;
    std::vector<int> inherited; // shared mode: the primary's listening sockets
    std::vector<address> bound; // reuseport mode: where to bind our own
    int notify_fd = -1;         // write {seat, generation} here once accepting
};

/// The primary watches heartbeats this often (and workers beat this often).
inline std::chrono::milliseconds heartbeat_interval(const options& o) noexcept {
    using std::chrono::milliseconds;
    if (o.stall_timeout <= milliseconds::zero()) return milliseconds(250);
    return std::clamp<milliseconds>(o.stall_timeout / 4, milliseconds(10), milliseconds(250));
}

// Deferred: compiled only where used, by clang too (tandem/detail/dependent.hpp).
template <class Deferred = void>
task<void> heartbeat(worker& w, seat& me, tandem::detail::dependent_t<std::chrono::milliseconds, Deferred> interval) {
    event_loop& loop = this_loop();
    loop_stats before = loop.stats();
    for (;;) {
        me.heartbeat_ns.store(now_ns(), std::memory_order_relaxed);
        me.requests.store(worker_access::requests(w), std::memory_order_relaxed);
        const loop_stats& now = loop.stats();
        me.delay_p99_ns.store(now.delay.percentile(99).count(), std::memory_order_relaxed);
        me.utilization_ppm.store(static_cast<std::uint32_t>(now.utilization_since(before) * 1e6),
                                 std::memory_order_relaxed);
        before = now;
        co_await sleep_for(interval);
    }
}

template <class Deferred = void>
task<void> stop_on_signal(tandem::detail::dependent_t<signal_set, Deferred>& signals, worker& w) {
    (void)co_await signals.wait();
    worker_access::request_stop(w);
    // Close only once the serve function's acceptor has seen the stop: an acceptor that was
    // already resuming with a connection would otherwise retry accept() on a closed socket
    // (EBADF) and fail the serve function. Two turns let it loop back and meet its
    // cancellation; a connection it takes meanwhile is served (and answered) as usual.
    co_await yield();
    co_await yield();
    worker_access::close_listeners(w);
}

template <class = void>
task<void> call_serve(const serve_function& serve, worker& w) { co_await serve(w); }

template <class Deferred = void> // Deferred: see tandem/detail/dependent.hpp
task<int> run_worker(worker& w, const tandem::detail::dependent_t<worker_setup, Deferred>& s) {
    event_loop& loop = this_loop();
    signal_set stop_signals(loop, {SIGTERM});
    sigset_t term; // blocked since fork (see supervisor::become_worker): a pending one arrives now
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    ::sigprocmask(SIG_UNBLOCK, &term, nullptr);
    seat& me = worker_access::seat(w);
    me.heartbeat_ns.store(now_ns(), std::memory_order_relaxed);
    if (s.opts->balancing == balance::shared) {
        for (tcp_listener& l : w.listeners()) {
            loop.watch_exclusive(l.native_handle(), l.id());
            l.bind_loop(loop);
        }
    }
    if (s.opts->stall_timeout > std::chrono::milliseconds::zero()) {
        // The watchdog thread names the task a blocked step belongs to; the primary, which
        // sees the heartbeat stop, reads the name from here.
        loop.watch_blocking(s.opts->stall_timeout / 2, [&me](const blocking_report& r) {
            const char* file = r.where.file_name();
            std::string task = r.in_callback ? std::string("a posted callback") : r.task_name;
            me.write_block(now_ns() - r.blocked_for.count(), task, file ? file : "", r.where.line());
        });
    }
    auto serving = spawn(call_serve(*s.serve, w), "cluster serve");
    auto beating = spawn(heartbeat<Deferred>(w, me, heartbeat_interval(*s.opts)), "cluster heartbeat");
    // Two turns: the serve function has reached its first accept (and, for http::server,
    // can be shut down). Only then listen for the stop: a SIGTERM that came earlier waits
    // in the signal_set.
    co_await yield();
    co_await yield();
    auto stopping = spawn(stop_on_signal<Deferred>(stop_signals, w), "cluster stop");
    const std::uint32_t ready[2] = {static_cast<std::uint32_t>(s.seat), s.generation};
    [[maybe_unused]] auto n = ::write(s.notify_fd, ready, sizeof ready); // atomic: under PIPE_BUF
    int code = 0;
    try {
        co_await serving;
    } catch (const std::exception& e) {
        log(*s.opts, "worker " + std::to_string(w.index()) + " (pid " + std::to_string(w.pid()) +
                         "): the serve function failed: " + e.what());
        code = 1;
    } catch (...) {
        log(*s.opts, "worker " + std::to_string(w.index()) + " (pid " + std::to_string(w.pid()) +
                         "): the serve function failed with a non-standard exception");
        code = 1;
    }
    for (auto* h : {&beating, &stopping}) {
        h->cancel();
        try {
            co_await *h;
        } catch (const cancelled&) {
        }
    }
    loop.unwatch_blocking();
    co_return code;
}

/// A worker's whole life, in the forked child. Never returns.
template <class Deferred = void> // Deferred: see tandem/detail/dependent.hpp
[[noreturn]] void worker_main(const tandem::detail::dependent_t<worker_setup, Deferred>& s) noexcept {
    int code = 1;
    try {
        tandem::detail::dependent_t<std::vector<tcp_listener>, Deferred> listeners;
        for (int fd : s.inherited) listeners.emplace_back(fd);
        for (const address& a : s.bound)
            listeners.push_back(tcp_listener::bind(a, {.backlog = s.opts->backlog, .reuse_port = true}));
        worker w(s.index, listeners, *s.status, s.seat);
        event_loop loop;
        code = loop.run(run_worker<Deferred>(w, s));
    } catch (const std::exception& e) {
        log(*s.opts, "worker " + std::to_string(s.index) + " (pid " + std::to_string(::getpid()) + "): " + e.what());
    } catch (...) {
    }
    std::fflush(nullptr);
    // _exit: the atexit handlers and static destructors are the primary's, copied by fork.
    ::_exit(code);
}

} // namespace detail

} // namespace tandem::cluster
