// tandem — process_pool: CPU work in other processes, awaited from a coroutine while the
// loop keeps serving (Python's ProcessPoolExecutor and run_in_executor, without its failure
// modes).
//
// Layer: offload. The face of the process/ wing: options (process/options.hpp), run, submit,
// map and the counters. A job is (entry point, function, encoded arguments): workers are
// forks of this binary, so a function's address means the same there (process/remote_call.hpp).
// Arguments and results cross as codec<T> bytes (codec.hpp), large ones in a memfd
// (process/channel.hpp). The workers, their queue and the dispatcher thread are in
// process/workers.hpp; the zygote that forks them in process/zygote.hpp.
//
// What the peers lack:
// - A crash (signal, exit, abort) fails only the job that was running, with
//   tandem::worker_crashed; the worker is replaced and every other job carries on. A worker
//   that dies idle costs no job at all. Python's BrokenProcessPool fails the whole pool.
// - A job past its timeout, or whose awaiting task is cancelled, has its worker killed and
//   replaced. Threads cannot be killed safely; processes can.
// - Workers are forked from a single-threaded zygote (process/zygote.hpp), so replacing one
//   never forks a multi-threaded parent.
#pragma once

#include "tandem/codec.hpp"
#include "tandem/detail/pool_awaiter.hpp"
#include "tandem/detail/ranges.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/error.hpp"
#include "tandem/fwd.hpp"
#include "tandem/process/job.hpp"
#include "tandem/process/options.hpp"
#include "tandem/process/remote_call.hpp"
#include "tandem/process/workers.hpp"
#include "tandem/process/zygote.hpp"
#include "tandem/task.hpp"
#include "tandem/when.hpp"

#include <cstddef>
#include <future>
#include <stdexcept>
#include <sys/types.h>
#include <type_traits>
#include <utility>
#include <vector>

namespace tandem {

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
/// shutdown_now() kills the running ones too. The pool serves the process that built it: in
/// a fork()ed copy, run and submit throw std::logic_error and destruction leaves the
/// parent's workers alone.
///
/// A class template only so that a translation unit that includes this header and never
/// makes a pool compiles none of its bodies (bench/README.md, "Include cost"); the one
/// instantiation is the alias tandem::process_pool (fwd.hpp declares both). Its worker set
/// depends on Deferred, so that clang does not compile that either (detail/dependent.hpp).
template <class Deferred>
class basic_process_pool {
public:
    /// The public name inside the class too, so that `pool.~process_pool()` finds it.
    using process_pool = basic_process_pool;
    using clock = std::chrono::steady_clock;

    explicit basic_process_pool(process_pool_options options = {}) : m_workers(options) {}
    explicit basic_process_pool(std::size_t workers) : basic_process_pool(process_pool_options{.workers = workers}) {}
    basic_process_pool(const basic_process_pool&) = delete;
    basic_process_pool& operator=(const basic_process_pool&) = delete;
    ~basic_process_pool() = default; // m_workers: shutdown()

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
        m_workers.enqueue_blocking(*job); // takes the creator's reference
        return result;
    }

    /// fn applied to every element of inputs, in order, in chunks of chunk_size elements per
    /// job (one round trip per chunk). The inputs are encoded before map returns, so the
    /// range need not outlive the task. From plain code: sync_wait(pool.map(...)).
    template <class F, detail::input_range Range>
    [[nodiscard]] auto map(F fn, const Range& inputs, std::size_t chunk_size = 1) {
        using T = detail::range_value_t<Range>;
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
                                                                        detail::outgoing_payload::of(chunk), options().job_timeout);
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
    void shutdown() { m_workers.stop(true); }
    /// Immediate: as shutdown(), but running jobs are killed with their workers (their
    /// awaiters get tandem::cancelled).
    void shutdown_now() { m_workers.stop(false); }

    std::size_t size() const noexcept { return m_workers.size(); }
    /// Jobs waiting for a worker.
    std::size_t queued() const { return m_workers.queued(); }
    /// Jobs sent to a worker and not yet answered.
    std::size_t running() const { return m_workers.running(); }
    /// The worker processes alive now (their pids).
    std::vector<pid_t> worker_pids() const { return m_workers.worker_pids(); }
    /// Blocks until every worker has started and run its initializer (or the pool broke).
    /// Never needed for correctness (jobs wait for workers); for start-up timing and tests.
    void wait_ready() const { m_workers.wait_ready(); }
    /// Workers started so far, replacements included.
    std::size_t workers_started() const { return m_workers.workers_started(); }
    /// The zygote that forks this pool's workers.
    pid_t zygote_pid() const noexcept { return m_workers.zygote_pid(); }
    const process_pool_options& options() const noexcept { return m_workers.options(); }

private:
    template <class R>
    using run_awaiter = detail::pool_run_awaiter<detail::basic_worker_set<Deferred>, detail::awaited_process_job<R>, R>;

    template <class Job, class F, class... Args>
    Job* make_job(const job_options& o, const F& fn, Args&&... args) {
        using Fn = std::decay_t<F>;
        static_assert(detail::remote_callable<Fn>,
                      "tandem: process_pool needs a function pointer or a capture-less lambda: captured state cannot "
                      "follow a job into another process, pass it as an argument");
        using params = typename detail::remote_params<Fn, Args...>::type;
        using R = detail::remote_result_t<Fn, Args...>;
        using entry = detail::entry_for<R, Fn, params>;
        if (o.timeout.count() < 0) throw std::invalid_argument("tandem: a job's timeout cannot be negative (0: the pool's)");
        const Fn& callable = fn;
        return new Job(entry::value, detail::callable_bits<Fn>(callable), entry::encode(static_cast<Args&&>(args)...),
                       o.timeout.count() ? o.timeout : options().job_timeout);
    }

    template <class R>
    static task<R> await_job(basic_process_pool& pool, detail::process_job_ref job) {
        auto* raw = static_cast<detail::awaited_process_job<R>*>(job.release());
        if constexpr (std::is_void_v<R>) {
            co_await run_awaiter<R>(pool.m_workers, raw);
        } else {
            co_return co_await run_awaiter<R>(pool.m_workers, raw);
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

    detail::basic_worker_set<Deferred> m_workers;
};

} // namespace tandem
