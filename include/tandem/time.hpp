// tandem — sleeping and timeouts on the current loop.
//
// Layer: loop. Timers live in the loop's heap; a sleeping task's timer node is part of its
// awaiter, so a sleep allocates nothing. Resolution is the reactor's: nanoseconds with
// epoll_pwait2/ppoll, never rounded to whole milliseconds.
#pragma once

#include "tandem/detail/std_chrono.hpp"
#include "tandem/loop.hpp"
#include "tandem/task.hpp"
#include "tandem/when.hpp"

#include <coroutine>
#include <exception>
#include <utility>

namespace tandem {

namespace detail {

/// now + d without overflow: a duration too long to represent (nanoseconds::max(),
/// hours::max()) means "forever" and saturates to time_point::max(); a negative one means now.
template <class Rep, class Period>
event_loop::clock::time_point deadline_after(std::chrono::duration<Rep, Period> d) noexcept {
    using clock = event_loop::clock;
    const clock::time_point now = clock::now();
    if (d <= std::chrono::duration<Rep, Period>::zero()) return now;
    const clock::duration room = clock::time_point::max() - now;
    // Compared in floating point: converting d itself to the clock's ticks may overflow.
    using wide = std::chrono::duration<long double, clock::period>;
    if (std::chrono::duration_cast<wide>(d) >= wide(room)) return clock::time_point::max();
    return now + std::chrono::duration_cast<clock::duration>(d);
}

} // namespace detail

/// Awaitable returned by sleep_for / sleep_until.
class sleep_awaiter : detail::timer_node, detail::cancellable_wait<sleep_awaiter> {
public:
    explicit sleep_awaiter(event_loop::clock::time_point deadline) noexcept {
        this->deadline = deadline;
        on_expire = &expire;
    }
    sleep_awaiter(const sleep_awaiter&) = delete;
    sleep_awaiter& operator=(const sleep_awaiter&) = delete;
    ~sleep_awaiter() {
        if (queued()) tandem::detail::hooks(*m_loop).remove_timer(*this);
    }

    bool await_ready() const noexcept { return false; }
    using cancellable_wait::await_suspend;
    void await_resume() const { throw_if_cancelled(); }

private:
    friend cancellable_wait;
    template <class = void> // arms the timer: the queue's push is compiled only where a sleep is awaited
    bool start() {
        m_loop = &this_loop();
        // The end of time never comes: no timer, only cancellation ends this wait.
        if (deadline != event_loop::clock::time_point::max()) tandem::detail::hooks(*m_loop).add_timer(*this);
        return true;
    }
    bool stop() noexcept {
        if (queued()) tandem::detail::hooks(*m_loop).remove_timer(*this);
        return true;
    }
    static void expire(detail::timer_node* node) noexcept {
        auto* self = static_cast<sleep_awaiter*>(node);
        tandem::detail::hooks(*self->m_loop).schedule(self->complete(), self->context);
    }

    event_loop* m_loop = nullptr;
};

/// Suspends the current task until `deadline` (steady clock); time_point::max() is never.
/// Cancellable and cancel-safe.
[[nodiscard]] inline sleep_awaiter sleep_until(event_loop::clock::time_point deadline) noexcept {
    return sleep_awaiter{deadline};
}

/// Suspends the current task for `duration`; zero or negative still yields one turn. A
/// duration past the clock's range (nanoseconds::max()) sleeps until cancelled and arms no
/// timer. Cancellable: a cancelled sleep throws tandem::cancelled.
template <class Rep, class Period>
[[nodiscard]] sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> duration) noexcept {
    return sleep_awaiter{detail::deadline_after(duration)};
}

namespace detail {

/// Runs one child under a deadline: when the timer fires first the child is cancelled and,
/// once it has unwound, the awaiter reports timed_out.
template <class T>
class timeout_awaiter final : public single_child<T>, timer_node {
public:
    timeout_awaiter(task<T> t, event_loop::clock::time_point deadline) noexcept : single_child<T>(std::move(t)) {
        this->deadline = deadline;
        on_expire = &expire;
    }
    ~timeout_awaiter() {
        if (queued()) tandem::detail::hooks(*m_loop).remove_timer(*this);
    }

    decltype(auto) await_resume() {
        this->throw_if_parent_cancelled();
        if (m_timed_out && this->child_exception()) {
            try {
                std::rethrow_exception(this->child_exception());
            } catch (const cancelled&) {
                throw timed_out{};
            }
        }
        return this->take_result();
    }

private:
    bool before_start() override {
        m_loop = &this_loop();
        if (deadline != event_loop::clock::time_point::max()) tandem::detail::hooks(*m_loop).add_timer(*this); // max: no deadline
        return true;
    }
    void on_child_done() noexcept override {
        if (queued()) tandem::detail::hooks(*m_loop).remove_timer(*this);
    }
    static void expire(timer_node* node) noexcept {
        auto* self = static_cast<timeout_awaiter*>(node);
        self->m_timed_out = true;
        self->cancel_child();
    }

    event_loop* m_loop = nullptr;
    bool m_timed_out = false;
};

} // namespace detail

/// Runs `t` with a deadline. If it has not finished by then it is cancelled, awaited, and
/// tandem::timed_out is thrown (unless it completed anyway while unwinding, in which case
/// its result stands). Cancelling the caller cancels `t` and throws tandem::cancelled.
template <class T>
task<T> with_deadline(event_loop::clock::time_point deadline, task<T> t) {
    co_return co_await detail::timeout_awaiter<T>(std::move(t), deadline);
}

/// with_deadline(now + duration, t): asyncio.wait_for / tokio::time::timeout. A duration
/// past the clock's range (nanoseconds::max()) means no deadline.
template <class Rep, class Period, class T>
task<T> with_timeout(std::chrono::duration<Rep, Period> duration, task<T> t) {
    return with_deadline(detail::deadline_after(duration), std::move(t));
}

} // namespace tandem
