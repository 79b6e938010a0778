// tandem — the pool-job lifecycle, one home for thread_pool and process_pool: a job's
// references, its state machine (queued → running → finished → delivered, or detached),
// the posting of its outcome to the awaiting loop, the outcome itself, and one bounded queue
// with backpressure.
//
// Layer: detail (offload). The one detail/ floor above the loop, with pool_awaiter.hpp: a
// finished job reaches its loop through event_loop::post. Knows nothing of threads or
// processes; each pool says how a job runs.
#pragma once

#include "tandem/loop.hpp"
#include "tandem/detail/fork_generation.hpp"
#include "tandem/detail/intrusive_list.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace tandem::detail {

/// What every pool job is: queued in an intrusive list, reference-counted (the pool while it
/// holds the job, the awaiter if any, a completion on its way to a loop), and moving through
/// one state machine shared with pool_run_awaiter.
class job_base : public list_hook {
public:
    enum class state : std::uint8_t {
        queued,    // in the queue (or waiting for queue space): withdraw() may remove it
        running,   // a worker has it (or the pool is cancelling it)
        finished,  // the worker is posting the completion to the loop
        delivered, // the completion is in the loop's queue
        detached,  // the awaiter left (cancelled, destroyed): the worker drops the result
    };

    job_base() = default;
    job_base(const job_base&) = delete;
    job_base& operator=(const job_base&) = delete;

    void add_ref() noexcept { m_refs.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (m_refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }

    /// The pool takes the job out of its queue for good (to run it or to fail it): queued
    /// becomes running; any other state (a job the pool handles itself) stays.
    void leave_queue() noexcept {
        auto queued = state::queued;
        m_state.compare_exchange_strong(queued, state::running, std::memory_order_acq_rel);
    }

    std::atomic<state> m_state{state::queued};
    bool m_overflow = false; // waiting for queue space (guarded by the pool's mutex)

protected:
    virtual ~job_base() = default;

private:
    std::atomic<unsigned> m_refs{1};
};

/// Owning reference to a reference-counted job (add_ref/release): what a completion posted
/// to a loop, or a not-yet-started task, carries.
template <class Job>
class counted_ref {
public:
    explicit counted_ref(Job* job) noexcept : m_job(job) {}
    counted_ref(counted_ref&& other) noexcept : m_job(other.release()) {}
    counted_ref& operator=(counted_ref&&) = delete;
    ~counted_ref() {
        if (m_job) m_job->release();
    }
    Job* get() const noexcept { return m_job; }
    Job* release() noexcept {
        Job* job = m_job;
        m_job = nullptr;
        return job;
    }

private:
    Job* m_job;
};

/// Where an awaited job reports back (lives in the awaiting coroutine's frame).
class job_listener {
public:
    virtual void on_job_done() noexcept = 0;

protected:
    ~job_listener() = default;
};

/// A job's outcome: a value (or nothing, or a reference) or an exception.
template <class R>
class job_outcome {
public:
    template <class Call>
    void produce(Call&& call) noexcept {
        try {
            m_value.emplace(call());
        } catch (...) {
            m_error = std::current_exception();
        }
    }
    void fail(std::exception_ptr e) noexcept { m_error = std::move(e); }
    R take() {
        if (m_error) std::rethrow_exception(std::exchange(m_error, nullptr));
        return std::move(*m_value);
    }
    void deliver_to(std::promise<R>& p) noexcept {
        try {
            if (m_error) {
                p.set_exception(std::exchange(m_error, nullptr));
            } else {
                p.set_value(std::move(*m_value));
            }
        } catch (...) {
        }
    }

private:
    std::optional<R> m_value;
    std::exception_ptr m_error;
};

template <class R>
class job_outcome<R&> {
public:
    template <class Call>
    void produce(Call&& call) noexcept {
        try {
            m_value = std::addressof(call());
        } catch (...) {
            m_error = std::current_exception();
        }
    }
    void fail(std::exception_ptr e) noexcept { m_error = std::move(e); }
    R& take() {
        if (m_error) std::rethrow_exception(std::exchange(m_error, nullptr));
        return *m_value;
    }
    void deliver_to(std::promise<R&>& p) noexcept {
        try {
            if (m_error) {
                p.set_exception(std::exchange(m_error, nullptr));
            } else {
                p.set_value(*m_value);
            }
        } catch (...) {
        }
    }

private:
    R* m_value = nullptr;
    std::exception_ptr m_error;
};

template <>
class job_outcome<void> {
public:
    template <class Call>
    void produce(Call&& call) noexcept {
        try {
            call();
        } catch (...) {
            m_error = std::current_exception();
        }
    }
    void fail(std::exception_ptr e) noexcept { m_error = std::move(e); }
    void take() {
        if (m_error) std::rethrow_exception(std::exchange(m_error, nullptr));
    }
    void deliver_to(std::promise<void>& p) noexcept {
        try {
            if (m_error) {
                p.set_exception(std::exchange(m_error, nullptr));
            } else {
                p.set_value();
            }
        } catch (...) {
        }
    }

private:
    std::exception_ptr m_error;
};

/// The awaited half of a job (a pool's job type `Base` plus what pool_run_awaiter needs):
/// the loop to post to, the listener to resume, the outcome, and the one completion post.
template <class Base, class R>
class awaited_job_of : public Base {
public:
    using Base::Base;
    event_loop* m_loop = nullptr;
    job_listener* m_listener = nullptr; // loop thread only
    job_outcome<R> m_outcome;

protected:
    /// The worker is done with the job (m_outcome is set): running → finished → post →
    /// delivered, unless the awaiter has left (detached); then drop the pool's reference.
    /// The awaiter's abandon() waits while the state is `finished`, so the loop outlives the
    /// post.
    void deliver() noexcept {
        auto expected = job_base::state::running;
        if (this->m_state.compare_exchange_strong(expected, job_base::state::finished, std::memory_order_acq_rel)) {
            this->add_ref(); // the completion's
            m_loop->post([ref = counted_ref<awaited_job_of>(this)]() noexcept {
                if (job_listener* l = std::exchange(ref.get()->m_listener, nullptr)) l->on_job_done();
            });
            // From here the loop may run the completion and the awaiter may be gone: only
            // our own reference keeps the job alive.
            this->m_state.store(job_base::state::delivered, std::memory_order_release);
        }
        this->release();
    }
};

/// The default worker count: std::thread::hardware_concurrency(), at least 1.
inline std::size_t hardware_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

/// The process a pool belongs to. fork() copies a pool's memory into the child but none of
/// its threads, and a process pool's workers answer only the parent; so a forked copy must
/// neither use the pool (its jobs would never run, or would reach the parent's workers) nor
/// tear it down (joining threads it lacks, quitting workers that are not its own).
class pool_owner {
public:
    bool forked_copy() const noexcept { return m_process.forked_copy(); }
    /// Throws std::logic_error in a forked copy; `pool` names it ("thread_pool").
    void check(const char* pool) const {
        if (forked_copy())
            throw std::logic_error(std::string("tandem: a ") + pool + " serves only the process that created it, not a forked copy");
    }

private:
    fork_generation m_process;
};

/// A pool's one FIFO queue of jobs no worker has yet, bounded by max_queued (0: no bound),
/// with backpressure: past the bound an awaited job is parked (its awaiter stays suspended)
/// and a blocking submitter waits. Freeing a place moves the oldest parked job in, or lets
/// one blocked submitter go. Every *_locked member needs the pool's mutex held.
template <class Job>
class bounded_job_queue {
public:
    explicit bounded_job_queue(std::size_t max_queued) noexcept : m_max(max_queued) {}

    bool full_locked() const noexcept { return m_max != 0 && m_queued >= m_max; }
    std::size_t queued_locked() const noexcept { return m_queued; }
    std::size_t parked_locked() const noexcept { return m_parked; }
    bool empty_locked() const noexcept { return m_queue.empty(); }

    /// An awaited job (the pool's reference taken): parked if the queue is full. True if
    /// parked; false if the caller should hand it to a worker or push it.
    bool park_if_full_locked(Job& job) noexcept {
        if (!full_locked()) return false;
        job.m_overflow = true;
        m_overflow.push_back(job);
        ++m_parked;
        return true;
    }
    void push_back_locked(Job& job) noexcept {
        m_queue.push_back(job);
        ++m_queued;
    }
    /// Ahead of everything (a job that must not lose its turn).
    void push_front_locked(Job& job) noexcept {
        m_queue.push_front(job);
        ++m_queued;
    }
    /// The oldest queued job (the caller marks it running); a parked one takes its place.
    Job& pop_front_locked() noexcept {
        Job& job = m_queue.pop_front();
        --m_queued;
        refill_locked();
        return job;
    }
    /// Takes back a job (queued or parked) that no worker has; the caller drops the pool's
    /// reference. False if it is not ours to take.
    bool withdraw_locked(Job& job) noexcept {
        if (job.m_state.load(std::memory_order_relaxed) != Job::state::queued) return false;
        unlink_locked(job);
        job.m_state.store(Job::state::detached, std::memory_order_relaxed);
        return true;
    }
    /// Removes a job known to be in the queue or parked (its place is freed).
    void unlink_locked(Job& job) noexcept {
        job.unlink();
        if (job.m_overflow) {
            job.m_overflow = false;
            --m_parked;
        } else {
            --m_queued;
            refill_locked();
        }
    }
    /// Moves every queued and parked job to `out` (shutdown, a broken pool), each taken out
    /// of the queue for good (Job::leave_queue).
    void drain_locked(intrusive_list<Job>& out) noexcept {
        for (auto* list : {&m_queue, &m_overflow}) {
            while (!list->empty()) {
                Job& job = list->pop_front();
                job.m_overflow = false;
                job.leave_queue();
                out.push_back(job);
            }
        }
        m_queued = m_parked = 0;
        m_space.notify_all();
    }

    /// A blocking submitter: waits while the queue is full, unless `give_up()` (shutting
    /// down, broken).
    template <class GiveUp>
    void wait_for_room(std::unique_lock<std::mutex>& lock, GiveUp&& give_up) {
        if (!full_locked()) return;
        ++m_blocked;
        m_space.wait(lock, [&] { return give_up() || !full_locked(); });
        --m_blocked;
        if (m_blocked == 0) m_all_left.notify_all(); // close_locked may wait for us
    }
    /// In a forked copy of the program: the submitters blocked here are the parent's threads,
    /// which do not exist in this process; forget them, so the condition variables can be
    /// destroyed here (destroying one with waiters would wait for them forever).
    void forget_waiters_after_fork() noexcept {
        new (&m_space) std::condition_variable();
        new (&m_all_left) std::condition_variable();
        m_blocked = 0;
    }
    /// Wakes every blocked submitter (to see that the pool closes or broke).
    void wake_blocked() noexcept { m_space.notify_all(); }
    /// Shutdown: wakes the blocked submitters and waits until they have left.
    void wait_blocked_gone(std::unique_lock<std::mutex>& lock) {
        m_space.notify_all();
        m_all_left.wait(lock, [&] { return m_blocked == 0; });
    }

private:
    /// A place was freed: move the oldest parked job in, or let a blocked submitter go.
    void refill_locked() noexcept {
        if (!m_overflow.empty()) {
            Job& next = m_overflow.pop_front();
            next.m_overflow = false;
            --m_parked;
            m_queue.push_back(next);
            ++m_queued;
        } else if (m_blocked != 0) {
            m_space.notify_one();
        }
    }

    std::size_t m_max;
    intrusive_list<Job> m_queue;
    intrusive_list<Job> m_overflow; // awaited jobs parked for queue room
    std::size_t m_queued = 0;
    std::size_t m_parked = 0;
    std::size_t m_blocked = 0;
    std::condition_variable m_space;    // blocked submitters wait here for room
    std::condition_variable m_all_left; // shutdown waits here for them to leave
};

} // namespace tandem::detail
