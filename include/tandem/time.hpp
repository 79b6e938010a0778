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
class timeout_awaiter final : child_owner, cancel_slot, timer_node {
public:
    timeout_awaiter(task<T> t, event_loop::clock::time_point deadline) noexcept : m_child(std::move(t)) {
        this->deadline = deadline;
        on_expire = &expire;
        on_cancel = &forward_cancel;
    }
    timeout_awaiter(const timeout_awaiter&) = delete;
    timeout_awaiter& operator=(const timeout_awaiter&) = delete;
    ~timeout_awaiter() {
        if (queued()) m_loop->remove_timer(*this);
    }

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        m_parent = h;
        m_parent_context = context_of(h);
        if (m_parent_context && m_parent_context->cancel_requested()) {
            m_parent_cancelled = true;
            return false;
        }
        m_loop = &this_loop();
        m_loop->add_timer(*this);
        if (m_parent_context) m_parent_context->arm(this);
        m_starting = true;
        m_child.start(*this, 0, m_parent_context);
        m_starting = false;
        if (!m_child_done) return true;
        settle();
        return false;
    }

    decltype(auto) await_resume() {
        if (m_parent_cancelled) throw cancelled{};
        if (m_timed_out && m_child.exception()) {
            try {
                std::rethrow_exception(m_child.exception());
            } catch (const cancelled&) {
                throw timed_out{};
            }
        }
        if constexpr (std::is_void_v<T>) {
            m_child.take();
        } else {
            return static_cast<T>(m_child.take());
        }
    }

private:
    std::coroutine_handle<> child_finished(std::size_t) noexcept override {
        m_child_done = true;
        if (m_starting) return std::noop_coroutine();
        settle();
        return m_parent;
    }
    void settle() noexcept {
        if (queued()) m_loop->remove_timer(*this);
        if (m_parent_context) m_parent_context->disarm();
    }
    static void expire(timer_node* node) noexcept {
        auto* self = static_cast<timeout_awaiter*>(node);
        self->m_timed_out = true;
        self->m_child.request_cancel();
    }
    static void forward_cancel(cancel_slot* slot) noexcept {
        auto* self = static_cast<timeout_awaiter*>(slot);
        self->m_parent_cancelled = true;
        self->m_child.request_cancel();
    }

    child_task<T> m_child;
    event_loop* m_loop = nullptr;
    std::coroutine_handle<> m_parent;
    task_context* m_parent_context = nullptr;
    bool m_starting = false;
    bool m_child_done = false;
    bool m_timed_out = false;
    bool m_parent_cancelled = false;
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
