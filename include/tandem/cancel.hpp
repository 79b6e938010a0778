// tandem — cancel_on: let a std::stop_token from outside tandem cancel a task.
//
// Layer: loop. The other direction (a tandem task's cancellation as a std::stop_token for
// code outside tandem) is this_task::stop_token() in task.hpp.
#pragma once

#include "tandem/detail/dependent.hpp"
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
/// The shared flag's type is named through T: compiled only where cancel_on is (dependent.hpp).
template <class T>
class stop_token_awaiter final : public single_child<T> {
    using alive_flag = dependent_t<std::shared_ptr<std::atomic<bool>>, T>;

public:
    stop_token_awaiter(std::stop_token token, task<T> t) noexcept
        : single_child<T>(std::move(t)), m_token(std::move(token)) {}
    ~stop_token_awaiter() {
        // A callback racing on another thread only posts a job that checks m_alive, which
        // outlives this awaiter: the job finds it false and does nothing.
        m_callback.reset();
        if (m_alive) m_alive->store(false, std::memory_order_release);
    }

    decltype(auto) await_resume() {
        this->throw_if_parent_cancelled();
        if (m_stopped_before_start) throw cancelled{};
        return this->take_result();
    }

private:
    bool before_start() override {
        if (m_token.stop_requested()) {
            m_stopped_before_start = true;
            return false;
        }
        m_loop = &this_loop();
        m_alive = std::make_shared<typename alive_flag::element_type>(true);
        m_callback.emplace(m_token, on_stop{this, m_loop, m_alive});
        return true;
    }
    struct on_stop {
        stop_token_awaiter* self;
        event_loop* loop;
        alive_flag alive;
        void operator()() const {
            if (event_loop::current() == loop) {
                self->cancel_child();
                return;
            }
            loop->post([self = self, alive = alive] {
                if (alive->load(std::memory_order_acquire)) self->cancel_child();
            });
        }
    };

    std::stop_token m_token;
    event_loop* m_loop = nullptr;
    alive_flag m_alive;
    std::optional<std::stop_callback<on_stop>> m_callback;
    bool m_stopped_before_start = false;
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
