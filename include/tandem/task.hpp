// tandem — task<T>: a lazy coroutine with symmetric transfer, and the per-task context that
// carries cancellation and identity through a chain of awaiting coroutines.
//
// Layer: core. No OS headers, no event loop: a task knows nothing of where it runs.
#pragma once

#include "tandem/config.hpp"
#include "tandem/error.hpp"
#include "tandem/detail/frame_pool.hpp"

#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include "tandem/source_location.hpp"
#include <stop_token>
#include <string_view>
#include <type_traits>
#include <utility>

namespace tandem {

template <class T = void> class task;

namespace detail {

/// The one place a logical task is suspended and can be woken early. A chain of coroutines
/// awaiting each other is suspended in exactly one leaf at a time, so one slot per context
/// suffices and arming it costs two stores, no allocation.
struct cancel_slot {
    /// Called on the loop thread when the owning task is cancelled. It must not resume the
    /// coroutine inline (a cancel can arrive from inside another task's code): it unhooks the
    /// wait and schedules the coroutine, which then throws tandem::cancelled.
    void (*on_cancel)(cancel_slot*) noexcept = nullptr;
    cancel_slot* next_pending = nullptr; // queued while another cancellation is delivered
};

/// Cancellation state and identity shared by every coroutine of one logical task. Spawned
/// tasks, when_all/when_any children and with_timeout bodies each run in their own context;
/// a child's context names its parent so diagnostics can say which task it belongs to.
class task_context {
public:
    task_context() = default;
    task_context(const task_context&) = delete;
    task_context& operator=(const task_context&) = delete;
    virtual ~task_context() = default;

    bool cancel_requested() const noexcept { return m_cancel_requested; }

    /// Cancels the task: wakes its current suspension point (if any) and every later one
    /// throws tandem::cancelled. Idempotent. Loop thread only.
    void request_cancel() noexcept {
        if (m_cancel_requested) return;
        m_cancel_requested = true;
        if (m_stop_source.stop_possible()) m_stop_source.request_stop();
        if (cancel_slot* slot = std::exchange(m_slot, nullptr)) deliver(slot);
    }

    void arm(cancel_slot* slot) noexcept { m_slot = slot; }
    void disarm() noexcept { m_slot = nullptr; }

    /// A std::stop_token that is stopped when this task is cancelled. Created on first use,
    /// so tasks that never ask pay nothing; safe to hand to another thread.
    std::stop_token stop_token() {
        if (!m_stop_source.stop_possible()) {
            m_stop_source = std::stop_source{};
            if (m_cancel_requested) m_stop_source.request_stop();
        }
        return m_stop_source.get_token();
    }

    void set_parent(task_context* parent) noexcept { m_parent = parent; }
    task_context* parent() const noexcept { return m_parent; }

    /// True for the outermost context of a task a loop owns (spawned, or run()'s main): the
    /// one that carries the task's name and spawn site and outlives all its children.
    bool is_root() const noexcept { return m_is_root; }

    /// The name a task was given at spawn (empty if none), looked up through parents.
    virtual std::string_view name() const noexcept { return m_parent ? m_parent->name() : std::string_view{}; }
    /// Where the task was spawned, looked up through parents.
    virtual source_location where() const noexcept {
        return m_parent ? m_parent->where() : source_location{};
    }

    /// Called from the final suspend point of the outermost coroutine of this context (the
    /// one nobody co_awaits). Returns the coroutine to transfer to, or noop_coroutine().
    virtual std::coroutine_handle<> finish() noexcept { return std::noop_coroutine(); }

protected:
    void mark_root() noexcept { m_is_root = true; }

private:
    /// A slot's on_cancel may cancel children (with_timeout, when_all forward the request),
    /// whose slots may cancel theirs: delivered one after another from a queue, not nested,
    /// so cancelling a chain of any depth takes constant stack.
    static void deliver(cancel_slot* slot) noexcept {
        if (t_delivering) {
            slot->next_pending = nullptr;
            if (t_pending_tail) t_pending_tail->next_pending = slot;
            else t_pending_head = slot;
            t_pending_tail = slot;
            return;
        }
        t_delivering = true;
        slot->on_cancel(slot);
        while (cancel_slot* next = t_pending_head) {
            t_pending_head = next->next_pending;
            if (!t_pending_head) t_pending_tail = nullptr;
            next->on_cancel(next);
        }
        t_delivering = false;
    }
    inline static thread_local bool t_delivering = false;
    inline static thread_local cancel_slot* t_pending_head = nullptr;
    inline static thread_local cancel_slot* t_pending_tail = nullptr;

    cancel_slot* m_slot = nullptr;
    task_context* m_parent = nullptr;
    std::stop_source m_stop_source{std::nostopstate}; // 8 bytes, no state until first asked for
    bool m_cancel_requested = false;
    bool m_is_root = false;
};

class promise_base;

/// The context of the coroutine that is suspending; nullptr when the awaiter is not a
/// tandem task (then the wait simply is not cancellable).
template <class Promise>
task_context* context_of(std::coroutine_handle<Promise> h) noexcept {
    if constexpr (std::is_base_of_v<promise_base, Promise>) {
        return h.promise().context();
    } else {
        (void)h;
        return nullptr;
    }
}

/// Every task frame comes from the per-thread frame pool (detail/frame_pool.hpp).
class promise_base : public pooled {
public:
    std::suspend_always initial_suspend() const noexcept { return {}; }

    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        template <class Promise>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
            promise_base& p = h.promise();
            if (p.m_awaited_by) p.m_awaited_by->m_awaited_promise = nullptr;
            if (p.m_continuation) return p.m_continuation;
            // The outermost coroutine of a context: its owner decides what runs next and may
            // destroy this frame (allowed: it is suspended at its final point).
            return p.m_context->finish();
        }
        void await_resume() const noexcept {}
    };
    final_awaiter final_suspend() const noexcept { return {}; }

    void unhandled_exception() noexcept { m_exception = std::current_exception(); }

    task_context* context() const noexcept { return m_context; }
    void set_context(task_context* ctx) noexcept { m_context = ctx; }
    void set_continuation(std::coroutine_handle<> c) noexcept { m_continuation = c; }
    const std::exception_ptr& exception() const noexcept { return m_exception; }

    /// The task frame this coroutine is suspended awaiting (set by awaiters that own that
    /// frame): lets destroy_frame take a suspended chain apart from its leaf, without
    /// recursion.
    /// Unset when that frame finishes (the link cannot depend on an awaiter object: g++ 12
    /// may await a copy of it, TOOLCHAIN pitfall 7).
    void set_awaited(std::coroutine_handle<> frame, promise_base& promise) noexcept {
        m_awaited = frame;
        m_awaited_promise = &promise;
        promise.m_awaited_by = this;
    }

    friend void destroy_frame(std::coroutine_handle<> frame, promise_base& promise) noexcept;

protected:
    void rethrow_if_failed() const {
        if (m_exception) std::rethrow_exception(m_exception);
    }

private:
    std::coroutine_handle<> m_continuation;
    task_context* m_context = nullptr;
    std::exception_ptr m_exception;
    std::coroutine_handle<> m_awaited;
    promise_base* m_awaited_promise = nullptr;
    promise_base* m_awaited_by = nullptr;
};

/// Destroys a task's frame and, first, the suspended chain of frames it awaits, leaf first
/// (the order a recursive destruction destroys what each frame's locals reference), in a
/// loop: tearing down a chain a million deep takes constant stack.
inline thread_local void* t_destroyed_child = nullptr; // frame already destroyed by the loop below

inline void destroy_frame(std::coroutine_handle<> frame, promise_base& promise) noexcept {
    if (frame.address() == t_destroyed_child) { // its owner's destruction, after we took it apart
        t_destroyed_child = nullptr;
        return;
    }
    void* const saved = t_destroyed_child;
    if (!promise.m_awaited_promise) {
        t_destroyed_child = nullptr;
        frame.destroy();
        t_destroyed_child = saved;
        return;
    }
    // Walk down to the leaf, reversing the links so that each promise names its parent.
    std::coroutine_handle<> h = frame, up_h;
    promise_base* p = &promise;
    promise_base* up_p = nullptr;
    while (p) {
        std::coroutine_handle<> down_h = p->m_awaited;
        promise_base* down_p = p->m_awaited_promise;
        p->m_awaited = up_h;
        p->m_awaited_promise = up_p;
        up_h = h;
        up_p = p;
        h = down_h;
        p = down_p;
    }
    // up_h is the leaf now; climb back, destroying each frame after the one it awaits.
    h = up_h;
    p = up_p;
    void* below = nullptr;
    for (;;) {
        std::coroutine_handle<> parent_h = p->m_awaited;
        promise_base* parent_p = p->m_awaited_promise;
        t_destroyed_child = below; // the task in this frame that owns `below` must skip it
        h.destroy();
        if (h == frame) break;
        below = h.address();
        h = parent_h;
        p = parent_p;
    }
    t_destroyed_child = saved;
}

template <class T>
class task_promise final : public promise_base {
public:
    task<T> get_return_object() noexcept;

    template <class U = T>
        requires std::is_convertible_v<U&&, T>
    void return_value(U&& value) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        m_value.emplace(static_cast<U&&>(value));
    }

    T result() {
        rethrow_if_failed();
        return std::move(*m_value);
    }

private:
    std::optional<T> m_value;
};

template <class T>
class task_promise<T&> final : public promise_base {
public:
    task<T&> get_return_object() noexcept;
    void return_value(T& value) noexcept { m_value = std::addressof(value); }
    T& result() {
        rethrow_if_failed();
        return *m_value;
    }

private:
    T* m_value = nullptr;
};

template <>
class task_promise<void> final : public promise_base {
public:
    task<void> get_return_object() noexcept;
    void return_void() const noexcept {}
    void result() const { rethrow_if_failed(); }
};

} // namespace detail

/// A lazily started coroutine producing a T (void, a reference, or a move-only type).
///
/// Nothing runs until the task is co_awaited, spawned, or passed to when_all/when_any.
/// Awaiting transfers control symmetrically, so a loop of synchronously completing awaits
/// does not grow the stack (g++ needs -foptimize-sibling-calls below -O2; the CMake target
/// adds it). An exception thrown inside the task is rethrown to the awaiter.
/// A task may be awaited once; it owns its coroutine frame.
template <class T>
class [[nodiscard]] task {
public:
    using promise_type = detail::task_promise<T>;
    using value_type = T;
    using handle_type = std::coroutine_handle<promise_type>;

    task() noexcept = default;
    explicit task(handle_type h) noexcept : m_handle(h) {}
    task(task&& other) noexcept : m_handle(std::exchange(other.m_handle, {})) {}
    task& operator=(task&& other) noexcept {
        if (this != &other) {
            if (m_handle) detail::destroy_frame(m_handle, m_handle.promise());
            m_handle = std::exchange(other.m_handle, {});
        }
        return *this;
    }
    ~task() {
        if (m_handle) detail::destroy_frame(m_handle, m_handle.promise());
    }

    /// True if this task owns a coroutine (it was not moved from or default-constructed).
    bool valid() const noexcept { return static_cast<bool>(m_handle); }
    /// True once the coroutine ran to completion.
    bool done() const noexcept { return m_handle && m_handle.done(); }

    class awaiter {
    public:
        explicit awaiter(handle_type h) noexcept : m_handle(h) {}
        bool await_ready() const noexcept { return m_handle.done(); }
        template <class Promise>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> awaiting) noexcept {
            promise_type& p = m_handle.promise();
            p.set_continuation(awaiting);
            p.set_context(detail::context_of(awaiting));
            if constexpr (std::is_base_of_v<detail::promise_base, Promise>) awaiting.promise().set_awaited(m_handle, p);
            return m_handle;
        }
        decltype(auto) await_resume() { return m_handle.promise().result(); }

    private:
        handle_type m_handle;
    };

    /// Starts the task and suspends the caller until it finishes; yields its value or
    /// rethrows its exception. The caller's cancellation reaches the task.
    awaiter operator co_await() const& noexcept { return awaiter{checked()}; }
    awaiter operator co_await() const&& noexcept { return awaiter{checked()}; }

    /// Low-level access for runners (spawn, when_all): the frame stays owned by this task.
    handle_type handle() const noexcept { return m_handle; }

private:
    handle_type checked() const noexcept {
        // Awaiting an empty task is a programming error with no sensible recovery.
        if (!m_handle) std::terminate();
        return m_handle;
    }
    handle_type m_handle;
};

namespace detail {
template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
    return task<T>{std::coroutine_handle<task_promise>::from_promise(*this)};
}
template <class T>
task<T&> task_promise<T&>::get_return_object() noexcept {
    return task<T&>{std::coroutine_handle<task_promise>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object() noexcept {
    return task<void>{std::coroutine_handle<task_promise>::from_promise(*this)};
}

/// Awaitable that completes immediately and hands the awaiting task's context to F.
/// Uses bool await_suspend returning false (clang 14 miscompiles returning the same handle).
template <class F>
struct context_peek {
    F fn;
    task_context* ctx = nullptr;
    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
        ctx = context_of(h);
        return false;
    }
    decltype(auto) await_resume() { return fn(ctx); }
};
template <class F>
context_peek(F) -> context_peek<F>;
} // namespace detail

/// Queries about the task that is running. Use as `co_await this_task::stop_token()`.
namespace this_task {

/// A std::stop_token that is stopped when the current task is cancelled: pass it to work
/// that cannot see tandem's cancellation (a thread, a library call that polls a token).
inline auto stop_token() {
    return detail::context_peek{[](detail::task_context* ctx) -> std::stop_token {
        return ctx ? ctx->stop_token() : std::stop_token{};
    }};
}

/// True if the current task has been asked to stop.
inline auto cancellation_requested() {
    return detail::context_peek{
        [](detail::task_context* ctx) noexcept { return ctx != nullptr && ctx->cancel_requested(); }};
}

/// Throws tandem::cancelled if the current task has been asked to stop: a cheap check point
/// for long computations that never suspend.
inline auto throw_if_cancelled() {
    return detail::context_peek{[](detail::task_context* ctx) {
        if (ctx && ctx->cancel_requested()) throw cancelled{};
    }};
}

} // namespace this_task

} // namespace tandem
