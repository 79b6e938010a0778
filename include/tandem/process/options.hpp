// tandem — process_pool_options and job_options: what a process pool and one of its jobs
// can be told.
//
// Layer: process. Plain settings, no behaviour; here rather than in process_pool.hpp so that
// the wing below the face (workers.hpp) need not include the face.
#pragma once

#include "tandem/detail/std_chrono.hpp"

#include <cstddef>

namespace tandem {

struct process_pool_options {
    /// Worker processes; 0 means std::thread::hardware_concurrency() (at least 1).
    std::size_t workers = 0;
    /// Jobs allowed to wait for a worker; 0 means no bound. Past it, run() suspends its caller
    /// until a slot frees, and submit() blocks its thread.
    std::size_t max_queued = 0;
    /// Every job's time limit (0: none). Past it the worker is killed and replaced, and the
    /// job fails with tandem::timed_out. job_options::timeout overrides it per call.
    /// milliseconds::max() never expires; a negative one is std::invalid_argument.
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
    std::chrono::milliseconds timeout{0}; // 0: the pool's job_timeout; negative: std::invalid_argument
};

} // namespace tandem
