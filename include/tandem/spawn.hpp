// tandem — spawn() and join_handle<T>: start a task on a loop and, optionally, wait for it.
//
// Layer: loop. Dropping a join_handle detaches the task, which keeps running (tokio's
// JoinHandle); an exception it throws then goes to the loop's exception handler.
#pragma once

#include "tandem/loop.hpp"
#include "tandem/task.hpp"
#include "tandem/detail/cancellable_wait.hpp"

#include "tandem/source_location.hpp"
#include <string_view>
#include <utility>

namespace tandem {

/// Owns the right to await (or cancel) a spawned task. Move-only.
template <class T>
class [[nodiscard]] join_handle {
public:
    join_handle() noexcept = default;
    explicit join_handle(detail::root<T>* r) noexcept : m_root(r) {}
    join_handle(join_handle&& other) noexcept
        : m_root(std::exchange(other.m_root, nullptr)), m_observed(other.m_observed) {}
    join_handle& operator=(join_handle&& other) noexcept {
        if (this != &other) {
            reset();
            m_root = std::exchange(other.m_root, nullptr);
            m_observed = other.m_observed;
        }
        return *this;
    }
    ~join_handle() { reset(); }

    bool valid() const noexcept { return m_root != nullptr; }
    /// True once the task finished (with a value or an exception).
    bool done() const noexcept { return m_root && m_root->done(); }

    /// Asks the task to stop: its current and future suspension points throw
    /// tandem::cancelled. Awaiting the handle afterwards reports how it ended. Loop thread only.
    void cancel() noexcept {
        if (m_root && !m_root->done()) m_root->request_cancel();
    }

    /// Lets the task run on without anyone waiting for it.
    void detach() noexcept { reset(); }

    class awaiter : detail::cancellable_wait<awaiter, detail::root_base::join_waiter> {
    public:
        explicit awaiter(join_handle& h) noexcept : m_handle(&h) {}
        awaiter(const awaiter&) = delete;
        awaiter& operator=(const awaiter&) = delete;
        ~awaiter() {
            if (m_handle->m_root && m_handle->m_root->joiner() == this) m_handle->m_root->set_joiner(nullptr);
        }
        bool await_ready() const noexcept { return m_handle->m_root->done(); }
        using awaiter::cancellable_wait::await_suspend;
        /// Returns the task's value or rethrows its exception. Throws tandem::cancelled if
        /// the *waiting* task was cancelled (the spawned task keeps running).
        decltype(auto) await_resume() {
            this->throw_if_cancelled();
            m_handle->m_observed = true;
            return m_handle->m_root->result();
        }

    private:
        friend class awaiter::cancellable_wait;
        bool start() noexcept {
            m_handle->m_root->set_joiner(this);
            return true;
        }
        bool stop() noexcept {
            m_handle->m_root->set_joiner(nullptr);
            return true;
        }
        join_handle* m_handle;
    };

    /// Waits for the task. A handle can be awaited once.
    awaiter operator co_await() & noexcept { return awaiter{checked()}; }
    awaiter operator co_await() && noexcept { return awaiter{checked()}; }

private:
    join_handle& checked() noexcept {
        if (!m_root) std::terminate(); // awaiting an empty handle is a programming error
        return *this;
    }
    void reset() noexcept {
        if (detail::root<T>* r = std::exchange(m_root, nullptr)) r->drop_handle(m_observed);
        m_observed = false;
    }
    detail::root<T>* m_root = nullptr;
    bool m_observed = false;
};

/// Starts `t` on `loop` (it runs on the loop's next turn, not inline). `name` and the call
/// site identify the task in diagnostics (blocking watchdog, unhandled-exception reports).
template <class T>
join_handle<T> spawn(event_loop& loop, task<T> t, std::string_view name = {},
                     source_location where = source_location::current()) {
    auto* r = new detail::root<T>(loop, std::move(t), name, where);
    r->add_handle();
    tandem::detail::hooks(loop).start_root(*r);
    return join_handle<T>(r);
}

/// Starts `t` on the loop running on this thread. Throws std::logic_error if none runs.
template <class T>
join_handle<T> spawn(task<T> t, std::string_view name = {},
                     source_location where = source_location::current()) {
    return spawn(this_loop(), std::move(t), name, where);
}

} // namespace tandem
