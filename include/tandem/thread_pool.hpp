// tandem — thread_pool and offload(): run blocking or CPU-heavy work on worker threads and
// await it from a coroutine while the loop keeps serving (libuv's thread pool, Node's
// worker_threads, asyncio's run_in_executor).
//
// Layer: offload. Knows the loop: a finished job reaches its loop only through
// event_loop::post, the one cross-thread wake-up path.
//
// Cancellation is what the peers lack: cancelling the awaiting task removes a job that has
// not started (it never runs), asks a running job to stop through its std::stop_token, and
// in both cases resumes the awaiter at once with tandem::cancelled.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/intrusive_list.hpp"
#include "tandem/detail/pool_awaiter.hpp"
#include "tandem/detail/pool_job.hpp"
#include "tandem/detail/spin.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/error.hpp"
#include "tandem/fwd.hpp"
#include "tandem/loop.hpp"
#include "tandem/task.hpp"

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <pthread.h>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace tandem {

struct thread_pool_options {
    /// Worker threads; 0 means std::thread::hardware_concurrency() (at least 1).
    std::size_t threads = 0;
    /// Jobs allowed to wait for a worker; 0 means no bound. Past it, run() suspends its
    /// caller until a worker frees a slot, and submit()/post() block their thread.
    std::size_t max_queued = 0;
    /// How long an idle worker, and a loop awaiting a job, keep polling before they sleep in
    /// the kernel. Waking a sleeping thread costs 5 µs on a shared core and 50–70 µs on an
    /// idle vCPU; polling briefly avoids it for back-to-back jobs. Zero turns polling off.
    std::chrono::microseconds spin{50};
    /// Thread name prefix shown by top/gdb/perf (Linux keeps 15 characters).
    std::string name = "tandem-pool";
};


namespace detail {

/// A unit of work in a thread pool's queue (see job_base for its references and states).
class pool_job : public job_base {
public:
    /// Runs the job on a worker, delivers the outcome, and drops the pool's reference.
    virtual void execute(std::stop_token pool_stopping) noexcept = 0;
    /// The job will never run (the pool is being destroyed): deliver tandem::cancelled and
    /// drop the pool's reference.
    virtual void discard() noexcept = 0;
};

/// Owning reference to a pool_job (what a completion posted to a loop carries).
using job_ref = counted_ref<pool_job>;

/// Callables may take a std::stop_token first; they then see cancellation.
template <class Fn, class... Args>
inline constexpr bool takes_stop_token = std::is_invocable_v<Fn&, std::stop_token, Args...>;

template <class Fn, class... Args>
struct job_result {
    using type = typename std::conditional_t<takes_stop_token<Fn, Args...>, std::invoke_result<Fn&, std::stop_token, Args...>,
                                             std::invoke_result<Fn&, Args...>>::type;
};

/// What a job returns: values by value, lvalue references as references, rvalue
/// references decayed (the referent may not outlive the worker's call).
template <class Fn, class... Args>
using job_result_t = std::conditional_t<std::is_rvalue_reference_v<typename job_result<Fn, Args...>::type>,
                                        std::remove_cvref_t<typename job_result<Fn, Args...>::type>,
                                        typename job_result<Fn, Args...>::type>;

template <class Fn, class Tuple>
decltype(auto) invoke_job(Fn& fn, Tuple& args, std::stop_token token) {
    return std::apply(
        [&](auto&... a) -> decltype(auto) {
            if constexpr (std::is_invocable_v<Fn&, std::stop_token, decltype(std::move(a))...>) {
                return std::apply(fn, std::forward_as_tuple(std::move(token), std::move(a)...));
            } else {
                (void)token;
                return std::apply(fn, std::forward_as_tuple(std::move(a)...));
            }
        },
        args);
}

/// The callable and its arguments, kept until the job dies.
template <class Fn, class... Args>
struct job_callable {
    template <class F, class... A>
    explicit job_callable(F&& f, A&&... a) : fn(static_cast<F&&>(f)), args(static_cast<A&&>(a)...) {}
    decltype(auto) operator()(std::stop_token token) { return invoke_job(fn, args, std::move(token)); }
    Fn fn;
    std::tuple<Args...> args;
};

/// A job awaited by a coroutine: the outcome goes back to the awaiter's loop through post()
/// (awaited_job_of::deliver, pool_job.hpp).
template <class R>
class awaited_job : public awaited_job_of<pool_job, R> {
public:
    /// Asks a running job to stop (only callables taking a std::stop_token notice).
    virtual void request_stop() noexcept = 0;

    void discard() noexcept override {
        this->m_outcome.fail(std::make_exception_ptr(cancelled{}));
        this->deliver();
    }
};

template <class R, class Fn, class... Args>
class awaited_job_impl final : public awaited_job<R> {
public:
    template <class F, class... A>
    explicit awaited_job_impl(F&& f, A&&... a) : m_call(static_cast<F&&>(f), static_cast<A&&>(a)...) {}

    void execute(std::stop_token pool_stopping) noexcept override {
        if constexpr (takes_stop_token<Fn, Args...>) {
            std::stop_callback forward(pool_stopping, [this]() noexcept { m_stop.request_stop(); });
            this->m_outcome.produce([&]() -> decltype(auto) { return m_call(m_stop.get_token()); });
        } else {
            this->m_outcome.produce([&]() -> decltype(auto) { return m_call(std::stop_token{}); });
        }
        this->deliver();
    }
    void request_stop() noexcept override {
        if constexpr (takes_stop_token<Fn, Args...>) m_stop.request_stop();
    }

private:
    job_callable<Fn, Args...> m_call;
    [[no_unique_address]] std::conditional_t<takes_stop_token<Fn, Args...>, std::stop_source, std::monostate> m_stop;
};

/// A job whose outcome goes to a std::future (submit()).
template <class R, class Fn, class... Args>
class future_job final : public pool_job {
public:
    template <class F, class... A>
    explicit future_job(F&& f, A&&... a) : m_call(static_cast<F&&>(f), static_cast<A&&>(a)...) {}
    std::future<R> get_future() { return m_promise.get_future(); }

    void execute(std::stop_token pool_stopping) noexcept override {
        job_outcome<R> outcome;
        outcome.produce([&]() -> decltype(auto) { return m_call(pool_stopping); });
        outcome.deliver_to(m_promise);
        release();
    }
    void discard() noexcept override {
        try {
            m_promise.set_exception(std::make_exception_ptr(cancelled{}));
        } catch (...) {
        }
        release();
    }

private:
    job_callable<Fn, Args...> m_call;
    std::promise<R> m_promise;
};

/// A fire-and-forget job (post()). Like std::thread, an exception escaping it terminates.
template <class Fn>
class posted_job final : public pool_job {
public:
    template <class F>
    explicit posted_job(F&& f) : m_fn(static_cast<F&&>(f)) {}
    void execute(std::stop_token pool_stopping) noexcept override {
        if constexpr (std::is_invocable_v<Fn&, std::stop_token>) {
            m_fn(std::move(pool_stopping));
        } else {
            m_fn();
        }
        release();
    }
    void discard() noexcept override { release(); }

private:
    Fn m_fn;
};

/// TANDEM_THREADPOOL_SIZE (1..1024), else the hardware thread count.
inline std::size_t default_pool_size() noexcept {
    if (const char* env = std::getenv("TANDEM_THREADPOOL_SIZE")) {
        char* end = nullptr;
        const unsigned long n = std::strtoul(env, &end, 10);
        if (end != env && *end == '\0' && n >= 1 && n <= 1024) return n;
    }
    return hardware_threads();
}

} // namespace detail

/// A fixed set of worker threads with one FIFO queue, shared by any number of loops.
///
///   double r = co_await pool.run(expensive, n);      // from a coroutine: the loop keeps going
///   std::future<int> f = pool.submit(parse, text);   // from plain code
///   pool.post([] { flush_logs(); });                  // fire and forget
///
/// Callables and arguments are moved into the job (capture by value: a cancelled awaiter
/// resumes while a running job may still be finishing). A callable whose first parameter is
/// std::stop_token receives one that is stopped when the awaiting task is cancelled or the
/// pool is destroyed.
///
/// Destruction stops accepting jobs, cancels queued ones (their awaiters get
/// tandem::cancelled, their futures hold it), asks running ones to stop, waits for them and
/// joins the threads. In a fork()ed copy of the program (which has none of the threads),
/// run, submit and post throw std::logic_error and destruction waits for nothing.
///
/// A class template only so that a translation unit that includes this header and never
/// makes a pool compiles none of its bodies (bench/README.md, "Include cost"); the one
/// instantiation is the alias tandem::thread_pool (fwd.hpp declares both). What names std
/// containers depends on Deferred, so that clang does not compile it either
/// (detail/dependent.hpp).
template <class Deferred>
class basic_thread_pool {
public:
    /// The public name inside the class too, so that `pool.~thread_pool()` finds it.
    using thread_pool = basic_thread_pool;
    using clock = std::chrono::steady_clock;

    explicit basic_thread_pool(thread_pool_options options = {}) : m_options(std::move(options)) {
        const std::size_t n = m_options.threads ? m_options.threads : detail::hardware_threads();
        m_threads.reserve(n);
        try {
            for (std::size_t i = 0; i < n; ++i) m_threads.emplace_back([this, i] { work(i); });
        } catch (...) {
            shut_down();
            throw;
        }
    }
    explicit basic_thread_pool(std::size_t threads) : basic_thread_pool(thread_pool_options{.threads = threads}) {}
    basic_thread_pool(const basic_thread_pool&) = delete;
    basic_thread_pool& operator=(const basic_thread_pool&) = delete;
    ~basic_thread_pool() { shut_down(); }

    /// Runs fn(args...) on a worker. The returned task, awaited on an event loop, yields the
    /// value or rethrows the exception on the awaiting task's loop; like any task it can be
    /// spawned, raced with when_any or given a timeout. Cancellable (see the class comment).
    template <class F, class... Args>
    [[nodiscard]] auto run(F&& fn, Args&&... args)
        -> task<detail::job_result_t<std::decay_t<F>, std::decay_t<Args>...>> {
        using R = detail::job_result_t<std::decay_t<F>, std::decay_t<Args>...>;
        using job = detail::awaited_job_impl<R, std::decay_t<F>, std::decay_t<Args>...>;
        return await_job<R>(*this, detail::job_ref(new job(static_cast<F&&>(fn), static_cast<Args&&>(args)...)));
    }

    /// Runs fn(args...) on a worker and returns a future for the outcome; for code without a
    /// loop. Blocks while the queue is full. A job the pool cancels holds tandem::cancelled.
    template <class F, class... Args>
    [[nodiscard]] auto submit(F&& fn, Args&&... args) {
        using R = detail::job_result_t<std::decay_t<F>, std::decay_t<Args>...>;
        auto* job = new detail::future_job<R, std::decay_t<F>, std::decay_t<Args>...>(static_cast<F&&>(fn),
                                                                                      static_cast<Args&&>(args)...);
        std::future<R> result = job->get_future();
        enqueue_blocking(*job);
        return result;
    }

    /// Runs fn() on a worker; nobody waits. An exception escaping fn terminates, as with
    /// std::thread. Blocks while the queue is full.
    template <class F>
    void post(F&& fn) {
        enqueue_blocking(*new detail::posted_job<std::decay_t<F>>(static_cast<F&&>(fn)));
    }

    std::size_t size() const noexcept { return m_threads.size(); }
    /// Jobs waiting for a worker.
    std::size_t queued() const {
        std::lock_guard lock(m_mutex);
        return m_queue.queued_locked();
    }
    /// Awaiters suspended because the queue was full.
    std::size_t waiting_for_space() const {
        std::lock_guard lock(m_mutex);
        return m_queue.parked_locked();
    }
    /// Jobs a worker is running now.
    std::size_t running() const {
        std::lock_guard lock(m_mutex);
        return m_running;
    }
    const thread_pool_options& options() const noexcept { return m_options; }

private:
    template <class, class, class>
    friend class detail::pool_run_awaiter;
    template <class R>
    using run_awaiter = detail::pool_run_awaiter<basic_thread_pool, detail::awaited_job<R>, R>;
    static constexpr const char* run_name = "thread_pool::run";
    std::chrono::microseconds spin() const noexcept { return m_options.spin; }
    /// The awaiter left a running job: only a callable taking a std::stop_token notices.
    template <class R>
    static void stop_running(detail::awaited_job<R>& job) noexcept {
        job.request_stop();
    }

    template <class R>
    static task<R> await_job(basic_thread_pool& pool, detail::job_ref job) {
        auto* raw = static_cast<detail::awaited_job<R>*>(job.release());
        if constexpr (std::is_void_v<R>) {
            co_await run_awaiter<R>(pool, raw);
        } else {
            co_return co_await run_awaiter<R>(pool, raw);
        }
    }

    void check_open() const {
        if (m_closing) throw std::logic_error("tandem: thread_pool is shutting down");
    }

    /// A forked copy of the program has none of the pool's threads (fork() copies only the
    /// caller): a job queued here would never run, and a teardown that joined them would
    /// wait forever.
    bool forked_copy() const noexcept { return m_owner.forked_copy(); }
    void check_not_forked() const { m_owner.check("thread_pool"); }
    /// The forked copy's teardown: the threads, and whatever they locked or waited on at fork
    /// time, exist only in the parent; forget them (not destroy them), and leave the jobs,
    /// the parent's, alone.
    void forget_forked_copy() noexcept {
        for (std::thread& t : m_threads) new (&t) std::thread();
        m_threads.clear();
        new (&m_mutex) std::mutex();
        new (&m_work) std::condition_variable();
        m_queue.forget_waiters_after_fork();
    }

    /// Loop thread: queues an awaited job, or parks it until there is room.
    void enqueue_awaited(detail::pool_job& job) {
        check_not_forked();
        std::unique_lock lock(m_mutex);
        check_open();
        job.add_ref(); // the pool's
        if (m_queue.park_if_full_locked(job)) return;
        push_locked(lock, job);
    }

    /// Any thread: queues a job, waiting for room if the queue is bounded and full.
    void enqueue_blocking(detail::pool_job& job) {
        if (forked_copy()) {
            job.release();
            check_not_forked();
        }
        std::unique_lock lock(m_mutex);
        m_queue.wait_for_room(lock, [&] { return m_closing; });
        if (m_closing) {
            lock.unlock();
            job.discard();
            throw std::logic_error("tandem: thread_pool is shutting down");
        }
        push_locked(lock, job);
    }

    void push_locked(std::unique_lock<std::mutex>& lock, detail::pool_job& job) {
        m_queue.push_back_locked(job);
        m_has_work.store(true, std::memory_order_relaxed);
        // A polling worker will find the job; wake a sleeper only if nobody polls.
        const bool wake = m_sleepers > 0 && m_spinners.load(std::memory_order_seq_cst) == 0;
        lock.unlock();
        if (wake) m_work.notify_one();
    }

    /// Loop thread: takes a job back if no worker has started it. True if it was removed
    /// (and the pool's reference dropped).
    bool withdraw(detail::pool_job& job) noexcept {
        {
            std::lock_guard lock(m_mutex);
            if (!m_queue.withdraw_locked(job)) return false;
            m_has_work.store(m_queue.queued_locked() != 0, std::memory_order_relaxed);
        }
        job.release();
        return true;
    }

    /// Hands the calling worker its next job (nullptr: the pool is closing). `finished_one`:
    /// the worker just finished a job (counted here, under the lock we need anyway).
    detail::pool_job* take(bool finished_one) {
        std::unique_lock lock(m_mutex);
        if (finished_one) --m_running;
        bool spun = false; // poll once per wait: a worker woken for a job another took sleeps again
        for (;;) {
            if (!m_queue.empty_locked()) {
                detail::pool_job& job = m_queue.pop_front_locked();
                job.m_state.store(detail::pool_job::state::running, std::memory_order_relaxed);
                const std::size_t queued = m_queue.queued_locked();
                m_has_work.store(queued != 0, std::memory_order_relaxed);
                const bool cascade = queued != 0 && m_sleepers > 0 && m_spinners.load(std::memory_order_seq_cst) == 0;
                ++m_running;
                lock.unlock();
                if (cascade) m_work.notify_one(); // more work than awake workers
                return &job;
            }
            if (m_closing) return nullptr;
            if (m_options.spin.count() > 0 && !spun) {
                // Poll outside the lock for a while: the next job of a burst is usually
                // close behind, and waking from the futex would cost more than the wait.
                m_spinners.fetch_add(1, std::memory_order_seq_cst);
                lock.unlock();
                detail::spin_until_ready(m_options.spin, [&] {
                    return m_has_work.load(std::memory_order_relaxed) || m_closing_flag.load(std::memory_order_relaxed);
                });
                m_spinners.fetch_sub(1, std::memory_order_seq_cst);
                lock.lock();
                spun = true;
                continue;
            }
            ++m_sleepers;
            m_work.wait(lock);
            --m_sleepers;
        }
    }

    void work(std::size_t index) {
        const std::string name = m_options.name.substr(0, 11) + '-' + std::to_string(index);
        ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
        const std::stop_token stopping = m_stop.get_token();
        bool finished_one = false;
        while (detail::pool_job* job = take(finished_one)) {
            job->execute(stopping); // drops the pool's reference
            finished_one = true;
        }
        std::lock_guard lock(m_mutex);
        if (finished_one) --m_running;
    }

    void shut_down() noexcept {
        if (forked_copy()) return forget_forked_copy();
        detail::intrusive_list<detail::pool_job> abandoned;
        {
            std::unique_lock lock(m_mutex);
            if (m_closing && m_threads.empty()) return;
            m_closing = true;
            m_closing_flag.store(true, std::memory_order_relaxed);
            m_queue.drain_locked(abandoned);
            m_queue.wait_blocked_gone(lock); // threads inside submit() leave first
        }
        m_stop.request_stop();
        m_work.notify_all();
        while (!abandoned.empty()) abandoned.pop_front().discard();
        for (std::thread& t : m_threads)
            if (t.joinable()) t.join();
        m_threads.clear();
    }

    thread_pool_options m_options;
    detail::pool_owner m_owner; // the process whose threads these are (forked_copy)
    mutable std::mutex m_mutex;
    std::condition_variable m_work; // workers wait here for jobs
    detail::bounded_job_queue<detail::pool_job> m_queue{m_options.max_queued};
    std::size_t m_sleepers = 0;
    bool m_closing = false;
    std::atomic<bool> m_has_work{false};
    std::atomic<bool> m_closing_flag{false};
    std::atomic<unsigned> m_spinners{0};
    std::size_t m_running = 0;
    std::stop_source m_stop;
    detail::dependent_t<std::vector<std::thread>, Deferred> m_threads;
};

/// The process-wide pool behind offload(): created on first use with TANDEM_THREADPOOL_SIZE
/// threads (default: the hardware thread count), like libuv's UV_THREADPOOL_SIZE. Destroyed
/// at exit, which waits for running jobs.
template <class Deferred = void> // Deferred: see detail/dependent.hpp
basic_thread_pool<Deferred>& default_thread_pool() {
    static basic_thread_pool<Deferred> pool(thread_pool_options{.threads = detail::default_pool_size()});
    return pool;
}

/// co_await offload(fn, args...): runs fn on the default pool (see thread_pool::run).
template <class F, class... Args>
[[nodiscard]] auto offload(F&& fn, Args&&... args) {
    return default_thread_pool<detail::dependent_t<void, F>>().run(static_cast<F&&>(fn), static_cast<Args&&>(args)...);
}

} // namespace tandem
