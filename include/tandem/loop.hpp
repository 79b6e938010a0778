// tandem — event_loop: one thread's ready queue, timers, reactor, cross-thread post and the
// bookkeeping of spawned tasks.
//
// Layer: loop. Knows tasks (core) and the reactor (detail); knows nothing of sockets.
#pragma once

#include "tandem/config.hpp"
#include "tandem/detail/cancellable_wait.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/fd_table.hpp"
#include "tandem/detail/intrusive_list.hpp"
#include "tandem/detail/reactor.hpp"
#include "tandem/detail/ring_queue.hpp"
#include "tandem/detail/scheduler.hpp"
#include "tandem/detail/spawned_task.hpp"
#include "tandem/detail/spin.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/detail/timer_heap.hpp"
#include "tandem/detail/unique_function.hpp"
#include "tandem/detail/wakeup.hpp"
#include "tandem/error.hpp"
#include "tandem/lag.hpp"
#include "tandem/task.hpp"

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
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

class loop_access;

/// Something that must look at the world whenever the loop's wake-up fd fires (signals).
class wake_listener : public list_hook {
public:
    virtual void on_wake() noexcept = 0;

protected:
    ~wake_listener() = default;
};

// ready_at (for loop_stats::delay): when the work became runnable, in steady_clock ns, or one
// of the two batch tokens below for work queued while a batch of ready work runs (it becomes
// runnable when that batch ends, a time known only then).
struct ready_item {
    std::coroutine_handle<> handle;
    task_context* context = nullptr;
    std::int64_t ready_at = 0;
};

struct posted_callback {
    unique_function fn;
    std::int64_t ready_at = 0;
};

inline std::int64_t steady_now_ns() noexcept {
    return std::chrono::steady_clock::now().time_since_epoch().count();
}

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
    /// stop() (from any thread) cancels `main`: run returns what main returns then, which for a
    /// task that does not catch it is a tandem::cancelled exception.
    template <class T>
    T run(task<T> main, source_location where = source_location::current());

    /// Runs until stop() is called (from any thread, or from a task).
    /// (run and run_once are member templates only so that the loop's turn is compiled only
    /// in the translation units that run a loop; calls read as before.)
    template <class = void>
    void run();

    /// One turn: expire timers, run a bounded batch of ready work, wait for I/O (no longer
    /// than the next timer, not at all if work is ready).
    template <class = void>
    void run_once();

    /// Queues fn to run on the loop thread. Thread-safe; wakes the loop if it sleeps. Posted
    /// from another running loop, it also makes that loop poll for an answer for up to
    /// 20 µs before it sleeps (a request usually gets one), which spares both a kernel wake-up;
    /// a loop whose posts go unanswered polls ever more rarely (down to one posting turn in 64).
    template <class F>
    void post(F&& fn) {
        post_erased(detail::unique_function(static_cast<F&&>(fn)));
    }

    /// Makes run() return after the current turn, and run(task) cancel its main task (see
    /// run). Thread-safe. A stop requested while the loop is not running ends the next run.
    void stop() noexcept;

    /// Failures of detached tasks that the default policy has not rethrown yet. Each run(),
    /// run(task) and run_once() rethrows the oldest before it does anything else, so two tasks
    /// failing in one turn surface one per call; take_unhandled() collects them without
    /// throwing (nullptr when none). At most 1024 are kept; beyond that they are counted, and
    /// a loop destroyed with failures nobody took reports them on stderr.
    std::size_t unhandled_count() const noexcept { return m_unhandled.size(); }
    std::exception_ptr take_unhandled() noexcept;

    /// Replaces the policy for exceptions escaping detached tasks.
    void set_exception_handler(exception_handler handler) noexcept {
        m_exception_handler.swap(handler); // the old one goes with `handler`; swap compiles less than operator=
    }

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

    /// What this loop has measured about itself: each step's delay, each batch's duration,
    /// busy and idle time (see loop_stats). Loop thread only; copy it to keep a snapshot.
    /// Read by a step, it holds the delays of every step started so far, its own included.
    const loop_stats& stats() const noexcept;
    /// Starts the measurements afresh, from now: called by a step, the rest of the batch
    /// it runs in is measured, what ran before it is not.
    void reset_stats() noexcept;

    /// Starts a watchdog thread that reports, once and while it is still running, any single
    /// step of this loop (a task running between two suspensions, or a callback) that runs
    /// longer than `threshold`, naming the task. The default report is one line on stderr:
    ///   tandem: event loop blocked for 212 ms by task 'compute' (server.cpp:41)
    /// `on_block` replaces it; it runs on the watchdog thread. Calling again replaces the
    /// watchdog. Call from the loop's thread (or before the loop runs).
    /// (A member template only so that a translation unit that never calls it compiles no
    /// watchdog; calls read as before.)
    template <class = void>
    void watch_blocking(std::chrono::nanoseconds threshold, blocking_handler on_block = {});
    /// Stops the watchdog (no-op without one).
    void unwatch_blocking() noexcept;
    bool watching_blocking() const noexcept { return m_watchdog != nullptr; }

private:
    // ---- Hooks for tandem's own awaiters: reached through detail::hooks(loop), never by
    // users. Loop thread only. ----------------------------------------------------------------
    friend class detail::loop_access;

    /// A hint from code that expects a post() from another thread soon (offload does): if
    /// the loop runs out of work before `deadline`, it polls for the post until then instead
    /// of sleeping in the kernel, which saves the wake-up (tens of µs on a VM whose CPU went
    /// idle). Loop thread only.
    void expect_post_by(clock::time_point deadline) noexcept {
        m_spin_until = std::max(m_spin_until, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                  deadline.time_since_epoch()).count());
    }
    /// Like expect_post_by, counted from the end of the current batch of ready work (the post
    /// cannot be run before then anyway): no clock read.
    void expect_post_within(std::chrono::nanoseconds d) noexcept { m_spin_for = std::max(m_spin_for, d.count()); }

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
    template <class = void> // the timer queue's push is compiled only where a timer is armed
    void add_timer(detail::timer_node& node) { m_timers.push(node); }
    void remove_timer(detail::timer_node& node) noexcept { m_timers.erase(node); }
    bool consume_readiness(int fd, bool write) noexcept;
    /// The peer hung up (end of stream or error reported for fd): a reader must not wait for an edge.
    bool hung_up(int fd) const noexcept { return m_reactor.hung_up(fd); }
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
    /// Cooperative I/O budget (tokio's coop): a socket operation that completed without
    /// suspending takes one unit; with none left the task goes back through the ready queue
    /// (timers, I/O and other tasks run first). Each step starts with io_budget units, so a
    /// socket that always has data cannot keep its reader on the CPU for good.
    bool take_io_budget() noexcept {
        if (m_io_budget == 0) return false;
        --m_io_budget;
        return true;
    }
    static constexpr unsigned io_budget = 128;
    static constexpr std::size_t prefetch_ahead = 4; // steps of a batch between a frame's prefetch and its resume
    /// Treats one direction of `fd` as ready at the start of the next turn: its waiter (if
    /// one is still registered) retries its operation then. What a task out of I/O budget
    /// waits for.
    template <class = void> // compiled only where a socket runs
    void retry_io_soon(int fd, bool write) { m_io_retry.push(io_retry{fd, write}); }
    /// Makes the current turn skip its reactor wait (run(task)'s main task has finished).
    void interrupt_wait() noexcept { m_interrupted = true; }
    /// The task whose code is running right now (nullptr between tasks).
    const detail::task_context* current_task() const noexcept { return m_current_task; }

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

    template <class = void> // compiled only where something is posted
    void post_erased(detail::unique_function fn);
    // The turn and its phases are templates like run(): compiled only where a loop runs.
    template <class = void>
    void turn();
    /// Turn phase 3: waits for work; returns when it woke (steady ns).
    template <class = void>
    std::int64_t wait_for_work();
    /// Polls for an expected post() until `until` (ns); true if one arrived.
    template <class = void>
    bool spin_for_post(std::int64_t until);
    template <class = void>
    void take_remote() noexcept;
    class batch_delays;
    batch_delays* m_batch = nullptr; // the batch running now
    void mark_run_start() noexcept {
        m_last_mark = 0; // time outside run() is not the loop's busy time
        m_woke = 0;      // nor is the last wake-up this turn's start
        m_run_started = detail::steady_now_ns();
    }
    /// The root whose name and spawn site describe ctx (nullptr if it has none).
    static const detail::task_context* identity_of(const detail::task_context* ctx) noexcept {
        while (ctx && !ctx->is_root()) ctx = ctx->parent();
        return ctx;
    }
    template <class = void>
    void expire_timers(clock::time_point now) noexcept;
    template <class = void>
    void run_ready_batch(std::int64_t started);
    template <class = void>
    void run_callback(detail::posted_callback& cb) noexcept;
    template <class Deferred = void> // dependent: std::optional is compiled only where a loop runs
    detail::dependent_t<std::optional<std::chrono::nanoseconds>, Deferred> poll_timeout() noexcept;
    template <class = void>
    void on_fd_event(int fd, bool readable, bool writable) noexcept;
    template <class = void>
    void on_wakeup() noexcept;
    void rethrow_unhandled();
    void report_lost_failures() noexcept;
    void complete_io(detail::io_waiter* w) noexcept {
        if (w) schedule(w->complete(), w->context);
    }

    inline static thread_local event_loop* t_current_loop = nullptr;

    struct io_retry {
        int fd;
        bool write;
    };
    // The loop's queues are ring_queues, not std::vectors: std::vector's members are
    // constexpr, and this class's non-template code would compile them in every translation
    // unit that includes the loop (detail/dependent.hpp).
    detail::ring_queue<io_retry> m_io_retry;
    template <class = void>
    void retry_io() noexcept {
        // Those asked for until now; one asked for meanwhile waits for the next turn.
        for (std::size_t n = m_io_retry.size(); n > 0; --n) {
            const io_retry r = m_io_retry.pop();
            complete_io(m_fds.retry(r.fd, r.write));
        }
    }

    detail::ring_queue<detail::ready_item> m_ready;
    detail::ring_queue<detail::posted_callback> m_callbacks;
    detail::timer_heap m_timers;
    detail::reactor m_reactor;
    detail::wakeup m_wakeup;
    detail::fd_table m_fds;
    detail::intrusive_list<detail::root_base> m_roots;
    detail::intrusive_list<detail::wake_listener> m_wake_listeners;
    detail::task_context* m_current_task = nullptr;

    loop_stats m_stats;
    std::int64_t m_stamp = 0;         // ready_at for work queued now (ns, or a batch token)
    std::int64_t m_woke = 0;          // when the last turn's wait ended (ns; 0: unknown, read the clock)
    std::int64_t m_batch_ended = 0;   // when the last batch of ready work ended (ns)
    std::uint64_t m_batches = 0;      // batches run: the parity picks the batch token
    std::int64_t m_last_mark = 0;     // end of the last reactor wait: busy time starts here
    std::int64_t m_spin_until = 0;
    std::int64_t m_spin_for = 0;      // expect_post_within, counted from the end of the batch
    std::int64_t m_run_started = 0;
    unsigned m_polls_skipped = 0;
    unsigned m_io_budget = io_budget;
    static constexpr unsigned max_polls_skipped = 8;
    static constexpr std::chrono::microseconds reply_spin{20};
    // The reply spin adapts: a loop whose posts go unanswered (fire and forget: logging, a
    // sink that never answers) would burn reply_spin of CPU per turn that posted. Each spin
    // that ends with no post doubles the number of posting turns that skip it (up to 63);
    // one that gets its answer resets it.
    bool m_reply_wanted = false;        // this turn posted to another loop
    bool m_reply_spinning = false;      // this turn's wait is a reply spin
    unsigned m_reply_misses = 0;        // reply spins in a row that got nothing
    unsigned m_reply_skip = 0;          // posting turns left that skip the reply spin
    static constexpr unsigned max_reply_misses = 6;
    void expect_reply() noexcept { m_reply_wanted = true; }
    void note_reply(bool answered) noexcept {
        if (answered) {
            m_reply_misses = 0;
            return;
        }
        m_reply_misses = std::min(m_reply_misses + 1, max_reply_misses);
        m_reply_skip = (1u << m_reply_misses) - 1;
    }
    detail::step_probe m_probe;
    // Owned (deleted by unwatch_blocking and the destructor). A raw pointer: a
    // std::unique_ptr member is instantiated with all its machinery in every translation unit.
    detail::watchdog_base* m_watchdog = nullptr;

    std::mutex m_remote_mutex;
    detail::ring_queue<detail::unique_function> m_remote; // guarded by m_remote_mutex
    detail::ring_queue<detail::unique_function> m_remote_spare;
    std::atomic<bool> m_wake_pending{false};
    std::atomic<bool> m_spinning{false}; // polling for a post: posters need not signal
    std::atomic<bool> m_stop_requested{false};
    std::atomic<unsigned> m_posters{0}; // threads inside post() or stop(): see post_erased
    struct poster_scope {
        explicit poster_scope(event_loop& l) noexcept : loop(l) { loop.m_posters.fetch_add(1, std::memory_order_relaxed); }
        ~poster_scope() { loop.m_posters.fetch_sub(1, std::memory_order_release); }
        poster_scope(const poster_scope&) = delete;
        poster_scope& operator=(const poster_scope&) = delete;
        event_loop& loop;
    };

    exception_handler m_exception_handler;
    detail::ring_queue<std::exception_ptr> m_unhandled; // oldest first; at most max_unhandled
    std::size_t m_unhandled_dropped = 0;
    static constexpr std::size_t max_unhandled = 1024;
    bool m_destroying = false;
    bool m_interrupted = false;
    bool m_running = false;
};

namespace detail {

/// The event loop's hooks for tandem's own awaiters and wings (ready queue, timers, fd
/// waiters, spawned-task records, the running task's identity, offload hints): private in
/// event_loop, reached as tandem::detail::hooks(loop).schedule(h, ctx). Not for users; the
/// loop thread only. See event_loop's private section for what each one does.
class loop_access {
public:
    explicit loop_access(event_loop& self) noexcept : m_self(&self) {}

    void schedule(std::coroutine_handle<> h, task_context* ctx) const noexcept { m_self->schedule(h, ctx); }
    void resume_now(std::coroutine_handle<> h, task_context* ctx) const noexcept { m_self->resume_now(h, ctx); }
    template <class = void>
    void add_timer(timer_node& node) const { m_self->add_timer(node); }
    void remove_timer(timer_node& node) const noexcept { m_self->remove_timer(node); }
    bool consume_readiness(int fd, bool write) const noexcept { return m_self->consume_readiness(fd, write); }
    bool hung_up(int fd) const noexcept { return m_self->hung_up(fd); }
    void add_io_waiter(io_waiter& w) const { m_self->add_io_waiter(w); }
    void remove_io_waiter(io_waiter& w) const noexcept { m_self->remove_io_waiter(w); }
    void add_wake_listener(wake_listener& l) const noexcept { m_self->add_wake_listener(l); }
    int wakeup_write_fd() const noexcept { return m_self->wakeup_write_fd(); }
    void start_root(root_base& r) const noexcept { m_self->start_root(r); }
    void report_unhandled(std::exception_ptr e, const task_context& ctx) const noexcept {
        m_self->report_unhandled(std::move(e), ctx);
    }
    void set_current_task(task_context* ctx) const noexcept { m_self->set_current_task(ctx); }
    void retire_root(const task_context& root) const noexcept { m_self->retire_root(root); }
    bool take_io_budget() const noexcept { return m_self->take_io_budget(); }
    template <class = void>
    void retry_io_soon(int fd, bool write) const { m_self->retry_io_soon(fd, write); }
    void interrupt_wait() const noexcept { m_self->interrupt_wait(); }
    const task_context* current_task() const noexcept { return m_self->current_task(); }
    void expect_post_by(event_loop::clock::time_point deadline) const noexcept { m_self->expect_post_by(deadline); }
    void expect_post_within(std::chrono::nanoseconds d) const noexcept { m_self->expect_post_within(d); }

private:
    event_loop* m_self;
};

inline loop_access hooks(event_loop& loop) noexcept { return loop_access(loop); }

} // namespace detail

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
class fd_wait : detail::cancellable_wait<fd_wait, detail::io_waiter> {
public:
    fd_wait(event_loop& loop, int fd, bool write) noexcept : m_loop(&loop) {
        this->fd = fd;
        this->write = write;
    }
    fd_wait(const fd_wait&) = delete;
    fd_wait& operator=(const fd_wait&) = delete;
    ~fd_wait() { tandem::detail::hooks(*m_loop).remove_io_waiter(*this); }

    bool await_ready() const noexcept { return false; }
    using cancellable_wait::await_suspend;
    void await_resume() const {
        throw_if_cancelled();
        if (aborted) throw std::system_error(ECANCELED, std::system_category(), "wait on a forgotten fd");
    }

private:
    friend cancellable_wait;
    bool start() {
        // A remembered edge is consumed here, after the cancellation check: a wait in a task
        // already cancelled must leave it for the next waiter.
        if (tandem::detail::hooks(*m_loop).consume_readiness(fd, write)) return false;
        tandem::detail::hooks(*m_loop).add_io_waiter(*this);
        return true;
    }
    bool stop() noexcept {
        tandem::detail::hooks(*m_loop).remove_io_waiter(*this);
        return true;
    }
    event_loop* m_loop;
};

/// Suspends until `fd` is readable (or has an error/hang-up). The fd should be non-blocking;
/// only one task may wait per direction of an fd. Cancel-safe (consumes nothing). Call this_loop().forget(fd)
/// before closing an fd you waited on.
[[nodiscard]] inline fd_wait wait_readable(int fd) { return fd_wait(this_loop(), fd, false); }
/// Suspends until `fd` is writable (or has an error/hang-up). See wait_readable.
[[nodiscard]] inline fd_wait wait_writable(int fd) { return fd_wait(this_loop(), fd, true); }

/// Awaitable returned by yield(): a cancellation point like every other suspension.
class yield_awaiter : detail::cancellable_wait<yield_awaiter> {
public:
    bool await_ready() const noexcept { return false; }
    using cancellable_wait::await_suspend;
    void await_resume() {
        complete(); // the wait ends when the ready queue reaches us
        throw_if_cancelled();
    }

private:
    friend cancellable_wait;
    bool start() {
        if (!resumer) throw std::logic_error("tandem: no event loop is running on this thread");
        resumer->schedule(handle, context); // stays armed while queued: a cancel marks it
        return true;
    }
    bool stop() noexcept {
        mark_cancelled(); // already queued: it throws when it runs
        return false;
    }
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
    if (m_is_run_main) tandem::detail::hooks(*m_loop).interrupt_wait();
    static_cast<list_hook&>(*this).unlink();
    std::coroutine_handle<> next = on_finished();
    release(); // may delete this, and with it the frame we are finishing: allowed at final suspend
    return next;
}

inline std::coroutine_handle<> root_base::on_finished() noexcept {
    if (join_waiter* w = std::exchange(m_joiner, nullptr)) {
        std::coroutine_handle<> next = w->complete();
        tandem::detail::hooks(*m_loop).set_current_task(w->context);
        return next;
    }
    if (!m_has_handle) {
        if (std::exception_ptr e = exception(); worth_reporting(e)) tandem::detail::hooks(*m_loop).report_unhandled(e, *this);
    }
    return std::noop_coroutine();
}

inline void root_base::release() noexcept {
    if (--m_refs != 0) return;
    tandem::detail::hooks(*m_loop).retire_root(*this);
    delete this;
}

inline void root_base::drop_handle(bool observed) noexcept {
    m_has_handle = false;
    if (m_done && !observed && !m_abandoned) { // an abandoned frame is gone: nothing to report
        if (std::exception_ptr e = exception(); worth_reporting(e)) tandem::detail::hooks(*m_loop).report_unhandled(e, *this);
    }
    release();
}

} // namespace detail

inline event_loop::event_loop() { m_reactor.watch(m_wakeup.read_fd(), true, false); }

inline event_loop::~event_loop() {
    delete std::exchange(m_watchdog, nullptr);
    // A thread still inside post() or stop() finishes (its eventfd write included) before
    // anything here goes away.
    while (m_posters.load(std::memory_order_acquire) != 0) std::this_thread::yield();
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
    report_lost_failures();
}

inline void event_loop::report_lost_failures() noexcept {
    // Failures nobody took (run() was not called again): say so rather than lose them.
    const std::size_t lost = m_unhandled.size() + m_unhandled_dropped;
    if (lost == 0) return;
    std::string what = "(not a std::exception)";
    try {
        if (!m_unhandled.empty()) std::rethrow_exception(m_unhandled.from_front(0));
    } catch (const std::exception& e) {
        what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "tandem: event loop destroyed with %zu unhandled task failure(s) never rethrown; first: %s\n",
                 lost, m_unhandled.empty() ? "(dropped)" : what.c_str());
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
        // stop() ends run(task) the structured way: main is cancelled and unwinds. The flag
        // is consumed, so a main that ignores the request keeps a quiet loop, never a spin.
        if (m_stop_requested.load(std::memory_order_relaxed) && m_stop_requested.exchange(false, std::memory_order_acq_rel))
            r->request_cancel();
        turn();
    }
    m_interrupted = false;
    rethrow_unhandled();
    guard.observed = true;
    return r->result();
}

template <class>
void event_loop::run() {
    current_scope scope(this);
    mark_run_start();
    while (!m_stop_requested.exchange(false, std::memory_order_acq_rel)) {
        rethrow_unhandled();
        turn();
    }
    rethrow_unhandled();
}

template <class>
void event_loop::run_once() {
    current_scope scope(this);
    mark_run_start(); // work queued since the last call waited for the caller, not in the loop
    turn();
    rethrow_unhandled();
}

// One turn, in the order libuv's uv_run runs its phases.
template <class>
void event_loop::turn() {
    // 1. Timers: everything due by the start of the turn. With statistics on, the last turn's
    //    wake-up read the clock a moment ago (run() goes straight from one turn to the next).
    const std::int64_t last_woke = m_woke;
    m_woke = 0;
    const clock::time_point started = last_woke != 0 ? clock::time_point(std::chrono::nanoseconds(last_woke)) : clock::now();
    if (m_last_mark == 0) m_last_mark = started.time_since_epoch().count();
    expire_timers(started);
    // 2. Ready work: retries owed to tasks that ran out of I/O budget, then the tasks and
    //    callbacks that are ready now (work they queue waits for the next turn).
    if (!m_io_retry.empty()) retry_io();
    run_ready_batch(started.time_since_epoch().count());
    // 3. Wait: for an expected post by spinning, else in the reactor, no longer than the next
    //    timer and not at all if work is ready; I/O it reports is queued for the next turn.
    //    m_stamp is the end of the batch: fresh enough, no clock read.
    const std::int64_t waiting = m_stamp;
    if (m_reply_wanted) { // post() to another loop in this turn: poll briefly for the answer
        m_reply_wanted = false;
        if (m_reply_skip == 0) {
            m_spin_for = std::max<std::int64_t>(m_spin_for, std::chrono::nanoseconds(reply_spin).count());
            m_reply_spinning = true;
        } else {
            --m_reply_skip;
        }
    }
    if (m_spin_for != 0) { // expect_post_within: from the end of the batch (without statistics, read it now)
        m_spin_until = std::max(m_spin_until, (detail::loop_stats_enabled ? waiting : detail::steady_now_ns()) + m_spin_for);
        m_spin_for = 0;
    }
    const std::int64_t woke = wait_for_work();
    m_woke = woke;
    m_reply_spinning = false;
    // 4. Accounting: the turn was busy until it waited, idle while it waited.
    if constexpr (detail::loop_stats_enabled) {
        m_stats.busy += std::chrono::nanoseconds(waiting - m_last_mark);
        m_stats.idle += std::chrono::nanoseconds(woke - waiting);
        m_last_mark = woke; // dispatching I/O counts as busy, in the next turn's share
        ++m_stats.turns;
    }
}

template <class Deferred>
std::int64_t event_loop::wait_for_work() {
    auto timeout = poll_timeout<Deferred>();
    if (m_spin_until != 0 && timeout != std::chrono::nanoseconds::zero() && m_spin_until > m_stamp) {
        std::int64_t limit = m_spin_until;
        if (timeout) limit = std::min(limit, m_stamp + timeout->count()); // a timer is due first
        if (spin_for_post(limit)) {
            // The post we waited for is here and nothing else was ready a moment ago: run it
            // without a reactor syscall, but poll I/O at least every few turns.
            if (m_polls_skipped < max_polls_skipped) {
                ++m_polls_skipped;
                return m_stamp; // spin_for_post stamped the arrival
            }
            timeout = poll_timeout<Deferred>();
        }
    }
    m_polls_skipped = 0;
    if constexpr (!detail::loop_stats_enabled) {
        m_reactor.wait(timeout, [this](int fd, bool readable, bool writable) noexcept {
            on_fd_event(fd, readable, writable);
        });
        return 0;
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
    return woke;
}

template <class>
bool event_loop::spin_for_post(std::int64_t until) {
    // Seen by post(): while set, a poster need not write the eventfd because we look at
    // m_wake_pending ourselves. Clearing it and then re-reading m_wake_pending (both seq_cst,
    // against the poster's exchange-then-load) closes the race with a post that just missed.
    m_spinning.store(true, std::memory_order_seq_cst);
    unsigned polls = 0;
    const auto deadline = clock::time_point(std::chrono::nanoseconds(until));
    // The shared policy yields rather than pauses: a worker sharing this CPU needs it to finish.
    const bool ended_early = detail::spin_until_ready(deadline, [&] {
        if (m_wake_pending.load(std::memory_order_acquire)) return true;
        // Every few rounds look at I/O too: a socket must not wait for the whole spin.
        return ++polls % 16 == 0 && m_reactor.has_events_now();
    });
    m_spinning.store(false, std::memory_order_seq_cst);
    const bool arrived = m_wake_pending.load(std::memory_order_seq_cst);
    // Only a spin that ran its course without a post is a miss (I/O may have cut it short).
    if (m_reply_spinning && (arrived || !ended_early)) note_reply(arrived);
    m_reply_spinning = false;
    if (!arrived) return false;
    m_stamp = detail::steady_now_ns();
    take_remote();
    return true;
}

template <class>
void event_loop::expire_timers(clock::time_point now) noexcept {
    while (detail::timer_node* due = m_timers.pop_if_due(now)) {
        detail::timer_node& node = *due;
        m_stamp = node.deadline.time_since_epoch().count(); // a timer's work is due at its deadline
        node.on_expire(&node);
    }
    m_stamp = now.time_since_epoch().count();
}

// The statistics read the clock per batch, not per step: a clock read costs as much as a whole
// step of a small task here (≈ 24 ns). Every step still records its delay, measured to the
// start of its batch, and equal delays in a row are recorded as one run (work queued together
// has one stamp), so a step pays a compare and an increment.
class event_loop::batch_delays {
public:
    batch_delays(event_loop& loop, std::int64_t started) noexcept
        : m_loop(loop), m_started(started), m_token(token_of(loop.m_batches)),
          m_previous_token(token_of(loop.m_batches + 1)), m_steps_from(started) {
        loop.m_batch = this;
    }
    ~batch_delays() { m_loop.m_batch = nullptr; }
    batch_delays(const batch_delays&) = delete;
    batch_delays& operator=(const batch_delays&) = delete;
    std::int64_t token() const noexcept { return m_token; }
    void add(std::int64_t ready_at) noexcept {
        if (ready_at == m_ready_at) {
            ++m_count;
            return;
        }
        flush();
        m_ready_at = ready_at;
        m_count = 1;
    }
    /// reset_stats() from a step of this batch: drop what ran before it, and time the batch
    /// from `now`.
    void restart(std::int64_t now) noexcept {
        m_count = 0;
        m_steps_from = now;
    }
    std::int64_t steps_from() const noexcept { return m_steps_from; }
    void flush() noexcept {
        if (m_count == 0) return;
        std::int64_t delay = 0; // queued by this batch and run in it (callbacks a task posted)
        if (m_ready_at != m_token) {
            // Queued by the previous batch: runnable from its end. Work queued before run()
            // started waited for the loop, not in it.
            const std::int64_t from = m_ready_at == m_previous_token ? m_loop.m_batch_ended : m_ready_at;
            delay = m_started - std::max(from, m_loop.m_run_started);
        }
        m_loop.m_stats.delay.record(std::chrono::nanoseconds(delay), m_count);
        m_count = 0;
    }

private:
    // Negative: never a steady_clock reading. Two alternate, since the work a batch queues
    // runs in the next batch at the latest.
    static std::int64_t token_of(std::uint64_t batch) noexcept { return -1 - static_cast<std::int64_t>(batch & 1); }
    event_loop& m_loop;
    std::int64_t m_started, m_token, m_previous_token, m_steps_from;
    std::int64_t m_ready_at = 0;
    std::uint64_t m_count = 0;
};

template <class>
void event_loop::run_ready_batch(std::int64_t started) {
    // Only what is ready now: work queued by this batch waits for the next turn, so a task
    // that keeps yielding cannot starve I/O and timers.
    std::size_t n = m_ready.size();
    if (n == 0 && m_callbacks.empty()) return;
    // The watchdog needs each step's start (one clock read per step while it watches; a step
    // may start or stop it, so each step looks); the statistics only the batch's.
    bool watched = false;
    batch_delays delays(*this, started);
    if constexpr (detail::loop_stats_enabled) m_stamp = delays.token();
    for (; n > 0 && !m_ready.empty(); --n) {
        if (m_ready.size() > prefetch_ahead) {
            // A long batch resumes frames in the order they became ready, which for timers is
            // deadline order, a random walk over memory: ask for a frame a few steps early.
            const detail::ready_item& ahead = m_ready.from_front(prefetch_ahead);
            // Two lines each: what a resumption touches of a frame (its resume pointer, the
            // awaiter) and of its task's context spans more than one.
            for (const void* p : {static_cast<const void*>(ahead.handle.address()), static_cast<const void*>(ahead.context)}) {
                __builtin_prefetch(p);
                __builtin_prefetch(static_cast<const char*>(p) + 64);
            }
        }
        detail::ready_item item = m_ready.pop();
        if constexpr (detail::loop_stats_enabled) delays.add(item.ready_at);
        if (m_watchdog) {
            watched = true;
            m_probe.begin(detail::steady_now_ns(), identity_of(item.context), false);
        }
        m_current_task = item.context;
        m_io_budget = io_budget;
        item.handle.resume();
    }
    m_current_task = nullptr;
    for (n = m_callbacks.size(); n > 0 && !m_callbacks.empty(); --n) {
        detail::posted_callback cb = m_callbacks.pop();
        if constexpr (detail::loop_stats_enabled) delays.add(cb.ready_at);
        if (m_watchdog) {
            watched = true;
            m_probe.begin(detail::steady_now_ns(), nullptr, true);
        }
        m_io_budget = io_budget;
        run_callback(cb);
    }
    if (!detail::loop_stats_enabled && !watched) return;
    const std::int64_t ended = detail::steady_now_ns();
    if (watched) m_probe.end(ended);
    if constexpr (detail::loop_stats_enabled) {
        delays.flush();
        m_stats.steps.record(std::chrono::nanoseconds(ended - delays.steps_from()));
        m_batch_ended = ended;
        ++m_batches;
    }
    m_stamp = ended;
}

template <class>
void event_loop::run_callback(detail::posted_callback& cb) noexcept {
    try {
        cb.fn();
    } catch (...) {
        detail::task_context none;
        report_unhandled(std::current_exception(), none);
    }
}

template <class Deferred>
detail::dependent_t<std::optional<std::chrono::nanoseconds>, Deferred> event_loop::poll_timeout() noexcept {
    using std::chrono::nanoseconds;
    if (!m_ready.empty() || !m_callbacks.empty() || !m_io_retry.empty() || m_interrupted ||
        m_stop_requested.load(std::memory_order_relaxed) || !m_unhandled.empty())
        return nanoseconds::zero();
    if (m_timers.empty()) return std::nullopt;
    // Compared before subtracting: a deadline far in the past (time_point::min()) minus now
    // overflows, and the wrapped difference used to put the loop to sleep for centuries.
    // With statistics on, m_stamp is a time here, read at the end of the batch (or the turn's
    // start when nothing ran): fresh, and one clock read per turn fewer.
    const clock::time_point next = m_timers.next_deadline();
    const clock::time_point now = detail::loop_stats_enabled ? clock::time_point(nanoseconds(m_stamp)) : clock::now();
    if (next <= now) return nanoseconds::zero();
    return std::chrono::duration_cast<nanoseconds>(next - now);
}

template <class>
void event_loop::on_fd_event(int fd, bool readable, bool writable) noexcept {
    if (fd == m_wakeup.read_fd()) {
        on_wakeup();
        return;
    }
    detail::fd_table::interest left;
    const detail::fd_table::completed done = m_fds.on_event(fd, readable, writable, left);
    complete_io(done.reader);
    complete_io(done.writer);
    m_reactor.watch(fd, left.read, left.write); // poll: drop satisfied interest
}

template <class>
void event_loop::on_wakeup() noexcept {
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

template <class>
void event_loop::take_remote() noexcept {
    // Clear before taking the queue: a post racing with us either lands in this swap or
    // sees the flag clear and signals again.
    m_wake_pending.store(false, std::memory_order_seq_cst);
    {
        std::lock_guard lock(m_remote_mutex);
        m_remote_spare.swap(m_remote);
    }
    while (!m_remote_spare.empty()) m_callbacks.emplace(m_remote_spare.pop(), m_stamp);
}

template <class>
void event_loop::post_erased(detail::unique_function fn) {
    if (t_current_loop == this) {
        m_callbacks.emplace(std::move(fn), m_stamp);
        return;
    }
    // The loop may be destroyed as soon as it has taken fn (a thread_pool job's completion is
    // often the last thing a loop waits for), so the destructor waits for m_posters to drop
    // to zero. Counting in before the push makes the count visible to the loop by the time
    // fn is. The eventfd write happens outside the mutex: on a shared core the woken loop
    // often runs at once, and finding the mutex held it would sleep again and switch back
    // (a round trip on one core went from 5.4 to 16.5 µs that way).
    const poster_scope counted(*this);
    bool signal = false;
    {
        std::lock_guard lock(m_remote_mutex);
        m_remote.push(std::move(fn));
        signal = !m_wake_pending.exchange(true, std::memory_order_seq_cst) && !m_spinning.load(std::memory_order_seq_cst);
    }
    if (signal) m_wakeup.signal();
    // A loop posting to another loop usually expects an answer (a request, a round trip):
    // poll for it briefly before sleeping in the kernel. On one core the yield hands the CPU
    // to the other loop, whose answer then needs no eventfd write; across cores the answer
    // skips waking an idle vCPU. Bounded: at most reply_spin per turn that posted, and
    // rarer while posts go unanswered (see note_reply).
    if (event_loop* poster = t_current_loop) poster->expect_reply();
}

template <class Deferred>
void event_loop::watch_blocking(std::chrono::nanoseconds threshold, blocking_handler on_block) {
    if (threshold <= std::chrono::nanoseconds::zero())
        throw std::invalid_argument("tandem: watch_blocking needs a positive threshold");
    delete std::exchange(m_watchdog, nullptr);
    m_watchdog = new detail::basic_blocking_watchdog<Deferred>(m_probe, threshold, std::move(on_block));
}

inline void event_loop::unwatch_blocking() noexcept {
    delete std::exchange(m_watchdog, nullptr);
    // Called by a step: the batch stops probing, so leave the probe idle, or a watchdog
    // started later would find this step's start and report a block that never was.
    m_probe.started_ns.store(0, std::memory_order_relaxed);
}

inline const loop_stats& event_loop::stats() const noexcept {
    // The running batch records its steps' delays in runs; a reader inside it gets them now.
    if (m_batch) m_batch->flush();
    return m_stats;
}

inline void event_loop::reset_stats() noexcept {
    m_stats = loop_stats{};
    if constexpr (detail::loop_stats_enabled) {
        if (!m_batch) return;
        // From a step: busy time and the running batch count from now.
        const std::int64_t now = detail::steady_now_ns();
        m_last_mark = now;
        m_batch->restart(now);
    }
}

inline void event_loop::stop() noexcept {
    if (t_current_loop == this) {
        m_stop_requested.store(true, std::memory_order_release);
        return;
    }
    const poster_scope counted(*this); // see post_erased: the loop may die right after
    m_stop_requested.store(true, std::memory_order_release);
    m_wakeup.signal();
}

inline bool event_loop::consume_readiness(int fd, bool write) noexcept { return m_fds.consume_readiness(fd, write); }

inline void event_loop::add_io_waiter(detail::io_waiter& w) {
    if (w.fd < 0) throw std::system_error(EBADF, std::system_category(), "wait on an invalid fd");
    // This fd number belonged to another (closed) socket: start from a clean registration.
    if (m_fds.owned_by_another(w)) forget(w.fd);
    const detail::fd_table::interest in = m_fds.add(w);
    try {
        m_reactor.watch(w.fd, in.read, in.write);
    } catch (...) {
        detail::fd_table::interest ignored;
        m_fds.remove(w, ignored);
        throw;
    }
}

inline void event_loop::remove_io_waiter(detail::io_waiter& w) noexcept {
    detail::fd_table::interest left;
    if (m_fds.remove(w, left)) m_reactor.watch(w.fd, left.read, left.write);
}

inline void event_loop::forget(int fd) noexcept {
    if (fd < 0) return;
    const detail::fd_table::completed aborted = m_fds.forget(fd);
    complete_io(aborted.reader);
    complete_io(aborted.writer);
    m_reactor.forget(fd);
}

inline void event_loop::watch_exclusive(int fd, std::uint64_t owner) {
    if (fd < 0) throw std::system_error(EBADF, std::system_category(), "watch_exclusive on an invalid fd");
    forget(fd);
    m_fds.claim(fd, owner); // add_io_waiter keeps a registration whose owner matches
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
    if (m_unhandled.size() < max_unhandled) m_unhandled.push(std::move(e));
    else ++m_unhandled_dropped; // a storm of failures must not grow memory: counted, reported at teardown
}

inline std::exception_ptr event_loop::take_unhandled() noexcept {
    if (m_unhandled.empty()) return nullptr;
    return m_unhandled.pop();
}

inline void event_loop::rethrow_unhandled() {
    if (std::exception_ptr e = take_unhandled()) std::rethrow_exception(e);
}

} // namespace tandem
