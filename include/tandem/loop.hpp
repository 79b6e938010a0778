// tandem — event_loop: one thread's ready queue, timers, reactor, cross-thread post and the
// bookkeeping of spawned tasks.
//
// Layer: loop. Knows tasks (core) and the reactor (detail); knows nothing of sockets.
#pragma once

#include "tandem/config.hpp"
#include "tandem/error.hpp"
#include "tandem/lag.hpp"
#include "tandem/task.hpp"
#include "tandem/detail/intrusive_list.hpp"
#include "tandem/detail/reactor.hpp"
#include "tandem/detail/ring_queue.hpp"
#include "tandem/detail/scheduler.hpp"
#include "tandem/detail/timer_heap.hpp"
#include "tandem/detail/unique_function.hpp"
#include "tandem/detail/wakeup.hpp"

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <memory>
#include <optional>
#include "tandem/source_location.hpp"
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace tandem {

class event_loop;

/// Identifies a task in diagnostics: the name given to spawn (may be empty) and where it
/// was spawned.
struct task_info {
    std::string_view name;
    source_location where;
};

namespace detail {

/// A coroutine waiting for one direction of one fd.
struct io_waiter : cancel_slot {
    std::coroutine_handle<> handle;
    task_context* context = nullptr;
    /// Optional: retries the operation when the fd is reported ready, before the coroutine
    /// is resumed. Returns false (EAGAIN again) to keep waiting. Lets an I/O awaiter finish
    /// its syscall without a coroutine frame of its own.
    bool (*perform)(io_waiter*) noexcept = nullptr;
    /// Non-zero for fds owned by a tandem socket: a new owner of an fd number (the old fd was
    /// closed and the number reused) gets a fresh registration.
    std::uint64_t owner = 0;
    int fd = -1;
    bool write = false;
    bool cancelled = false;
    bool aborted = false; // the fd was forgotten (closed) while we waited
};

/// Per-fd readiness. With edge-triggered epoll an edge that arrives while nobody waits is
/// remembered here, so the next wait does not sleep through data that is already there.
struct fd_state {
    io_waiter* reader = nullptr;
    io_waiter* writer = nullptr;
    std::uint64_t owner = 0;
    bool readable = false;
    bool writable = false;
};

/// Something that must look at the world whenever the loop's wake-up fd fires (signals).
class wake_listener : public list_hook {
public:
    virtual void on_wake() noexcept = 0;

protected:
    ~wake_listener() = default;
};

struct ready_item {
    std::coroutine_handle<> handle;
    task_context* context = nullptr;
    std::int64_t ready_at = 0; // steady_clock ns: when it became runnable (for loop_stats::delay)
};

struct posted_callback {
    unique_function fn;
    std::int64_t ready_at = 0;
};

inline std::int64_t steady_now_ns() noexcept {
    return std::chrono::steady_clock::now().time_since_epoch().count();
}

/// The loop's record of one spawned task: its context, its frame, and who waits for it.
/// Reference-counted by the loop (while it runs) and by its join_handle (while one exists).
class root_base : public task_context, public list_hook {
public:
    struct join_waiter : cancel_slot {
        std::coroutine_handle<> handle;
        task_context* context = nullptr;
    };

    root_base(event_loop& loop, std::string_view name, source_location where)
        : m_loop(&loop), m_name(name), m_where(where) {
        mark_root();
    }

    std::string_view name() const noexcept override { return m_name; }
    source_location where() const noexcept override { return m_where; }
    std::coroutine_handle<> finish() noexcept override;

    virtual std::coroutine_handle<> frame() const noexcept = 0;
    virtual std::exception_ptr exception() const noexcept = 0;
    virtual void destroy_frame() noexcept = 0;

    event_loop& loop() const noexcept { return *m_loop; }
    bool done() const noexcept { return m_done; }
    bool abandoned() const noexcept { return m_abandoned; }
    join_waiter* joiner() const noexcept { return m_joiner; }
    void set_joiner(join_waiter* w) noexcept { m_joiner = w; }

    void add_handle() noexcept {
        ++m_refs;
        m_has_handle = true;
    }
    /// The join_handle is gone; `observed` says whether it took the result.
    void drop_handle(bool observed) noexcept;
    void release() noexcept;
    /// Loop teardown: destroy the suspended frame, never resume it.
    void abandon() noexcept {
        m_abandoned = true;
        m_done = true;
        destroy_frame();
    }

protected:
    /// Decides what runs after this task finished. Task groups override it.
    virtual std::coroutine_handle<> on_finished() noexcept;
    /// True if this exception must reach the loop's exception handler.
    bool worth_reporting(const std::exception_ptr& e) const noexcept;

    event_loop* m_loop;
    join_waiter* m_joiner = nullptr;
    std::string m_name;
    source_location m_where;
    unsigned m_refs = 1; // the loop's, until the task finishes
    bool m_has_handle = false;
    bool m_done = false;
    bool m_abandoned = false;

public:
    bool m_is_run_main = false; // event_loop::run(task) waits for this one: finishing ends the turn
};

template <class T>
class root final : public root_base {
public:
    root(event_loop& loop, task<T> t, std::string_view name, source_location where)
        : root_base(loop, name, where), m_task(std::move(t)) {
        m_task.handle().promise().set_context(this);
    }
    std::coroutine_handle<> frame() const noexcept override { return m_task.handle(); }
    std::exception_ptr exception() const noexcept override { return m_task.handle().promise().exception(); }
    void destroy_frame() noexcept override { m_task = task<T>{}; }
    decltype(auto) result() { return m_task.handle().promise().result(); }

private:
    task<T> m_task;
};

} // namespace detail

/// A single-threaded event loop: ready queue, timers, an fd reactor (epoll, or poll with
/// TANDEM_REACTOR_POLL), signals, and cross-thread post.
///
/// Thread-safety: a loop belongs to the thread that runs it. Only post() and stop() may be
/// called from other threads. Run one loop per thread for many cores.
///
/// Unhandled exceptions: an exception escaping a spawned task whose join_handle was dropped
/// (or destroyed without being awaited) goes to the exception handler. The default handler
/// makes run() rethrow it, as Node treats an unhandled rejection as fatal.
///
/// Destroying the loop destroys the frames of tasks still suspended in it; none is resumed.
class event_loop final : public detail::scheduler {
public:
    using clock = std::chrono::steady_clock;
    using exception_handler = std::function<void(std::exception_ptr, const task_info&)>;

    event_loop();
    ~event_loop();
    event_loop(const event_loop&) = delete;
    event_loop& operator=(const event_loop&) = delete;

    /// Runs `main` and whatever it spawns until `main` finishes; returns its value or
    /// rethrows its exception. Also rethrows an unhandled exception of a detached task
    /// (default handler). Tasks still running when main returns stay suspended in the loop.
    template <class T>
    T run(task<T> main, source_location where = source_location::current());

    /// Runs until stop() is called (from any thread, or from a task).
    void run();

    /// One turn: expire timers, run a bounded batch of ready work, wait for I/O (no longer
    /// than the next timer, not at all if work is ready).
    void run_once();

    /// Queues fn to run on the loop thread. Thread-safe; wakes the loop if it sleeps.
    template <class F>
    void post(F&& fn) {
        post_erased(detail::unique_function(static_cast<F&&>(fn)));
    }

    /// Makes run() return after the current turn. Thread-safe.
    void stop() noexcept;

    /// Replaces the policy for exceptions escaping detached tasks.
    void set_exception_handler(exception_handler handler) { m_exception_handler = std::move(handler); }

    /// The loop running on this thread, or nullptr.
    static event_loop* current() noexcept { return t_current_loop; }

    /// "epoll" or "poll".
    static constexpr const char* backend() noexcept { return detail::reactor::name; }

    /// Spawned tasks that have not finished yet.
    std::size_t task_count() const noexcept { return m_roots.size(); }
    /// Timers currently armed.
    std::size_t timer_count() const noexcept { return m_timers.size(); }

    /// Call before closing an fd that was awaited with wait_readable/wait_writable: a waiter
    /// still suspended on it resumes with std::system_error(ECANCELED), and the reactor
    /// forgets the fd, so a new fd with the same number starts clean.
    void forget(int fd) noexcept;

    /// For a listening socket that loops in other processes watch too (the same open file,
    /// inherited through fork: a prefork cluster's shared accept queue): a new connection
    /// wakes one of the loops waiting in the kernel instead of all of them (EPOLLEXCLUSIVE;
    /// the poll backend wakes all). Call before the first accept; `owner` is the socket's
    /// id (socket_base::id()). Forget it (close the socket) as soon as this loop stops
    /// accepting, or a wake-up meant for an accepting loop may be spent on this one.
    void watch_exclusive(int fd, std::uint64_t owner);

    // ---- Lag, utilization and blocking ------------------------------------------------------

    /// What this loop has measured about itself: loop delay and step durations per step,
    /// busy and idle time (see loop_stats). Loop thread only; copy it to keep a snapshot.
    const loop_stats& stats() const noexcept { return m_stats; }
    /// Starts the measurements afresh.
    void reset_stats() noexcept { m_stats = loop_stats{}; }

    /// Starts a watchdog thread that reports, once and while it is still running, any single
    /// step of this loop (a task running between two suspensions, or a callback) that runs
    /// longer than `threshold`, naming the task. The default report is one line on stderr:
    ///   tandem: event loop blocked for 212 ms by task 'compute' (server.cpp:41)
    /// `on_block` replaces it; it runs on the watchdog thread. Calling again replaces the
    /// watchdog. Call from the loop's thread (or before the loop runs).
    void watch_blocking(std::chrono::nanoseconds threshold, blocking_handler on_block = {});
    /// Stops the watchdog (no-op without one).
    void unwatch_blocking() noexcept;
    bool watching_blocking() const noexcept { return m_watchdog != nullptr; }

    /// A hint from code that expects a post() from another thread soon (offload does): if
    /// the loop runs out of work before `deadline`, it polls for the post until then instead
    /// of sleeping in the kernel, which saves the wake-up (tens of µs on a VM whose CPU went
    /// idle). Loop thread only.
    void expect_post_by(clock::time_point deadline) noexcept {
        m_spin_until = std::max(m_spin_until, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                  deadline.time_since_epoch()).count());
    }
    /// expect_post_by(now + d), where "now" is the start of the running step when the loop
    /// times its steps anyway: no clock read.
    void expect_post_within(std::chrono::nanoseconds d) noexcept {
        const std::int64_t now = timing_steps() && m_step_started != 0 ? m_step_started : detail::steady_now_ns();
        m_spin_until = std::max(m_spin_until, now + d.count());
    }

    // ---- Hooks for tandem's own awaiters. Loop thread only. -------------------------------
    void schedule(std::coroutine_handle<> h, detail::task_context* ctx) noexcept override {
        m_ready.push(detail::ready_item{h, ctx, m_stamp});
    }
    /// Resumes `h` right now, inside the current step (a callback completing a wait): saves a
    /// trip through the ready queue.
    void resume_now(std::coroutine_handle<> h, detail::task_context* ctx) noexcept {
        set_current_task(ctx);
        h.resume();
        set_current_task(nullptr);
    }
    void add_timer(detail::timer_node& node) { m_timers.push(node); }
    void remove_timer(detail::timer_node& node) noexcept { m_timers.erase(node); }
    bool consume_readiness(int fd, bool write) noexcept;
    void add_io_waiter(detail::io_waiter& w);
    void remove_io_waiter(detail::io_waiter& w) noexcept;
    void add_wake_listener(detail::wake_listener& l) noexcept { m_wake_listeners.push_back(l); }
    int wakeup_write_fd() const noexcept { return m_wakeup.write_fd(); }
    void start_root(detail::root_base& r) noexcept {
        m_roots.push_back(r);
        schedule(r.frame(), &r);
    }
    void report_unhandled(std::exception_ptr e, const detail::task_context& ctx) noexcept;
    void set_current_task(detail::task_context* ctx) noexcept {
        m_current_task = ctx;
        if (m_watchdog) m_probe.switch_to(identity_of(ctx));
    }
    /// A root is about to be deleted (the watchdog may be reading its name).
    void retire_root(const detail::task_context& root) noexcept {
        if (m_watchdog) m_probe.retire(&root);
    }
    /// Makes the current turn skip its reactor wait (run(task)'s main task has finished).
    void interrupt_wait() noexcept { m_interrupted = true; }
    /// The task whose code is running right now (nullptr between tasks).
    const detail::task_context* current_task() const noexcept { return m_current_task; }

private:
    /// Makes this the current loop of the thread for a scope (different loops may nest:
    /// sync_wait inside a task), and refuses to run a loop that is already running.
    class current_scope {
    public:
        explicit current_scope(event_loop* loop) : m_loop(loop), m_previous(t_current_loop) {
            if (loop->m_running) throw std::logic_error("tandem: event_loop::run called while the loop is running");
            loop->m_running = true;
            enter(loop);
        }
        ~current_scope() {
            m_loop->m_running = false;
            enter(m_previous);
        }

    private:
        event_loop* m_loop;
        static void enter(event_loop* loop) noexcept {
            t_current_loop = loop;
            scheduler::set_current(loop);
        }
        event_loop* m_previous;
    };

    void post_erased(detail::unique_function fn);
    void turn();
    /// Polls for an expected post() until `until` (ns); true if one arrived.
    bool spin_for_post(std::int64_t until);
    void take_remote() noexcept;
    void begin_step(std::int64_t now, detail::task_context* ctx, bool callback) noexcept {
        if constexpr (detail::loop_stats_enabled) {
            if (m_step_started != 0) m_stats.steps.record(std::chrono::nanoseconds(now - m_step_started));
        }
        m_step_started = now;
        m_stamp = now;
        m_current_task = ctx;
        if (m_watchdog) m_probe.begin(now, identity_of(ctx), callback);
    }
    void end_steps(std::int64_t now) noexcept {
        if constexpr (detail::loop_stats_enabled) {
            if (m_step_started != 0) m_stats.steps.record(std::chrono::nanoseconds(now - m_step_started));
        }
        m_step_started = 0;
        m_stamp = now;
        m_current_task = nullptr;
        if (m_watchdog) m_probe.end();
    }
    void record_delay(std::int64_t now, std::int64_t ready_at) noexcept {
        // Work queued before run() started waited for the loop, not in it.
        m_stats.delay.record(std::chrono::nanoseconds(now - std::max(ready_at, m_run_started)));
    }
    void mark_run_start() noexcept {
        m_last_mark = 0; // time outside run() is not the loop's busy time
        m_run_started = detail::steady_now_ns();
    }
    bool timing_steps() const noexcept { return detail::loop_stats_enabled || m_watchdog != nullptr; }
    /// The root whose name and spawn site describe ctx (nullptr if it has none).
    static const detail::task_context* identity_of(const detail::task_context* ctx) noexcept {
        while (ctx && !ctx->is_root()) ctx = ctx->parent();
        return ctx;
    }
    void expire_timers(clock::time_point now) noexcept;
    void run_ready_batch();
    void run_callback(detail::posted_callback cb) noexcept;
    std::optional<std::chrono::nanoseconds> poll_timeout() noexcept;
    void on_fd_event(int fd, bool readable, bool writable) noexcept;
    void on_wakeup() noexcept;
    void rethrow_unhandled();
    /// One direction of an fd became ready: finish its waiter's operation (it may ask to keep
    /// waiting), or remember the edge for the next wait.
    void on_ready(detail::io_waiter*& waiter, bool& remembered) noexcept {
        detail::io_waiter* w = waiter;
        if (!w) {
            remembered = true;
            return;
        }
        if (w->perform && !w->perform(w)) return; // EAGAIN again: stay registered
        waiter = nullptr;
        complete_io(*w);
    }
    void complete_io(detail::io_waiter& w) noexcept {
        if (w.context) w.context->disarm();
        schedule(w.handle, w.context);
    }

    inline static thread_local event_loop* t_current_loop = nullptr;

    detail::ring_queue<detail::ready_item> m_ready;
    detail::ring_queue<detail::posted_callback> m_callbacks;
    detail::timer_heap m_timers;
    detail::reactor m_reactor;
    detail::wakeup m_wakeup;
    std::vector<detail::fd_state> m_fds;
    detail::intrusive_list<detail::root_base> m_roots;
    detail::intrusive_list<detail::wake_listener> m_wake_listeners;
    detail::task_context* m_current_task = nullptr;

    loop_stats m_stats;
    std::int64_t m_stamp = 0;        // ready_at for work queued now (ns)
    std::int64_t m_step_started = 0; // 0 outside a batch of steps
    std::int64_t m_last_mark = 0;    // end of the last reactor wait: busy time starts here
    std::int64_t m_spin_until = 0;
    std::int64_t m_run_started = 0;
    unsigned m_polls_skipped = 0;
    static constexpr unsigned max_polls_skipped = 8;
    detail::step_probe m_probe;
    std::unique_ptr<detail::blocking_watchdog> m_watchdog;

    std::mutex m_remote_mutex;
    std::vector<detail::unique_function> m_remote;   // guarded by m_remote_mutex
    std::vector<detail::unique_function> m_remote_spare;
    std::atomic<bool> m_wake_pending{false};
    std::atomic<bool> m_spinning{false}; // polling for a post: posters need not signal
    std::atomic<bool> m_stop_requested{false};

    exception_handler m_exception_handler;
    std::exception_ptr m_unhandled;
    bool m_destroying = false;
    bool m_interrupted = false;
    bool m_running = false;
};

/// The loop running on this thread. Throws std::logic_error outside a running loop.
inline event_loop& this_loop() {
    event_loop* loop = event_loop::current();
    if (!loop) throw std::logic_error("tandem: no event loop is running on this thread");
    return *loop;
}

/// Runs a task to completion on a fresh event loop on this thread and returns its value.
template <class T>
T sync_wait(task<T> t, source_location where = source_location::current()) {
    event_loop loop;
    return loop.run(std::move(t), where);
}

/// Awaitable returned by wait_readable / wait_writable.
class fd_wait : detail::io_waiter {
public:
    fd_wait(event_loop& loop, int fd, bool write) noexcept : m_loop(&loop) {
        this->fd = fd;
        this->write = write;
        on_cancel = &cancel;
    }
    fd_wait(const fd_wait&) = delete;
    fd_wait& operator=(const fd_wait&) = delete;
    ~fd_wait() { m_loop->remove_io_waiter(*this); }

    bool await_ready() noexcept { return m_loop->consume_readiness(fd, write); }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        context = detail::context_of(h);
        if (context && context->cancel_requested()) {
            cancelled = true;
            return false;
        }
        handle = h;
        m_loop->add_io_waiter(*this);
        if (context) context->arm(this);
        return true;
    }
    void await_resume() const {
        if (cancelled) throw tandem::cancelled{};
        if (aborted) throw std::system_error(ECANCELED, std::system_category(), "wait on a forgotten fd");
    }

private:
    static void cancel(detail::cancel_slot* slot) noexcept {
        auto* self = static_cast<fd_wait*>(slot);
        self->m_loop->remove_io_waiter(*self);
        self->cancelled = true;
        self->m_loop->schedule(self->handle, self->context);
    }
    event_loop* m_loop;
};

/// Suspends until `fd` is readable (or has an error/hang-up). The fd should be non-blocking;
/// only one task may wait per direction of an fd. Cancellable. Call this_loop().forget(fd)
/// before closing an fd you waited on.
[[nodiscard]] inline fd_wait wait_readable(int fd) { return fd_wait(this_loop(), fd, false); }
/// Suspends until `fd` is writable (or has an error/hang-up). See wait_readable.
[[nodiscard]] inline fd_wait wait_writable(int fd) { return fd_wait(this_loop(), fd, true); }

/// Awaitable returned by yield().
class yield_awaiter {
public:
    bool await_ready() const noexcept { return false; }
    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> h) {
        this_loop().schedule(h, detail::context_of(h));
    }
    void await_resume() const noexcept {}
};

/// Lets the other ready tasks and I/O run before continuing (Node's setImmediate,
/// asyncio.sleep(0)). The way to stay responsive inside a long loop that never suspends.
[[nodiscard]] inline yield_awaiter yield() noexcept { return {}; }

// ============================================================================================
// Implementation
// ============================================================================================

namespace detail {

inline bool root_base::worth_reporting(const std::exception_ptr& e) const noexcept {
    if (!e || m_abandoned) return false;
    // A task that was asked to stop and stopped is not a failure.
    if (cancel_requested()) {
        try {
            std::rethrow_exception(e);
        } catch (const tandem::cancelled&) {
            return false;
        } catch (...) {
        }
    }
    return true;
}

inline std::coroutine_handle<> root_base::finish() noexcept {
    m_done = true;
    if (m_is_run_main) m_loop->interrupt_wait();
    static_cast<list_hook&>(*this).unlink();
    std::coroutine_handle<> next = on_finished();
    release(); // may delete this, and with it the frame we are finishing: allowed at final suspend
    return next;
}

inline std::coroutine_handle<> root_base::on_finished() noexcept {
    if (join_waiter* w = std::exchange(m_joiner, nullptr)) {
        if (w->context) w->context->disarm();
        m_loop->set_current_task(w->context);
        return w->handle;
    }
    if (!m_has_handle) {
        if (std::exception_ptr e = exception(); worth_reporting(e)) m_loop->report_unhandled(e, *this);
    }
    return std::noop_coroutine();
}

inline void root_base::release() noexcept {
    if (--m_refs != 0) return;
    m_loop->retire_root(*this);
    delete this;
}

inline void root_base::drop_handle(bool observed) noexcept {
    m_has_handle = false;
    if (m_done && !observed && !m_abandoned) { // an abandoned frame is gone: nothing to report
        if (std::exception_ptr e = exception(); worth_reporting(e)) m_loop->report_unhandled(e, *this);
    }
    release();
}

} // namespace detail

inline event_loop::event_loop() { m_reactor.watch(m_wakeup.read_fd(), true, false); }

inline event_loop::~event_loop() {
    m_watchdog.reset();
    // A thread still inside post() or stop() finishes its critical section (and its eventfd
    // write) before anything here goes away.
    { std::lock_guard drain(m_remote_mutex); }
    m_destroying = true;
    // Destroying a root's frame destroys the coroutines it awaits; their awaiters unhook
    // themselves from timers, fds and primitives. Nothing here resumes anything.
    while (!m_roots.empty()) {
        detail::root_base& r = m_roots.pop_front();
        r.abandon();
        r.release();
    }
    m_ready.clear();
    m_callbacks.clear();
}

template <class T>
T event_loop::run(task<T> main, source_location where) {
    current_scope scope(this);
    mark_run_start();
    auto* r = new detail::root<T>(*this, std::move(main), "main", where);
    r->add_handle();
    r->m_is_run_main = true;
    struct handle_guard {
        detail::root<T>* r;
        bool observed = false;
        ~handle_guard() { r->drop_handle(observed); }
    } guard{r};
    start_root(*r);
    while (!r->done()) {
        rethrow_unhandled();
        turn();
    }
    m_interrupted = false;
    rethrow_unhandled();
    guard.observed = true;
    return r->result();
}

inline void event_loop::run() {
    current_scope scope(this);
    mark_run_start();
    while (!m_stop_requested.exchange(false, std::memory_order_acq_rel)) {
        rethrow_unhandled();
        turn();
    }
    rethrow_unhandled();
}

inline void event_loop::run_once() {
    current_scope scope(this);
    turn();
    rethrow_unhandled();
}

inline void event_loop::turn() {
    const clock::time_point started = clock::now();
    if (m_last_mark == 0) m_last_mark = started.time_since_epoch().count();
    expire_timers(started);
    run_ready_batch();

    auto timeout = poll_timeout();
    const bool spin = m_spin_until != 0 && timeout != std::chrono::nanoseconds::zero();
    // m_stamp is the turn's start or the end of its batch of steps: fresh enough, no clock read.
    const std::int64_t waiting = m_stamp;
    if (spin && m_spin_until > waiting) {
        std::int64_t limit = m_spin_until;
        if (timeout) limit = std::min(limit, waiting + timeout->count()); // a timer is due first
        if (spin_for_post(limit)) {
            // The post we waited for is here and nothing else was ready a moment ago: run it
            // without a reactor syscall, but poll I/O at least every few turns.
            if (m_polls_skipped < max_polls_skipped) {
                ++m_polls_skipped;
                const std::int64_t now = detail::steady_now_ns();
                m_stats.busy += std::chrono::nanoseconds(waiting - m_last_mark);
                m_stats.idle += std::chrono::nanoseconds(now - waiting);
                m_last_mark = now;
                ++m_stats.turns;
                return;
            }
            timeout = poll_timeout();
        }
    }
    m_polls_skipped = 0;
    if constexpr (!detail::loop_stats_enabled) {
        m_reactor.wait(timeout, [this](int fd, bool readable, bool writable) noexcept {
            on_fd_event(fd, readable, writable);
        });
        return;
    }
    bool noticed = false;
    std::int64_t woke = 0;
    m_reactor.wait(timeout, [&](int fd, bool readable, bool writable) noexcept {
        if (!noticed) {
            noticed = true;
            woke = detail::steady_now_ns();
            m_stamp = woke; // I/O reported now is runnable from now
        }
        on_fd_event(fd, readable, writable);
    });
    if (!noticed) woke = detail::steady_now_ns();
    m_stamp = woke;
    m_stats.busy += std::chrono::nanoseconds(waiting - m_last_mark);
    m_stats.idle += std::chrono::nanoseconds(woke - waiting);
    m_last_mark = woke; // dispatching I/O counts as busy, in the next turn's share
    ++m_stats.turns;
}

inline bool event_loop::spin_for_post(std::int64_t until) {
    // Seen by post(): while set, a poster need not write the eventfd because we look at
    // m_wake_pending ourselves. Clearing it and then re-reading m_wake_pending (both seq_cst,
    // against the poster's exchange-then-load) closes the race with a post that just missed.
    m_spinning.store(true, std::memory_order_seq_cst);
    bool arrived = false;
    for (unsigned i = 1;; ++i) {
        if (m_wake_pending.load(std::memory_order_acquire)) {
            arrived = true;
            break;
        }
        if (detail::steady_now_ns() >= until) break;
        // Every few rounds look at I/O too: a socket must not wait for the whole spin.
        if (i % 16 == 0 && m_reactor.has_events_now()) break;
        // Yield rather than pause: when the worker shares this CPU it needs it to finish.
        std::this_thread::yield();
    }
    m_spinning.store(false, std::memory_order_seq_cst);
    if (!arrived) arrived = m_wake_pending.load(std::memory_order_seq_cst);
    if (!arrived) return false;
    m_stamp = detail::steady_now_ns();
    take_remote();
    return true;
}

inline void event_loop::expire_timers(clock::time_point now) noexcept {
    while (!m_timers.empty() && m_timers.next_deadline() <= now) {
        detail::timer_node& node = m_timers.pop();
        m_stamp = node.deadline.time_since_epoch().count(); // a timer's work is due at its deadline
        node.on_expire(&node);
    }
    m_stamp = now.time_since_epoch().count();
}

inline void event_loop::run_ready_batch() {
    // Only what is ready now: work queued by this batch waits for the next turn, so a task
    // that keeps yielding cannot starve I/O and timers.
    std::size_t n = m_ready.size();
    if (n == 0 && m_callbacks.empty()) return;
    if (!timing_steps()) {
        for (; n > 0 && !m_ready.empty(); --n) {
            detail::ready_item item = m_ready.pop();
            m_current_task = item.context;
            item.handle.resume();
        }
        m_current_task = nullptr;
        for (n = m_callbacks.size(); n > 0 && !m_callbacks.empty(); --n) run_callback(m_callbacks.pop());
        return;
    }
    // Work a step queues cannot run before the step ends: its delay counts from then. The
    // next clock read (the next step's start) is that moment; stamp what the step queued.
    std::size_t fresh_ready = 0, fresh_callbacks = 0;
    auto next_step = [&]() noexcept {
        const std::int64_t now = detail::steady_now_ns();
        for (; fresh_ready > 0; --fresh_ready) m_ready.from_back(fresh_ready).ready_at = now;
        for (; fresh_callbacks > 0; --fresh_callbacks) m_callbacks.from_back(fresh_callbacks).ready_at = now;
        return now;
    };
    auto count_fresh = [&](std::size_t ready_before, std::size_t callbacks_before) noexcept {
        fresh_ready = m_ready.size() - ready_before;
        fresh_callbacks = m_callbacks.size() - callbacks_before;
    };
    for (; n > 0 && !m_ready.empty(); --n) {
        detail::ready_item item = m_ready.pop();
        const std::int64_t now = next_step();
        if constexpr (detail::loop_stats_enabled) record_delay(now, item.ready_at);
        begin_step(now, item.context, false);
        const std::size_t ready_before = m_ready.size(), callbacks_before = m_callbacks.size();
        item.handle.resume();
        count_fresh(ready_before, callbacks_before);
    }
    m_current_task = nullptr;
    for (n = m_callbacks.size(); n > 0 && !m_callbacks.empty(); --n) {
        detail::posted_callback cb = m_callbacks.pop();
        const std::int64_t now = next_step();
        if constexpr (detail::loop_stats_enabled) record_delay(now, cb.ready_at);
        begin_step(now, nullptr, true);
        const std::size_t ready_before = m_ready.size(), callbacks_before = m_callbacks.size();
        run_callback(std::move(cb));
        count_fresh(ready_before, callbacks_before);
    }
    end_steps(next_step());
}

inline void event_loop::run_callback(detail::posted_callback cb) noexcept {
    try {
        cb.fn();
    } catch (...) {
        detail::task_context none;
        report_unhandled(std::current_exception(), none);
    }
}

inline std::optional<std::chrono::nanoseconds> event_loop::poll_timeout() noexcept {
    using std::chrono::nanoseconds;
    if (!m_ready.empty() || !m_callbacks.empty() || m_interrupted ||
        m_stop_requested.load(std::memory_order_relaxed) || m_unhandled)
        return nanoseconds::zero();
    if (m_timers.empty()) return std::nullopt;
    const auto left = m_timers.next_deadline() - clock::now();
    return left.count() > 0 ? std::chrono::duration_cast<nanoseconds>(left) : nanoseconds::zero();
}

inline void event_loop::on_fd_event(int fd, bool readable, bool writable) noexcept {
    if (fd == m_wakeup.read_fd()) {
        on_wakeup();
        return;
    }
    if (static_cast<std::size_t>(fd) >= m_fds.size()) return;
    detail::fd_state& s = m_fds[fd];
    if (readable) on_ready(s.reader, s.readable);
    if (writable) on_ready(s.writer, s.writable);
    m_reactor.watch(fd, s.reader != nullptr, s.writer != nullptr); // poll: drop satisfied interest
}

inline void event_loop::on_wakeup() noexcept {
#if defined(TANDEM_REACTOR_POLL) || !defined(__linux__)
    m_wakeup.drain(); // level-triggered, or a pipe that would fill up: empty it
#else
    // Edge-triggered epoll reports every eventfd write, even when the counter is already
    // non-zero, and the 64-bit counter cannot fill up: skipping the read saves a syscall
    // per cross-thread wake-up.
#endif
    take_remote();
    m_wake_listeners.for_each([](detail::wake_listener& l) { l.on_wake(); });
}

inline void event_loop::take_remote() noexcept {
    // Clear before taking the queue: a post racing with us either lands in this swap or
    // sees the flag clear and signals again.
    m_wake_pending.store(false, std::memory_order_seq_cst);
    {
        std::lock_guard lock(m_remote_mutex);
        m_remote_spare.swap(m_remote);
    }
    for (detail::unique_function& fn : m_remote_spare) m_callbacks.push(detail::posted_callback{std::move(fn), m_stamp});
    m_remote_spare.clear();
}

inline void event_loop::post_erased(detail::unique_function fn) {
    if (t_current_loop == this) {
        m_callbacks.push(detail::posted_callback{std::move(fn), m_stamp});
        return;
    }
    // Signal inside the critical section: the loop can only take fn through this mutex, so
    // once it has, this thread is done touching the loop, and the loop may be destroyed (a
    // thread_pool job's completion is often the last thing a loop waits for).
    std::lock_guard lock(m_remote_mutex);
    m_remote.push_back(std::move(fn));
    if (!m_wake_pending.exchange(true, std::memory_order_seq_cst)) {
        if (!m_spinning.load(std::memory_order_seq_cst)) m_wakeup.signal();
    }
}

inline void event_loop::watch_blocking(std::chrono::nanoseconds threshold, blocking_handler on_block) {
    if (threshold <= std::chrono::nanoseconds::zero())
        throw std::invalid_argument("tandem: watch_blocking needs a positive threshold");
    m_watchdog.reset();
    m_watchdog = std::make_unique<detail::blocking_watchdog>(m_probe, threshold, std::move(on_block));
}

inline void event_loop::unwatch_blocking() noexcept { m_watchdog.reset(); }

inline void event_loop::stop() noexcept {
    if (t_current_loop == this) {
        m_stop_requested.store(true, std::memory_order_release);
        return;
    }
    std::lock_guard lock(m_remote_mutex); // see post_erased: the loop may die right after
    m_stop_requested.store(true, std::memory_order_release);
    m_wakeup.signal();
}

inline bool event_loop::consume_readiness(int fd, bool write) noexcept {
    if (fd < 0 || static_cast<std::size_t>(fd) >= m_fds.size()) return false;
    bool& ready = write ? m_fds[fd].writable : m_fds[fd].readable;
    return std::exchange(ready, false);
}

inline void event_loop::add_io_waiter(detail::io_waiter& w) {
    if (w.fd < 0) throw std::system_error(EBADF, std::system_category(), "wait on an invalid fd");
    if (static_cast<std::size_t>(w.fd) >= m_fds.size()) m_fds.resize(static_cast<std::size_t>(w.fd) + 1);
    detail::fd_state& s = m_fds[w.fd];
    if (w.owner != 0 && s.owner != w.owner) {
        // This fd number belonged to another (closed) socket: start from a clean registration.
        forget(w.fd);
        s.owner = w.owner;
    }
    detail::io_waiter*& slot = w.write ? s.writer : s.reader;
    if (slot) throw std::logic_error("tandem: two tasks wait for the same direction of one fd");
    slot = &w;
    try {
        m_reactor.watch(w.fd, s.reader != nullptr, s.writer != nullptr);
    } catch (...) {
        slot = nullptr;
        throw;
    }
}

inline void event_loop::remove_io_waiter(detail::io_waiter& w) noexcept {
    if (w.fd < 0 || static_cast<std::size_t>(w.fd) >= m_fds.size()) return;
    detail::fd_state& s = m_fds[w.fd];
    detail::io_waiter*& slot = w.write ? s.writer : s.reader;
    if (slot != &w) return;
    slot = nullptr;
    m_reactor.watch(w.fd, s.reader != nullptr, s.writer != nullptr);
}

inline void event_loop::forget(int fd) noexcept {
    if (fd < 0) return;
    if (static_cast<std::size_t>(fd) < m_fds.size()) {
        detail::fd_state& s = m_fds[fd];
        for (detail::io_waiter* w : {std::exchange(s.reader, nullptr), std::exchange(s.writer, nullptr)}) {
            if (!w) continue;
            w->aborted = true;
            complete_io(*w);
        }
        s = detail::fd_state{};
    }
    m_reactor.forget(fd);
}

inline void event_loop::watch_exclusive(int fd, std::uint64_t owner) {
    if (fd < 0) throw std::system_error(EBADF, std::system_category(), "watch_exclusive on an invalid fd");
    if (static_cast<std::size_t>(fd) >= m_fds.size()) m_fds.resize(static_cast<std::size_t>(fd) + 1);
    forget(fd);
    m_fds[fd].owner = owner; // add_io_waiter keeps a registration whose owner matches
    m_reactor.watch_exclusive(fd);
}

inline void event_loop::report_unhandled(std::exception_ptr e, const detail::task_context& ctx) noexcept {
    if (m_destroying) return;
    if (m_exception_handler) {
        try {
            m_exception_handler(e, task_info{ctx.name(), ctx.where()});
            return;
        } catch (...) {
            e = std::current_exception(); // a throwing handler escalates to run()
        }
    }
    if (!m_unhandled) m_unhandled = e;
}

inline void event_loop::rethrow_unhandled() {
    if (m_unhandled) std::rethrow_exception(std::exchange(m_unhandled, nullptr));
}

} // namespace tandem
