// tandem — process_pool: CPU work in other processes, awaited from a coroutine while the
// loop keeps serving (Python's ProcessPoolExecutor and run_in_executor, without its failure
// modes).
//
// Layer: offload. A job is (entry point, function, encoded arguments): workers are forks of
// this binary, so a function's address means the same there. Arguments and results cross
// as codec<T> bytes (codec.hpp), large ones in a memfd.
//
// What the peers lack:
// - A crash (signal, exit, abort) fails only the job that was running, with
//   tandem::worker_crashed; the worker is replaced and every other job carries on. Python's
//   BrokenProcessPool fails the whole pool.
// - A job past its timeout, or whose awaiting task is cancelled, has its worker killed and
//   replaced. Threads cannot be killed safely; processes can.
// - Workers are forked from a single-threaded zygote (process/zygote.hpp), so replacing one
//   never forks a multi-threaded parent.
#pragma once

#include "tandem/codec.hpp"
#include "tandem/error.hpp"
#include "tandem/loop.hpp"
#include "tandem/task.hpp"
#include "tandem/thread_pool.hpp"
#include "tandem/when.hpp"
#include "tandem/detail/intrusive_list.hpp"
#include "tandem/detail/pool_awaiter.hpp"
#include "tandem/process/channel.hpp"
#include "tandem/process/start_board.hpp"
#include "tandem/process/exit_status.hpp"
#include "tandem/process/zygote.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <future>
#include <mutex>
#include <ranges>
#include <string>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <type_traits>
#include <vector>

namespace tandem {

struct process_pool_options {
    /// Worker processes; 0 means std::thread::hardware_concurrency() (at least 1).
    std::size_t workers = 0;
    /// Jobs allowed to wait for a worker; 0 means no bound. Past it, run() suspends its caller
    /// until a slot frees, and submit() blocks its thread.
    std::size_t max_queued = 0;
    /// Every job's time limit (0: none). Past it the worker is killed and replaced, and the
    /// job fails with tandem::timed_out. job_options::timeout overrides it per call.
    std::chrono::milliseconds job_timeout{0};
    /// A worker exits after this many jobs and a fresh one takes its place (0: never);
    /// Python's max_tasks_per_child, for code that leaks.
    std::size_t max_jobs_per_worker = 0;
    /// Runs once in each new worker before its first job. If it throws, the pool is unusable
    /// and every job fails with a tandem::remote_error that says so.
    void (*initializer)() = nullptr;
    /// Fork the zygote even though other threads run. Dangerous: a lock another thread holds
    /// at that instant (malloc's, a logger's) stays locked forever in every worker. Only for
    /// processes that know their threads hold no such lock.
    bool allow_threads = false;
    /// How long the awaiting loop, the pool's dispatcher thread and an idle worker poll for
    /// the next message before they sleep in the kernel (as thread_pool_options::spin): a
    /// wake-up from sleep costs more than a short round trip. Zero turns polling off.
    std::chrono::microseconds spin{50};
};

/// Per-call settings: pool.run(tandem::job_options{.timeout = 2s}, fn, args...).
struct job_options {
    std::chrono::milliseconds timeout{0}; // 0: the pool's job_timeout
};

class process_pool;

namespace detail {

/// A job on its way through the pool. Reference-counted like pool_job: the creator (awaiter
/// or submit), the pool while it holds the job, and a completion on its way to a loop.
class process_job : public job_base {
public:
    process_job(job_entry entry, std::uintptr_t fn, outgoing_payload args, std::chrono::milliseconds timeout)
        : m_entry(entry), m_fn(fn), m_args(std::move(args)), m_timeout(timeout) {}

    /// Delivers the outcome: a frame from the worker, or an error. Drops the pool's reference.
    /// False if the frame did not decode (the worker that sent it cannot be trusted).
    virtual bool complete(const incoming_frame* frame, std::exception_ptr error) noexcept = 0;

    std::size_t m_slot = ~std::size_t{0}; // the worker running it (pool's mutex)
    std::uint64_t m_sent_id = 0;          // its number on that worker's channel (pool's mutex)
    bool m_requeued = false;              // back in the queue after its worker died idle (pool's mutex)

    /// The pool takes the job out of its queue for good (to run it or to fail it): a queued
    /// job becomes running; a re-dispatched one is running (or detached) already.
    void leave_queue() noexcept {
        auto queued = state::queued;
        m_state.compare_exchange_strong(queued, state::running, std::memory_order_acq_rel);
        m_requeued = false;
    }
    job_entry m_entry;
    std::uintptr_t m_fn;
    outgoing_payload m_args;
    std::chrono::milliseconds m_timeout;
};

/// Owning reference to a process_job.
using process_job_ref = counted_ref<process_job>;

/// The worker's reply as an R, or its exception as a remote_error.
template <class R>
R decode_reply(const incoming_frame& f, bool& decoded) {
    try {
        if (f.header.kind() == frame_kind::error) {
            auto [type, what] = tandem::decode<std::pair<std::string, std::string>>(f.data(), f.size());
            throw remote_error(std::move(type), std::move(what));
        }
        if constexpr (std::is_void_v<R>) {
            if (f.size() != 0) throw codec_error("tandem: trailing bytes after a void result");
        } else {
            return tandem::decode<R>(f.data(), f.size(), &populate_pages);
        }
    } catch (const codec_error&) {
        decoded = false;
        throw;
    }
}

template <class R>
class awaited_process_job final : public process_job {
public:
    using process_job::process_job;
    event_loop* m_loop = nullptr;
    job_listener* m_listener = nullptr; // loop thread only
    job_outcome<R> m_outcome;

    bool complete(const incoming_frame* frame, std::exception_ptr error) noexcept override {
        bool decoded = true;
        if (frame) {
            m_outcome.produce([&]() -> R { return decode_reply<R>(*frame, decoded); });
        } else {
            m_outcome.fail(std::move(error));
        }
        state expected = state::running;
        if (m_state.compare_exchange_strong(expected, state::finished, std::memory_order_acq_rel)) {
            add_ref(); // the completion's
            m_loop->post([ref = process_job_ref(this)]() noexcept {
                auto* self = static_cast<awaited_process_job*>(ref.get());
                if (job_listener* l = std::exchange(self->m_listener, nullptr)) l->on_job_done();
            });
            m_state.store(state::delivered, std::memory_order_release);
        }
        release();
        return decoded;
    }
};

template <class R>
class future_process_job final : public process_job {
public:
    using process_job::process_job;
    std::promise<R> m_promise;

    bool complete(const incoming_frame* frame, std::exception_ptr error) noexcept override {
        bool decoded = true;
        job_outcome<R> outcome;
        if (frame) {
            outcome.produce([&]() -> R { return decode_reply<R>(*frame, decoded); });
        } else {
            outcome.fail(std::move(error));
        }
        outcome.deliver_to(m_promise);
        release();
        return decoded;
    }
};

/// What a job's function is: a pointer (its address travels) or a stateless callable type
/// (default-constructed in the worker).
template <class Fn>
inline constexpr bool remote_callable =
    (std::is_pointer_v<Fn> && std::is_function_v<std::remove_pointer_t<Fn>>) ||
    (std::is_class_v<Fn> && std::is_empty_v<Fn> && std::is_default_constructible_v<Fn>);

template <class Fn>
Fn resolve_callable(std::uintptr_t bits) {
    if constexpr (std::is_pointer_v<Fn>) {
        return reinterpret_cast<Fn>(bits);
    } else {
        (void)bits;
        return Fn{};
    }
}

template <class Fn>
std::uintptr_t callable_bits(const Fn& fn) {
    if constexpr (std::is_pointer_v<Fn>) {
        return reinterpret_cast<std::uintptr_t>(fn);
    } else {
        (void)fn;
        return 0;
    }
}

/// The argument types a job carries: a function pointer's parameters (decayed), otherwise
/// the decayed types passed.
template <class Fn, class... Args>
struct remote_params {
    using type = std::tuple<std::decay_t<Args>...>;
};
template <class R, class... P, class... Args>
struct remote_params<R (*)(P...), Args...> {
    using type = std::tuple<std::decay_t<P>...>;
};
template <class R, class... P, class... Args>
struct remote_params<R (*)(P...) noexcept, Args...> {
    using type = std::tuple<std::decay_t<P>...>;
};

template <class Fn, class Params>
struct remote_result;
template <class Fn, class... A>
struct remote_result<Fn, std::tuple<A...>> {
    using type = std::remove_cvref_t<std::invoke_result_t<Fn&, A&&...>>;
};

template <class Fn, class... Args>
using remote_result_t = typename remote_result<Fn, typename remote_params<Fn, Args...>::type>::type;

template <class R, class Fn, class... A>
outgoing_payload call_entry(std::uintptr_t fn_bits, const std::byte* data, std::size_t size) {
    decoder in(data, size, &populate_pages);
    std::tuple<A...> args{codec<A>::decode(in)...}; // braced: decoded left to right
    if (in.remaining() != 0) throw codec_error("tandem: trailing bytes after a job's arguments");
    Fn fn = resolve_callable<Fn>(fn_bits);
    if constexpr (std::is_void_v<R>) {
        std::apply(fn, std::move(args));
        return outgoing_payload{};
    } else {
        const R result = std::apply(fn, std::move(args));
        return outgoing_payload::of(result);
    }
}

template <class R, class Fn, class T>
outgoing_payload map_entry(std::uintptr_t fn_bits, const std::byte* data, std::size_t size) {
    const std::vector<T> items = tandem::decode<std::vector<T>>(data, size, &populate_pages);
    Fn fn = resolve_callable<Fn>(fn_bits);
    std::vector<R> results;
    results.reserve(items.size());
    for (const T& x : items) results.push_back(fn(x));
    return outgoing_payload::of(results);
}

template <class R, class Fn, class Params>
struct entry_for;
template <class R, class Fn, class... A>
struct entry_for<R, Fn, std::tuple<A...>> {
    static constexpr job_entry value = &call_entry<R, Fn, A...>;
    template <class... Args>
    static outgoing_payload encode(Args&&... args) {
        return encode_as<A...>(static_cast<Args&&>(args)...);
    }

private:
    template <class... Want, class... Args>
    static outgoing_payload encode_as(Args&&... args) {
        // Values of the parameter's own type are encoded in place (a 64 MiB vector is not
        // copied first); others are converted, as the call would.
        return outgoing_payload::of(param_view<Want>(static_cast<Args&&>(args))...);
    }
    template <class Want, class Arg>
    static decltype(auto) param_view(Arg&& arg) {
        if constexpr (std::is_same_v<std::remove_cvref_t<Arg>, Want>) {
            return static_cast<const Want&>(arg);
        } else {
            return Want(static_cast<Arg&&>(arg));
        }
    }
};

/// An exception_ptr to a new E. Thrown in place, so no temporary E outlives the call: a
/// temporary's copy-on-write message, released here after the receiving thread already
/// dropped its copy, is the one race ThreadSanitizer cannot see through libstdc++.
template <class E, class... A>
std::exception_ptr make_failure(A&&... args) {
    try {
        throw E(static_cast<A&&>(args)...);
    } catch (...) {
        return std::current_exception();
    }
}

inline std::string describe_exit(pid_t pid, process::exit_status status) {
    const char* verb = status.is_signal() ? " was " : " ";
    return "tandem: worker process " + std::to_string(pid) + verb + status.describe() + " while running the job";
}

} // namespace detail

/// Worker processes with one FIFO queue, shared by any number of loops and threads.
///
///   tandem::process_pool procs({.workers = 4});                // first thing in main
///   double r = co_await procs.run(sum_sqrt, 20'000'000L);       // the loop keeps serving
///   std::future<double> f = procs.submit(sum_sqrt, 1'000L);     // from plain code
///   std::vector<long> sq = co_await procs.map(square, inputs, 1000);
///
/// fn is a function pointer or a capture-less lambda: state cannot follow a job into another
/// process, so pass it as an argument. Arguments and results are any type codec<T> knows.
///
/// Destruction (or shutdown()) finishes running jobs and cancels queued ones;
/// shutdown_now() kills the running ones too.
class process_pool {
public:
    using clock = std::chrono::steady_clock;

    explicit process_pool(process_pool_options options = {})
        : m_options(options), m_zygote(detail::zygote::instance(options.allow_threads)) {
        const std::size_t n = m_options.workers ? m_options.workers : detail::hardware_threads();
        m_slots.resize(n);
        int reports[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, reports) != 0) detail::throw_errno("tandem: socketpair");
        m_reports.reset(reports[0]);
        m_reports_for_zygote.reset(reports[1]);
        m_board = process::start_board::create(n);
        m_epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
        m_wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!m_epoll || !m_wake) detail::throw_errno("tandem: process_pool setup");
        watch(m_reports.get(), reports_key);
        watch(m_wake.get(), wake_key);
        m_zygote_pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, m_zygote->pid(), 0)));
        if (m_zygote_pidfd) watch(m_zygote_pidfd.get(), zygote_key);
        try {
            std::lock_guard lock(m_mutex);
            for (std::size_t i = 0; i < n; ++i) spawn_locked(i);
        } catch (const std::system_error& e) {
            if (e.code() != std::errc::too_many_files_open) throw;
            rlimit limit{};
            ::getrlimit(RLIMIT_NOFILE, &limit);
            throw std::system_error(e.code(), "tandem: a process_pool of " + std::to_string(n) +
                                                  " workers needs a descriptor per worker, and this process may open " +
                                                  std::to_string(limit.rlim_cur) +
                                                  " (RLIMIT_NOFILE): use fewer workers or raise the limit");
        }
        m_dispatcher = std::thread([this] { dispatch(); });
    }
    explicit process_pool(std::size_t workers) : process_pool(process_pool_options{.workers = workers}) {}
    process_pool(const process_pool&) = delete;
    process_pool& operator=(const process_pool&) = delete;
    ~process_pool() { stop(true); }

    /// Runs fn(args...) in a worker process. The task yields the result, or throws
    /// remote_error (fn threw), worker_crashed (the worker died), timed_out (past the job's
    /// timeout) or cancelled. Cancelling the task withdraws a queued job and kills the worker
    /// of a running one.
    template <class F, class... Args>
        requires(!std::is_same_v<std::remove_cvref_t<F>, job_options>)
    [[nodiscard]] auto run(F&& fn, Args&&... args) {
        return run(job_options{}, static_cast<F&&>(fn), static_cast<Args&&>(args)...);
    }
    template <class F, class... Args>
    [[nodiscard]] auto run(job_options o, F&& fn, Args&&... args) -> task<detail::remote_result_t<std::decay_t<F>, Args...>> {
        using R = detail::remote_result_t<std::decay_t<F>, Args...>;
        return await_job<R>(*this,
                            detail::process_job_ref(make_job<detail::awaited_process_job<R>>(o, fn, static_cast<Args&&>(args)...)));
    }

    /// Runs fn(args...) in a worker and returns a future, for code without a loop. Blocks
    /// while the queue is full. The future holds the same exceptions run() throws.
    template <class F, class... Args>
        requires(!std::is_same_v<std::remove_cvref_t<F>, job_options>)
    [[nodiscard]] auto submit(F&& fn, Args&&... args) {
        return submit(job_options{}, static_cast<F&&>(fn), static_cast<Args&&>(args)...);
    }
    template <class F, class... Args>
    [[nodiscard]] auto submit(job_options o, F&& fn, Args&&... args) {
        using R = detail::remote_result_t<std::decay_t<F>, Args...>;
        auto* job = make_job<detail::future_process_job<R>>(o, fn, static_cast<Args&&>(args)...);
        std::future<R> result = job->m_promise.get_future();
        enqueue_blocking(*job); // takes the creator's reference
        return result;
    }

    /// fn applied to every element of inputs, in order, in chunks of chunk_size elements per
    /// job (one round trip per chunk). The inputs are encoded before map returns, so the
    /// range need not outlive the task. From plain code: sync_wait(pool.map(...)).
    template <class F, std::ranges::input_range Range>
    [[nodiscard]] auto map(F fn, const Range& inputs, std::size_t chunk_size = 1) {
        using T = std::ranges::range_value_t<Range>;
        using Fn = std::decay_t<F>;
        static_assert(detail::remote_callable<Fn>, "tandem: process_pool needs a function pointer or a capture-less lambda");
        using R = std::remove_cvref_t<std::invoke_result_t<Fn&, const T&>>;
        static_assert(!std::is_void_v<R>, "tandem: process_pool::map needs a function that returns a value");
        if (chunk_size == 0) chunk_size = 1;
        std::vector<task<std::vector<R>>> parts;
        std::vector<T> chunk;
        chunk.reserve(chunk_size);
        auto flush = [&] {
            auto* job = new detail::awaited_process_job<std::vector<R>>(&detail::map_entry<R, Fn, T>, detail::callable_bits<Fn>(fn),
                                                                        detail::outgoing_payload::of(chunk), m_options.job_timeout);
            parts.push_back(await_job<std::vector<R>>(*this, detail::process_job_ref(job)));
            chunk.clear();
        };
        for (const auto& x : inputs) {
            chunk.push_back(x);
            if (chunk.size() == chunk_size) flush();
        }
        if (!chunk.empty()) flush();
        return gather<R>(std::move(parts));
    }

    /// Graceful: stop accepting, cancel queued jobs, let running ones finish, wait for every
    /// worker to exit. Idempotent; the destructor calls it.
    void shutdown() { stop(true); }
    /// Immediate: as shutdown(), but running jobs are killed with their workers (their
    /// awaiters get tandem::cancelled).
    void shutdown_now() { stop(false); }

    std::size_t size() const noexcept { return m_slots.size(); }
    /// Jobs waiting for a worker.
    std::size_t queued() const {
        std::lock_guard lock(m_mutex);
        return m_queued;
    }
    /// Jobs sent to a worker and not yet answered.
    std::size_t running() const {
        std::lock_guard lock(m_mutex);
        std::size_t n = 0;
        for (const worker_slot& s : m_slots) n += s.job != nullptr;
        return n;
    }
    /// The worker processes alive now (their pids).
    std::vector<pid_t> worker_pids() const {
        std::lock_guard lock(m_mutex);
        std::vector<pid_t> pids;
        for (const worker_slot& s : m_slots)
            if (s.alive && s.pid > 0) pids.push_back(s.pid);
        return pids;
    }
    /// Blocks until every worker has started and run its initializer (or the pool broke).
    /// Never needed for correctness (jobs wait for workers); for start-up timing and tests.
    void wait_ready() const {
        std::unique_lock lock(m_mutex);
        m_ready.wait(lock, [&] {
            if (m_broken || m_closing) return true;
            for (const worker_slot& s : m_slots)
                if (!(s.alive && s.spawned && s.ready)) return false;
            return true;
        });
    }
    /// Workers started so far, replacements included.
    std::size_t workers_started() const {
        std::lock_guard lock(m_mutex);
        return m_started;
    }
    /// The zygote that forks this pool's workers.
    pid_t zygote_pid() const noexcept { return m_zygote->pid(); }
    const process_pool_options& options() const noexcept { return m_options; }

private:
    struct worker_slot {
        detail::unique_fd channel;
        pid_t pid = 0;
        std::uint32_t generation = 0;
        bool alive = false;   // spawn requested, exit not yet reported
        bool spawned = false; // pid known
        bool ready = false;   // initializer done
        bool leaving = false; // told to quit or killed: its exit is expected
        bool settling = false; // its last reply is being decoded: not idle yet
        detail::process_job* job = nullptr;
        clock::time_point deadline = clock::time_point::max();
        std::size_t jobs_done = 0;
        clock::time_point respawn_at = clock::time_point::max();
    };

    static constexpr std::uint64_t reports_key = std::uint64_t{1} << 62;
    static constexpr std::uint64_t wake_key = reports_key + 1;
    static constexpr std::uint64_t zygote_key = reports_key + 2;

    template <class, class, class>
    friend class detail::pool_run_awaiter;
    template <class R>
    using run_awaiter = detail::pool_run_awaiter<process_pool, detail::awaited_process_job<R>, R>;
    static constexpr const char* run_name = "process_pool::run";
    std::chrono::microseconds spin() const noexcept { return m_options.spin; }

    template <class Job, class F, class... Args>
    Job* make_job(const job_options& o, const F& fn, Args&&... args) {
        using Fn = std::decay_t<F>;
        static_assert(detail::remote_callable<Fn>,
                      "tandem: process_pool needs a function pointer or a capture-less lambda: captured state cannot "
                      "follow a job into another process, pass it as an argument");
        using params = typename detail::remote_params<Fn, Args...>::type;
        using R = detail::remote_result_t<Fn, Args...>;
        using entry = detail::entry_for<R, Fn, params>;
        const Fn& callable = fn;
        return new Job(entry::value, detail::callable_bits<Fn>(callable), entry::encode(static_cast<Args&&>(args)...),
                       o.timeout.count() ? o.timeout : m_options.job_timeout);
    }

    template <class R>
    static task<R> await_job(process_pool& pool, detail::process_job_ref job) {
        auto* raw = static_cast<detail::awaited_process_job<R>*>(job.release());
        if constexpr (std::is_void_v<R>) {
            co_await run_awaiter<R>(pool, raw);
        } else {
            co_return co_await run_awaiter<R>(pool, raw);
        }
    }

    template <class R>
    static task<std::vector<R>> gather(std::vector<task<std::vector<R>>> parts) {
        std::vector<std::vector<R>> chunks = co_await when_all(std::move(parts));
        std::size_t total = 0;
        for (const auto& c : chunks) total += c.size();
        std::vector<R> out;
        out.reserve(total);
        for (auto& c : chunks)
            for (auto& x : c) out.push_back(std::move(x));
        co_return out;
    }

    void watch(int fd, std::uint64_t key) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = key;
        if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) detail::throw_errno("tandem: epoll_ctl");
    }
    void wake_dispatcher() noexcept {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(m_wake.get(), &one, sizeof one);
    }

    // ---- submission (any thread) ----------------------------------------------------------

    void check_open_locked() const {
        if (m_closing) throw std::logic_error("tandem: process_pool is shutting down");
    }

    /// Loop thread: queues an awaited job (or parks it while the queue is full).
    void enqueue_awaited(detail::process_job& job) {
        std::unique_lock lock(m_mutex);
        check_open_locked();
        job.add_ref(); // the pool's
        if (m_broken) {
            fail_later_locked(job);
            return;
        }
        if (m_options.max_queued != 0 && m_queued >= m_options.max_queued) {
            job.m_overflow = true;
            m_overflow.push_back(job);
            return;
        }
        push_locked(job);
    }

    /// Any thread: queues a job, waiting for room if the queue is bounded and full. Takes
    /// over the caller's reference.
    void enqueue_blocking(detail::process_job& job) {
        std::unique_lock lock(m_mutex);
        if (m_options.max_queued != 0 && m_queued >= m_options.max_queued) {
            ++m_blocked;
            m_space.wait(lock, [&] { return m_closing || m_broken || m_queued < m_options.max_queued; });
            --m_blocked;
            if (m_closing && m_blocked == 0) m_space.notify_all();
        }
        if (m_closing) {
            lock.unlock();
            job.m_state.store(detail::process_job::state::running);
            job.complete(nullptr, detail::make_failure<cancelled>());
            throw std::logic_error("tandem: process_pool is shutting down");
        }
        if (m_broken) {
            fail_later_locked(job);
            return;
        }
        push_locked(job);
    }

    /// The pool cannot run jobs (its initializer failed): the job fails from the dispatcher.
    void fail_later_locked(detail::process_job& job) {
        job.leave_queue();
        m_failing.push_back(job);
        wake_dispatcher();
    }

    /// Hands the job to an idle worker, or queues it.
    void push_locked(detail::process_job& job) {
        for (std::size_t i = 0; i < m_slots.size(); ++i) {
            if (idle(m_slots[i])) {
                if (assign_locked(i, job)) return;
            }
        }
        m_queue.push_back(job);
        ++m_queued;
    }

    static bool idle(const worker_slot& s) noexcept {
        return s.alive && s.spawned && s.ready && !s.leaving && !s.settling && s.job == nullptr;
    }

    /// Sends the job to worker i. False if the worker is gone (the job did not start).
    bool assign_locked(std::size_t i, detail::process_job& job) {
        worker_slot& s = m_slots[i];
        const auto h = detail::frame_header::job(++m_next_id, reinterpret_cast<std::uintptr_t>(job.m_entry), job.m_fn);
        if (job.m_args.send(s.channel.get(), h) != 0) {
            s.leaving = true; // dead or dying: its exit report replaces it
            m_zygote->kill(s.pid);
            return false;
        }
        // A queued job becomes running. A re-dispatched one is running already, or detached
        // if its awaiter just left (stop_running then finds it on this worker).
        auto queued = detail::process_job::state::queued;
        job.m_state.compare_exchange_strong(queued, detail::process_job::state::running, std::memory_order_acq_rel);
        job.m_slot = i;
        job.m_sent_id = h.job_id();
        s.job = &job;
        if (job.m_timeout.count() > 0) {
            s.deadline = clock::now() + job.m_timeout;
            if (s.deadline < m_next_wake) wake_dispatcher();
        }
        return true;
    }

    /// Worker i is free: give it the next queued job, if any.
    void feed_locked(std::size_t i) {
        while (!m_queue.empty() && idle(m_slots[i])) {
            detail::process_job& job = m_queue.pop_front();
            const bool requeued = std::exchange(job.m_requeued, false);
            --m_queued;
            refill_locked();
            if (!assign_locked(i, job)) {
                job.m_requeued = requeued;
                m_queue.push_front(job);
                ++m_queued;
                return;
            }
        }
    }

    /// A queue slot was freed: move a parked awaiter in, or let a blocked submit() go.
    void refill_locked() noexcept {
        if (!m_overflow.empty()) {
            detail::process_job& next = m_overflow.pop_front();
            next.m_overflow = false;
            m_queue.push_back(next);
            ++m_queued;
        } else if (m_blocked != 0) {
            m_space.notify_one();
        }
    }

    /// Loop thread: takes back a job no worker has. True if removed (pool's reference dropped).
    bool withdraw(detail::process_job& job) noexcept {
        {
            std::lock_guard lock(m_mutex);
            if (job.m_state.load(std::memory_order_relaxed) != detail::process_job::state::queued) return false;
            job.unlink();
            if (!job.m_overflow) {
                --m_queued;
                refill_locked();
            }
            job.m_state.store(detail::process_job::state::detached, std::memory_order_relaxed);
        }
        job.release();
        return true;
    }

    /// Loop thread: the awaiter of a running job left; kill its worker (the job's result
    /// would be dropped anyway, and the CPU is better spent on the next job).
    void stop_running(detail::process_job& job) noexcept {
        bool drop = false;
        {
            std::lock_guard lock(m_mutex);
            if (job.m_slot < m_slots.size() && m_slots[job.m_slot].job == &job) {
                worker_slot& s = m_slots[job.m_slot];
                s.job = nullptr;
                s.leaving = true;
                s.deadline = clock::time_point::max();
                m_zygote->kill(s.pid);
                drop = true;
            } else if (job.m_requeued) {
                // Back in the queue after its worker died idle (redispatch_locked).
                job.m_requeued = false;
                job.unlink();
                --m_queued;
                refill_locked();
                drop = true;
            }
        }
        if (drop) job.release(); // the pool's
    }

    // ---- the dispatcher thread -------------------------------------------------------------

    void spawn_locked(std::size_t i) {
        worker_slot& s = m_slots[i];
        const std::uint32_t generation = s.generation + 1;
        s = worker_slot{};
        s.generation = generation;
        auto [parent_end, worker_end] = detail::make_channel();
        const std::uint64_t token = (std::uint64_t{s.generation} << 32) | i;
        if (const int err = m_zygote->spawn(worker_end.get(), m_reports_for_zygote.get(), m_board.fd(), token,
                                            m_options.initializer, m_options.spin)) {
            m_broken = detail::make_failure<std::system_error>(err, std::system_category(),
                                                                 "tandem: the process-pool zygote is gone; cannot start workers");
            return;
        }
        watch(parent_end.get(), token);
        s.channel = std::move(parent_end);
        s.alive = true;
        ++m_started;
    }

    void dispatch() {
        ::pthread_setname_np(::pthread_self(), "tandem-procpool");
        static_assert(detail::max_message > 0);
        std::vector<std::byte> buffer(detail::max_message);
        epoll_event events[32];
        for (;;) {
            int timeout = -1;
            {
                std::lock_guard lock(m_mutex);
                if (m_closing && live_locked() == 0 && m_failing.empty()) break;
                m_next_wake = clock::time_point::max();
                std::size_t busy = 0;
                for (const worker_slot& s : m_slots) {
                    busy += s.job != nullptr;
                    if (s.job) m_next_wake = std::min(m_next_wake, s.deadline);
                    if (!s.alive) m_next_wake = std::min(m_next_wake, s.respawn_at);
                }
                m_in_flight.store(busy, std::memory_order_relaxed);
                if (m_next_wake != clock::time_point::max()) {
                    const auto left = std::chrono::ceil<std::chrono::milliseconds>(m_next_wake - clock::now()).count();
                    timeout = static_cast<int>(std::clamp<long long>(left, 0, 60'000));
                }
            }
            int n = 0;
            if (m_options.spin.count() > 0 && m_in_flight.load(std::memory_order_relaxed) != 0) {
                // A reply is due: poll for it a little before sleeping.
                const auto until = clock::now() + m_options.spin;
                while ((n = ::epoll_wait(m_epoll.get(), events, 32, 0)) == 0 && clock::now() < until)
                    std::this_thread::yield();
            }
            if (n == 0) n = ::epoll_wait(m_epoll.get(), events, 32, timeout);
            for (int e = 0; e < n; ++e) {
                const std::uint64_t key = events[e].data.u64;
                if (key == wake_key) {
                    std::uint64_t count;
                    [[maybe_unused]] auto r = ::read(m_wake.get(), &count, sizeof count);
                } else if (key == reports_key) {
                    read_reports(buffer.data());
                } else if (key == zygote_key) {
                    zygote_died();
                } else {
                    read_worker(key, buffer.data());
                }
            }
            fail_pending();
            expire_and_respawn();
        }
    }

    std::size_t live_locked() const noexcept {
        std::size_t n = 0;
        for (const worker_slot& s : m_slots) n += s.alive;
        return n;
    }

    worker_slot* slot_for(std::uint64_t token) noexcept {
        const std::size_t i = token & 0xffffffffu;
        if (i >= m_slots.size() || m_slots[i].generation != static_cast<std::uint32_t>(token >> 32)) return nullptr;
        return &m_slots[i];
    }

    void read_reports(std::byte* buffer) {
        for (;;) {
            detail::incoming_frame f;
            int got;
            try {
                got = f.receive(m_reports.get(), buffer, MSG_DONTWAIT);
            } catch (const std::exception&) {
                continue; // only the zygote writes here
            }
            if (got <= 0) return;
            std::unique_lock lock(m_mutex);
            if (f.header.kind() == detail::frame_kind::spawned) {
                if (worker_slot* s = slot_for(f.header.token())) {
                    s->pid = f.header.pid();
                    s->spawned = true;
                    m_ready.notify_all();
                    if (s->leaving || m_closing) m_zygote->kill(s->pid);
                    feed_locked(static_cast<std::size_t>(s - m_slots.data()));
                }
            } else if (f.header.kind() == detail::frame_kind::spawn_failed) {
                if (worker_slot* s = slot_for(f.header.token())) {
                    s->alive = false;
                    s->channel.reset();
                    s->respawn_at = clock::now() + std::chrono::milliseconds(100); // EAGAIN from fork: try again
                }
            } else if (f.header.kind() == detail::frame_kind::exited) {
                const pid_t pid = f.header.pid();
                for (std::size_t i = 0; i < m_slots.size(); ++i) {
                    if (m_slots[i].alive && m_slots[i].pid == pid) {
                        worker_exited(lock, i, f.header.wait_status());
                        break;
                    }
                }
            }
        }
    }

    /// Worker i was reaped: fail its job if the worker had taken it (the start board says),
    /// or give it to another worker if not, and replace the worker.
    void worker_exited(std::unique_lock<std::mutex>& lock, std::size_t i, int status) {
        worker_slot& s = m_slots[i];
        detail::process_job* job = std::exchange(s.job, nullptr);
        const pid_t pid = s.pid;
        s.alive = false;
        s.channel.reset();
        if (job && m_board.started(i) != job->m_sent_id) {
            redispatch_locked(*job); // it died idle: the job never started, so it is not lost
            job = nullptr;
        }
        if (!m_closing && !m_broken) {
            spawn_locked(i);
        } else {
            m_space.notify_all();
        }
        lock.unlock();
        if (job) {
            const auto how = process::exit_status::from_wait_status(status);
            job->complete(nullptr, detail::make_failure<worker_crashed>(pid, how.signal(), how.code(),
                                                                        detail::describe_exit(pid, how)));
        }
        lock.lock();
    }

    void read_worker(std::uint64_t token, std::byte* buffer) {
        for (;;) {
            int fd;
            {
                std::lock_guard lock(m_mutex);
                worker_slot* s = slot_for(token);
                if (!s || !s->channel) return;
                fd = s->channel.get();
            }
            detail::incoming_frame f;
            int got;
            std::exception_ptr malformed;
            try {
                got = f.receive(fd, buffer, MSG_DONTWAIT);
            } catch (...) {
                malformed = std::current_exception();
                got = 1;
            }
            if (got == -EAGAIN) return;
            std::unique_lock lock(m_mutex);
            worker_slot* s = slot_for(token);
            if (!s) return;
            const std::size_t i = static_cast<std::size_t>(s - m_slots.data());
            if (got <= 0) {
                // End of stream: the worker died (its exit report follows) or closed its end.
                ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
                if (!s->leaving && s->spawned) m_zygote->kill(s->pid);
                s->leaving = true;
                return;
            }
            const detail::frame_kind kind = f.header.kind();
            if (!malformed && kind == detail::frame_kind::ready) {
                s->ready = true;
                m_ready.notify_all();
                if (m_closing) quit_locked(*s);
                feed_locked(i);
                continue;
            }
            if (!malformed && kind == detail::frame_kind::init_failed) {
                std::string why = "unknown";
                try {
                    auto [type, what] = tandem::decode<std::pair<std::string, std::string>>(f.data(), f.size());
                    why = type + ": " + what;
                } catch (...) {
                }
                m_ready.notify_all();
                if (!m_broken)
                    m_broken = detail::make_failure<remote_error>("tandem::initializer_failed", "the process_pool initializer threw " + why);
                s->leaving = true;
                while (!m_queue.empty()) {
                    detail::process_job& job = m_queue.pop_front();
                    job.leave_queue();
                    m_failing.push_back(job);
                }
                m_queued = 0;
                while (!m_overflow.empty()) {
                    detail::process_job& job = m_overflow.pop_front();
                    job.leave_queue();
                    m_failing.push_back(job);
                }
                m_space.notify_all();
                return;
            }
            if (malformed || (kind != detail::frame_kind::result && kind != detail::frame_kind::error)) {
                // Not ours, or broken: the worker cannot be trusted with another job.
                if (!malformed)
                    malformed = detail::make_failure<detail::protocol_error>("tandem: unexpected message from a worker");
                detail::process_job* job = std::exchange(s->job, nullptr);
                s->leaving = true;
                s->deadline = clock::time_point::max();
                if (s->spawned) m_zygote->kill(s->pid);
                ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
                lock.unlock();
                if (job) job->complete(nullptr, malformed);
                return;
            }
            detail::process_job* job = std::exchange(s->job, nullptr);
            s->deadline = clock::time_point::max();
            ++s->jobs_done;
            // Decode before the worker gets another job: a reply that does not decode means
            // the worker cannot be trusted, and no innocent job should be on it then.
            s->settling = true;
            lock.unlock();
            const bool decoded = job ? job->complete(&f, nullptr) : true; // off the loop thread
            lock.lock();
            s = slot_for(token);
            if (!s) return;
            s->settling = false;
            if (!decoded) {
                s->leaving = true;
                m_zygote->kill(s->pid);
                ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
                return;
            }
            if (m_closing || (m_options.max_jobs_per_worker != 0 && s->jobs_done >= m_options.max_jobs_per_worker)) {
                quit_locked(*s);
            } else {
                feed_locked(i);
            }
        }
    }

    /// A job whose worker died before taking it goes back to the front of the queue (or to
    /// an idle worker). Its state stays `running`: withdraw() cannot take it back, and an
    /// awaiter that leaves finds it through stop_running().
    void redispatch_locked(detail::process_job& job) {
        if (m_closing || m_broken) {
            m_failing.push_back(job);
            wake_dispatcher();
            return;
        }
        for (std::size_t i = 0; i < m_slots.size(); ++i)
            if (idle(m_slots[i]) && assign_locked(i, job)) return;
        job.m_requeued = true;
        m_queue.push_front(job);
        ++m_queued;
    }

    /// Asks a worker to exit after its current job (recycling, shutdown).
    void quit_locked(worker_slot& s) noexcept {
        if (s.leaving) return;
        s.leaving = true;
        if (s.job == nullptr) detail::outgoing_payload{}.send(s.channel.get(), detail::frame_header::quit());
    }

    void zygote_died() {
        std::unique_lock lock(m_mutex);
        ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, m_zygote_pidfd.get(), nullptr);
        if (!m_broken)
            m_broken = detail::make_failure<std::runtime_error>("tandem: the process-pool zygote died; the pool cannot start workers");
        for (std::size_t i = 0; i < m_slots.size(); ++i) {
            if (m_slots[i].alive) worker_exited(lock, i, SIGKILL); // its workers die with it (PDEATHSIG)
        }
        for (auto* list : {&m_queue, &m_overflow}) { // parked jobs too: none may hang
            while (!list->empty()) {
                detail::process_job& job = list->pop_front();
                job.leave_queue();
                m_failing.push_back(job);
            }
        }
        m_queued = 0;
        m_space.notify_all();
        m_ready.notify_all();
    }

    /// Jobs that can never run (the pool is broken) fail here, off the submitting thread.
    void fail_pending() {
        detail::intrusive_list<detail::process_job> failing;
        std::exception_ptr why;
        {
            std::lock_guard lock(m_mutex);
            if (m_failing.empty()) return;
            while (!m_failing.empty()) failing.push_back(m_failing.pop_front());
            why = m_broken ? m_broken : detail::make_failure<cancelled>();
        }
        while (!failing.empty()) failing.pop_front().complete(nullptr, why);
    }

    void expire_and_respawn() {
        std::vector<detail::process_job*> expired;
        {
            std::lock_guard lock(m_mutex);
            const auto now = clock::now();
            for (std::size_t i = 0; i < m_slots.size(); ++i) {
                worker_slot& s = m_slots[i];
                if (s.job && s.deadline <= now) {
                    expired.push_back(std::exchange(s.job, nullptr));
                    s.deadline = clock::time_point::max();
                    s.leaving = true;
                    m_zygote->kill(s.pid);
                }
                if (!s.alive && s.respawn_at <= now && !m_closing && !m_broken) spawn_locked(i);
            }
        }
        for (detail::process_job* job : expired) job->complete(nullptr, detail::make_failure<timed_out>());
    }

    void stop(bool finish_running) noexcept {
        detail::intrusive_list<detail::process_job> abandoned;
        std::vector<detail::process_job*> killed;
        {
            std::unique_lock lock(m_mutex);
            if (!m_dispatcher.joinable()) return;
            m_closing = true;
            for (auto* list : {&m_queue, &m_overflow}) {
                while (!list->empty()) {
                    detail::process_job& job = list->pop_front();
                    job.leave_queue();
                    abandoned.push_back(job);
                }
            }
            m_queued = 0;
            for (worker_slot& s : m_slots) {
                if (!s.alive) continue;
                if (s.job && !finish_running) {
                    killed.push_back(std::exchange(s.job, nullptr));
                    s.leaving = true;
                    if (s.spawned) m_zygote->kill(s.pid);
                } else if (!s.job && s.ready) {
                    quit_locked(s);
                } else if (!s.ready && s.spawned) {
                    s.leaving = true;
                    m_zygote->kill(s.pid); // still starting: nothing to finish
                }
            }
            m_space.notify_all();
            m_space.wait(lock, [&] { return m_blocked == 0; });
        }
        wake_dispatcher();
        while (!abandoned.empty()) abandoned.pop_front().complete(nullptr, detail::make_failure<cancelled>());
        for (detail::process_job* job : killed) job->complete(nullptr, detail::make_failure<cancelled>());
        m_dispatcher.join();
    }

    process_pool_options m_options;
    std::shared_ptr<detail::zygote> m_zygote;
    mutable std::mutex m_mutex;
    std::condition_variable m_space;
    mutable std::condition_variable m_ready; // wait_ready()
    std::vector<worker_slot> m_slots;
    detail::intrusive_list<detail::process_job> m_queue;
    detail::intrusive_list<detail::process_job> m_overflow; // awaited jobs parked for queue room
    detail::intrusive_list<detail::process_job> m_failing;  // to fail from the dispatcher
    std::size_t m_queued = 0;
    std::size_t m_blocked = 0;
    std::size_t m_started = 0;
    std::uint64_t m_next_id = 0;
    bool m_closing = false;
    std::exception_ptr m_broken;
    clock::time_point m_next_wake = clock::time_point::max();
    std::atomic<std::size_t> m_in_flight{0}; // jobs on workers, as the dispatcher last saw
    detail::unique_fd m_reports;            // the zygote's reports arrive here
    detail::unique_fd m_reports_for_zygote; // passed to the zygote with each spawn
    detail::unique_fd m_epoll;
    detail::unique_fd m_wake;
    detail::unique_fd m_zygote_pidfd;
    process::start_board m_board; // which job each worker has taken
    std::thread m_dispatcher;
};

} // namespace tandem
