// tandem — a process-pool job: what travels (entry, function, encoded arguments, timeout),
// where its outcome goes (an awaiting task through awaited_job_of, or a std::future), and
// the errors a pool fails one with.
//
// Layer: process. Stands on the pool-job lifecycle (detail/pool_job.hpp) and the remote call;
// knows nothing of worker slots or the dispatcher.
#pragma once

#include "tandem/detail/pool_job.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/error.hpp"
#include "tandem/process/channel.hpp"
#include "tandem/process/exit_status.hpp"
#include "tandem/process/remote_call.hpp"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <future>
#include <string>
#include <sys/types.h>
#include <utility>

namespace tandem::detail {

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

    /// As job_base::leave_queue, and no longer a re-dispatched job in the queue.
    void leave_queue() noexcept {
        job_base::leave_queue();
        m_requeued = false;
    }

    job_entry m_entry;
    std::uintptr_t m_fn;
    outgoing_payload m_args;
    std::chrono::milliseconds m_timeout;
};

/// Owning reference to a process_job.
using process_job_ref = counted_ref<process_job>;

/// A job awaited by a coroutine: the outcome goes back through awaited_job_of::deliver.
template <class R>
class awaited_process_job final : public awaited_job_of<process_job, R> {
public:
    using awaited_job_of<process_job, R>::awaited_job_of;

    bool complete(const incoming_frame* frame, std::exception_ptr error) noexcept override {
        bool decoded = true;
        if (frame) {
            this->m_outcome.produce([&]() -> R { return decode_reply<R>(*frame, decoded); });
        } else {
            this->m_outcome.fail(std::move(error));
        }
        this->deliver();
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

/// "tandem: worker process 12 was killed by signal 9 (Killed) while running the job".
template <class = void> // compiled only where used (bench/README.md, "Include cost")
std::string describe_exit(pid_t pid, process::exit_status status) {
    const char* verb = status.is_signal() ? " was " : " ";
    return "tandem: worker process " + std::to_string(pid) + verb + status.describe() + " while running the job";
}

} // namespace tandem::detail
