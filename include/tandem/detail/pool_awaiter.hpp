// tandem — the awaiter of thread_pool::run and process_pool::run: a job's trip to a worker
// and back, with cancellation. The job it awaits, its states and its completion post live in
// pool_job.hpp.
// Layer: detail (offload), with pool_job.hpp the one detail/ floor above the loop.
//
// A Pool provides, for its Job type (which has m_state, m_loop, m_listener, m_outcome and
// release()):
//   void enqueue_awaited(Job&)   queue the job (or park it while the queue is full)
//   bool withdraw(Job&)          take back a job no worker has started; true if removed
//   void stop_running(Job&)      the awaiter left a running job: ask it to stop (thread) or
//                                kill its worker (process)
//   std::chrono::microseconds spin() const   how long the loop polls for the completion
//   static constexpr const char* run_name    for the "not on a loop" error
// The job's completion reaches the loop through event_loop::post and calls on_job_done.
#pragma once

#include "tandem/error.hpp"
#include "tandem/loop.hpp"
#include "tandem/task.hpp"
#include "tandem/detail/cancellable_wait.hpp"
#include "tandem/detail/pool_job.hpp"

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>

namespace tandem::detail {

template <class Pool, class Job, class R>
class pool_run_awaiter final : public cancellable_wait<pool_run_awaiter<Pool, Job, R>>, job_listener {
public:
    pool_run_awaiter(Pool& pool, Job* job) noexcept : m_pool(&pool), m_job(job) {}
    pool_run_awaiter(const pool_run_awaiter&) = delete;
    pool_run_awaiter& operator=(const pool_run_awaiter&) = delete;
    ~pool_run_awaiter() {
        if (m_suspended) abandon(); // the loop is destroying our frame while the job is out
        m_job->release();
    }

    bool await_ready() const noexcept { return false; }

    R await_resume() {
        this->throw_if_cancelled();
        return m_job->m_outcome.take();
    }

private:
    using state = typename Job::state;
    friend class cancellable_wait<pool_run_awaiter>;

    bool start() {
        m_loop = event_loop::current();
        if (!m_loop) throw std::logic_error(std::string("tandem: ") + Pool::run_name + " must be awaited on an event loop");
        m_job->m_loop = m_loop;
        m_job->m_listener = this;
        m_pool->enqueue_awaited(*m_job);
        m_suspended = true;
        if (m_pool->spin().count() > 0) tandem::detail::hooks(*m_loop).expect_post_within(m_pool->spin());
        return true;
    }

    bool stop() noexcept {
        if (!take_back()) return false; // finished already: its completion is on the way and resumes us
        m_job->m_listener = nullptr;
        m_suspended = false;
        return true;
    }

    void on_job_done() noexcept override {
        m_suspended = false;
        tandem::detail::hooks(*m_loop).resume_now(this->complete(), this->context);
    }

    /// Our frame dies while the job is out: make sure nobody will touch us or our loop.
    void abandon() noexcept {
        m_job->m_listener = nullptr;
        if (take_back()) return;
        // The completion is being posted to our loop, which may be on its way out: wait
        // until the post is done (a few instructions).
        while (m_job->m_state.load(std::memory_order_acquire) == state::finished) std::this_thread::yield();
    }

    /// Takes the job back from the pool: withdraws it while queued, detaches it while running
    /// (and has the pool stop it). False once it has finished: its completion is on its way.
    /// The pool is reached only while it still holds the job. A pool finishes or fails every
    /// job before it is destroyed, so an awaiter that outlives its pool (a task suspended in a
    /// loop destroyed after the pool) never touches the dead pool.
    bool take_back() noexcept {
        if (m_job->m_state.load(std::memory_order_acquire) == state::queued && m_pool->withdraw(*m_job)) return true;
        state expected = state::running;
        if (!m_job->m_state.compare_exchange_strong(expected, state::detached, std::memory_order_acq_rel)) return false;
        m_pool->stop_running(*m_job);
        return true;
    }

    Pool* m_pool;
    Job* m_job;
    event_loop* m_loop = nullptr;
    bool m_suspended = false;
};

} // namespace tandem::detail
