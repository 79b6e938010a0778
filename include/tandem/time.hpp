// tandem — sleeping and timeouts on the current loop.
//
// Layer: loop. Timers live in the loop's heap; a sleeping task's timer node is part of its
// awaiter, so a sleep allocates nothing. Resolution is the reactor's: nanoseconds with
// epoll_pwait2/ppoll, never rounded to whole milliseconds.
#pragma once

#include "tandem/loop.hpp"
#include "tandem/task.hpp"
#include "tandem/when.hpp"

#include <chrono>
#include <coroutine>
#include <exception>
#include <utility>

namespace tandem {

/// Awaitable returned by sleep_for / sleep_until.
class sleep_awaiter : detail::timer_node, detail::cancel_slot {
public:
    explicit sleep_awaiter(event_loop::clock::time_point deadline) noexcept {
        this->deadline = deadline;
        on_expire = &expire;
        on_cancel = &cancel;
    }
    sleep_awaiter(const sleep_awaiter&) = delete;
    sleep_awaiter& operator=(const sleep_awaiter&) = delete;
    ~sleep_awaiter() {
        if (queued()) m_loop->remove_timer(*this);
    }

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        m_context = detail::context_of(h);
        if (m_context && m_context->cancel_requested()) {
            m_cancelled = true;
            return false;
        }
        m_loop = &this_loop();
        m_handle = h;
        m_loop->add_timer(*this);
        if (m_context) m_context->arm(this);
        return true;
    }
    void await_resume() const {
        if (m_cancelled) throw cancelled{};
    }

private:
    static void expire(detail::timer_node* node) noexcept {
        auto* self = static_cast<sleep_awaiter*>(node);
        if (self->m_context) self->m_context->disarm();
        self->m_loop->schedule(self->m_handle, self->m_context);
    }
    static void cancel(detail::cancel_slot* slot) noexcept {
        auto* self = static_cast<sleep_awaiter*>(slot);
        self->m_loop->remove_timer(*self);
        self->m_cancelled = true;
        self->m_loop->schedule(self->m_handle, self->m_context);
    }

    event_loop* m_loop = nullptr;
    std::coroutine_handle<> m_handle;
    detail::task_context* m_context = nullptr;
    bool m_cancelled = false;
};

/// Suspends the current task until `deadline` (steady clock). Cancellable.
[[nodiscard]] inline sleep_awaiter sleep_until(event_loop::clock::time_point deadline) noexcept {
    return sleep_awaiter{deadline};
}

/// Suspends the current task for `duration`; zero or negative still yields one turn.
/// Cancellable: a cancelled sleep throws tandem::cancelled.
template <class Rep, class Period>
[[nodiscard]] sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> duration) noexcept {
    return sleep_awaiter{event_loop::clock::now() +
                         std::chrono::duration_cast<event_loop::clock::duration>(duration)};
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
        if (queued()) m_loop->remove_timer(*this);
    }

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        if (!this->begin(h)) return false;
        m_loop = &this_loop();
        m_loop->add_timer(*this);
        return this->start_child();
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
    void on_child_done() noexcept override {
        if (queued()) m_loop->remove_timer(*this);
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

/// with_deadline(now + duration, t): asyncio.wait_for / tokio::time::timeout.
template <class Rep, class Period, class T>
task<T> with_timeout(std::chrono::duration<Rep, Period> duration, task<T> t) {
    return with_deadline(event_loop::clock::now() + std::chrono::duration_cast<event_loop::clock::duration>(duration),
                         std::move(t));
}

} // namespace tandem
