// tandem — cancel_on: let a std::stop_token from outside tandem cancel a task.
//
// Layer: loop. The other direction (a tandem task's cancellation as a std::stop_token for
// code outside tandem) is this_task::stop_token() in task.hpp.
#pragma once

#include "tandem/loop.hpp"
#include "tandem/task.hpp"
#include "tandem/when.hpp"

#include <atomic>
#include <coroutine>
#include <memory>
#include <optional>
#include <stop_token>
#include <utility>

namespace tandem {

namespace detail {

/// Runs one child; a stop request on `token` (from any thread) cancels it on the loop thread.
template <class T>
class stop_token_awaiter final : child_owner, cancel_slot {
public:
    stop_token_awaiter(std::stop_token token, task<T> t) noexcept : m_token(std::move(token)), m_child(std::move(t)) {
        on_cancel = &forward_cancel;
    }
    stop_token_awaiter(const stop_token_awaiter&) = delete;
    stop_token_awaiter& operator=(const stop_token_awaiter&) = delete;
    ~stop_token_awaiter() {
        // The callback may be posting to the loop right now: it only touches m_alive, which
        // outlives this awaiter, so the post finds it false and does nothing.
        m_callback.reset();
        if (m_alive) m_alive->store(false, std::memory_order_release);
    }

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        m_parent = h;
        m_parent_context = context_of(h);
        if ((m_parent_context && m_parent_context->cancel_requested()) || m_token.stop_requested()) {
            m_parent_cancelled = true;
            return false;
        }
        m_loop = &this_loop();
        m_alive = std::make_shared<std::atomic<bool>>(true);
        m_callback.emplace(m_token, on_stop{this, m_loop, m_alive});
        if (m_parent_context) m_parent_context->arm(this);
        m_starting = true;
        m_child.start(*this, 0, m_parent_context);
        m_starting = false;
        if (!m_child_done) return true;
        if (m_parent_context) m_parent_context->disarm();
        return false;
    }
    decltype(auto) await_resume() {
        if (m_parent_cancelled && !m_child_done) throw cancelled{};
        if constexpr (std::is_void_v<T>) {
            m_child.take();
        } else {
            return static_cast<T>(m_child.take());
        }
    }

private:
    struct on_stop {
        stop_token_awaiter* self;
        event_loop* loop;
        std::shared_ptr<std::atomic<bool>> alive;
        void operator()() const {
            if (event_loop::current() == loop) {
                self->m_child.request_cancel();
                return;
            }
            loop->post([self = self, alive = alive] {
                if (alive->load(std::memory_order_acquire)) self->m_child.request_cancel();
            });
        }
    };

    std::coroutine_handle<> child_finished(std::size_t) noexcept override {
        m_child_done = true;
        if (m_starting) return std::noop_coroutine();
        if (m_parent_context) m_parent_context->disarm();
        return m_parent;
    }
    static void forward_cancel(cancel_slot* slot) noexcept {
        auto* self = static_cast<stop_token_awaiter*>(slot);
        self->m_parent_cancelled = true;
        self->m_child.request_cancel();
    }

    std::stop_token m_token;
    child_task<T> m_child;
    event_loop* m_loop = nullptr;
    std::shared_ptr<std::atomic<bool>> m_alive;
    std::optional<std::stop_callback<on_stop>> m_callback;
    std::coroutine_handle<> m_parent;
    task_context* m_parent_context = nullptr;
    bool m_starting = false;
    bool m_child_done = false;
    bool m_parent_cancelled = false;
};

} // namespace detail

/// Runs `t`; a stop request on `token` — from any thread, e.g. a std::jthread's or a
/// std::stop_source owned by plain code — cancels it: its suspension points throw
/// tandem::cancelled. Cancelling the caller cancels `t` as well.
template <class T>
task<T> cancel_on(std::stop_token token, task<T> t) {
    co_return co_await detail::stop_token_awaiter<T>(std::move(token), std::move(t));
}

} // namespace tandem
