// tandem — the one thing the core layer knows about whoever runs it: "resume this later".
// Layer: detail/core. event_loop implements it; sync primitives and awaiters call it.
#pragma once

#include <coroutine>

namespace tandem::detail {

class task_context;

class scheduler {
public:
    /// Queues a coroutine to be resumed by the scheduler's thread. Never resumes inline.
    virtual void schedule(std::coroutine_handle<> h, task_context* ctx) noexcept = 0;

    /// The scheduler running on this thread, or nullptr.
    static scheduler* current() noexcept { return t_current; }

protected:
    scheduler() = default;
    ~scheduler() = default;
    static void set_current(scheduler* s) noexcept { t_current = s; }

private:
    inline static thread_local scheduler* t_current = nullptr;
};

} // namespace tandem::detail
