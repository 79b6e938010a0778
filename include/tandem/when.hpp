// tandem — when_all and when_any: run tasks concurrently on the current loop and combine them.
//
// Layer: core. Children start inline (like calling an async function in Node) and each runs
// in its own cancellation context under the caller's. Structured: the combined task never
// finishes before all its children did, so no child outlives the frame that owns it.
#pragma once

#include "tandem/task.hpp"
#include "tandem/detail/cancellable_wait.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/ranges.hpp"

#include <cstddef>
#include <exception>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace tandem {

namespace detail {

/// Stands in for void in tuples and variants of results.
template <class T>
using non_void_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

class child_owner {
public:
    virtual std::coroutine_handle<> child_finished(std::size_t index) noexcept = 0;

protected:
    ~child_owner() = default;
};

/// A task run as a separate logical task under a parent, reporting to an owner when done.
template <class T>
class child_task final : public task_context {
public:
    child_task() = default;
    explicit child_task(task<T> t) noexcept : m_task(std::move(t)) {}

    void assign(task<T> t) noexcept { m_task = std::move(t); }
    /// Prepares the child and returns its coroutine, to be resumed (or transferred to).
    std::coroutine_handle<> launch(child_owner& owner, std::size_t index, task_context* parent) noexcept {
        m_owner = &owner;
        m_index = index;
        set_parent(parent);
        m_task.handle().promise().set_context(this);
        return m_task.handle();
    }
    void start(child_owner& owner, std::size_t index, task_context* parent) { launch(owner, index, parent).resume(); }
    std::coroutine_handle<> finish() noexcept override { return m_owner->child_finished(m_index); }

    std::exception_ptr exception() const noexcept { return m_task.handle().promise().exception(); }
    bool done() const noexcept { return m_task.done(); }
    promise_base& promise() const noexcept { return m_task.handle().promise(); }
    non_void_t<T> take() {
        if constexpr (std::is_void_v<T>) {
            m_task.handle().promise().result();
            return {};
        } else {
            return m_task.handle().promise().result();
        }
    }

private:
    task<T> m_task;
    child_owner* m_owner = nullptr;
    std::size_t m_index = 0;
};

/// Runs one child task under the awaiting one (with_timeout, cancel_on): the parent's
/// cancellation is forwarded to the child, and the parent resumes when the child finished.
/// The child starts by symmetric transfer and hands control back the same way, so nesting
/// these (with_timeout inside with_timeout, any depth) does not grow the stack. Derived
/// awaiters arm their extra trigger (a timer, a stop callback) in before_start() and disarm
/// it in on_child_done().
template <class T>
class single_child : public child_owner, public cancellable_wait<single_child<T>> {
public:
    single_child(const single_child&) = delete;
    single_child& operator=(const single_child&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) {
        if constexpr (std::is_base_of_v<promise_base, Promise>) m_awaiting = &h.promise();
        return cancellable_wait<single_child<T>>::await_suspend(h);
    }

protected:
    explicit single_child(task<T> t) noexcept : m_child(std::move(t)) {}
    ~single_child() = default;

    /// Arms the derived awaiter's trigger. False: the wait is over before the child starts
    /// (it never runs; await_resume reports why).
    virtual bool before_start() { return true; }
    /// The child finished: undo what before_start() armed.
    virtual void on_child_done() noexcept {}

    void cancel_child() noexcept { m_child.request_cancel(); }
    /// A child that finished with a value despite the parent's cancellation (it had already
    /// received, read or locked something) hands that value back: dropping it would lose data
    /// (cancel safety). The parent's next suspension point throws instead.
    void throw_if_parent_cancelled() const {
        if (m_started && m_child.done() && !m_child.exception()) return;
        this->throw_if_cancelled();
    }
    std::exception_ptr child_exception() const noexcept { return m_child.exception(); }
    T take_result() {
        if constexpr (std::is_void_v<T>) {
            m_child.take();
        } else {
            return static_cast<T>(m_child.take());
        }
    }

private:
    friend class cancellable_wait<single_child<T>>;
    std::coroutine_handle<> start() {
        if (!before_start()) {
            this->complete();
            this->resumer->schedule(this->handle, this->context);
            return std::noop_coroutine();
        }
        m_started = true;
        std::coroutine_handle<> child = m_child.launch(*this, 0, this->context);
        if (m_awaiting) m_awaiting->set_awaited(child, m_child.promise());
        return child;
    }
    bool stop() noexcept {
        this->mark_cancelled();
        m_child.request_cancel(); // we resume once it has unwound
        return false;
    }
    std::coroutine_handle<> child_finished(std::size_t) noexcept final {
        on_child_done();
        return this->complete();
    }

    child_task<T> m_child;
    promise_base* m_awaiting = nullptr;
    bool m_started = false;
};

class fan_out;
/// The fan-out start in progress on this thread (see fan_out::start).
struct fan_out_starter {
    bool active = false;
    scheduler* resumer = nullptr;
    fan_out* deferred = nullptr;
};

/// Shared machinery of when_all/when_any: start the children, forward the parent's
/// cancellation to them, resume the parent when the last one finished.
class fan_out : public child_owner, public cancellable_wait<fan_out> {
public:
    bool await_ready() const noexcept { return m_count == 0; }

    std::coroutine_handle<> child_finished(std::size_t index) noexcept final {
        child_done(index);
        if (--m_pending > 0) return std::noop_coroutine();
        return complete();
    }

protected:
    fan_out() noexcept = default;
    ~fan_out() = default;

    virtual void start_child(std::size_t index, task_context* parent) = 0;
    virtual void cancel_child(std::size_t index) noexcept = 0;
    virtual void child_done(std::size_t index) noexcept = 0;

    void cancel_children() noexcept {
        for (std::size_t i = 0; i < m_count; ++i) cancel_child(i);
    }
    void throw_if_parent_cancelled() const { throw_if_cancelled(); }

    std::size_t m_count = 0;

private:
    friend class cancellable_wait<fan_out>;
    // A template, its stack named through the parameter: compiled only where a fan-out is
    // awaited (detail/dependent.hpp).
    template <class Deferred = void>
    bool start() {
        // One extra count for the starting phase: a child finishing synchronously must not
        // resume the parent while we are still inside its await_suspend.
        m_pending = m_count + 1;
        starter& st = t_starter;
        if (st.active && st.resumer == resumer) {
            // Inside another fan-out's start (a child that awaits when_all/when_any at once):
            // starting our children here would nest native frames per level. The outermost
            // start does it from its loop, in the same depth-first order.
            st.deferred = this;
            return true;
        }
        const starter saved{st.active, st.resumer, st.deferred};
        dependent_t<std::vector<std::pair<fan_out*, std::size_t>>, Deferred> stack; // (fan-out, next child to start)
        st.active = true;
        st.resumer = resumer;
        st.deferred = nullptr;
        stack.emplace_back(this, 0);
        try {
            while (!stack.empty()) {
                auto [f, i] = stack.back();
                if (i == f->m_count) {
                    stack.pop_back();
                    // A deferred fan-out whose children all started: release its starting count
                    // and, if they all finished already, resume its parent (suspended in it).
                    if (f != this && --f->m_pending == 0) f->complete().resume();
                } else {
                    ++stack.back().second;
                    f->start_child(i, f->context);
                }
                if (fan_out* nested = std::exchange(st.deferred, nullptr)) stack.emplace_back(nested, 0);
            }
        } catch (...) {
            st = saved;
            throw;
        }
        st = saved;
        return --m_pending != 0;
    }
    using starter = fan_out_starter;
    inline static thread_local starter t_starter;
    bool stop() noexcept {
        mark_cancelled();
        cancel_children(); // we resume once they all have unwound
        return false;
    }

    std::size_t m_pending = 0;
};

/// Storage of the children: a tuple for the variadic forms, an array for ranges. Both offer
/// child(i, fn) to reach child i as its concrete type.
template <class... Ts>
class tuple_children {
public:
    explicit tuple_children(task<Ts>... tasks) noexcept : m_children(std::move(tasks)...) {}
    static constexpr std::size_t size() noexcept { return sizeof...(Ts); }
    template <class F>
    decltype(auto) visit(std::size_t index, F&& fn) {
        return visit_impl(index, fn, std::index_sequence_for<Ts...>{});
    }
    template <std::size_t I>
    auto& get() noexcept {
        return std::get<I>(m_children);
    }

private:
    template <class F, std::size_t... Is>
    void visit_impl(std::size_t index, F& fn, std::index_sequence<Is...>) {
        ((index == Is ? (void)fn(std::get<Is>(m_children)) : (void)0), ...);
    }
    std::tuple<child_task<Ts>...> m_children;
};

template <class T>
class range_children {
public:
    template <class Range>
    explicit range_children(Range&& tasks) {
        std::vector<task<T>> collected;
        for (auto&& t : tasks) collected.push_back(std::move(t));
        m_size = collected.size();
        m_children = std::make_unique<child_task<T>[]>(m_size);
        for (std::size_t i = 0; i < m_size; ++i) m_children[i].assign(std::move(collected[i]));
    }
    std::size_t size() const noexcept { return m_size; }
    template <class F>
    decltype(auto) visit(std::size_t index, F&& fn) {
        return fn(m_children[index]);
    }
    child_task<T>& operator[](std::size_t i) noexcept { return m_children[i]; }

private:
    std::unique_ptr<child_task<T>[]> m_children;
    std::size_t m_size = 0;
};

template <class Children>
class when_all_awaiter final : public fan_out {
public:
    template <class... Args>
    explicit when_all_awaiter(Args&&... args) : m_children(static_cast<Args&&>(args)...) {
        m_count = m_children.size();
    }
    Children& children() noexcept { return m_children; }
    void await_resume() const {
        throw_if_parent_cancelled();
        if (m_failure) std::rethrow_exception(m_failure);
    }

private:
    void start_child(std::size_t i, task_context* parent) override {
        m_children.visit(i, [&](auto& c) { c.start(*this, i, parent); });
    }
    void cancel_child(std::size_t i) noexcept override {
        m_children.visit(i, [](auto& c) { c.request_cancel(); });
    }
    void child_done(std::size_t i) noexcept override {
        if (m_failure) return;
        m_children.visit(i, [&](auto& c) { m_failure = c.exception(); });
        if (m_failure) cancel_children(); // first failure stops the siblings
    }
    Children m_children;
    std::exception_ptr m_failure;
};

template <class Children>
class when_any_awaiter final : public fan_out {
public:
    template <class... Args>
    explicit when_any_awaiter(Args&&... args) : m_children(static_cast<Args&&>(args)...) {
        m_count = m_children.size();
    }
    Children& children() noexcept { return m_children; }
    /// A winner hands back its result even if the parent was cancelled meanwhile (while the
    /// losers unwound): dropping a value it had received would lose it (cancel safety). A
    /// winner that ended by that cancellation rethrows it.
    std::size_t await_resume() const {
        if (!m_has_winner) throw_if_parent_cancelled();
        return m_winner;
    }

private:
    void start_child(std::size_t i, task_context* parent) override {
        m_children.visit(i, [&](auto& c) { c.start(*this, i, parent); });
    }
    void cancel_child(std::size_t i) noexcept override {
        m_children.visit(i, [](auto& c) { c.request_cancel(); });
    }
    void child_done(std::size_t i) noexcept override {
        if (m_has_winner) return;
        m_has_winner = true;
        m_winner = i;
        cancel_children();
    }
    Children m_children;
    std::size_t m_winner = 0;
    bool m_has_winner = false;
};

template <class R>
using range_task_value_t = typename std::remove_cvref_t<detail::range_value_t<R>>::value_type;

} // namespace detail

/// Runs all tasks concurrently; yields a tuple of their results (void → std::monostate).
/// The first failure cancels the others; once all have finished it is rethrown.
template <class... Ts>
task<std::tuple<detail::non_void_t<Ts>...>> when_all(task<Ts>... tasks) {
    detail::when_all_awaiter<detail::tuple_children<Ts...>> all(std::move(tasks)...);
    co_await all;
    auto& children = all.children();
    co_return [&]<std::size_t... Is>(std::index_sequence<Is...>) {
        return std::tuple<detail::non_void_t<Ts>...>(children.template get<Is>().take()...);
    }(std::index_sequence_for<Ts...>{});
}

/// Runs every task of a range concurrently; yields their results in order (nothing for
/// task<void>). The first failure cancels the others and is rethrown after all finished.
template <detail::input_range Range>
auto when_all(Range&& tasks) -> task<std::conditional_t<std::is_void_v<detail::range_task_value_t<Range>>, void,
                                                          std::vector<detail::range_task_value_t<Range>>>> {
    using T = detail::range_task_value_t<Range>;
    detail::when_all_awaiter<detail::range_children<T>> all(static_cast<Range&&>(tasks));
    co_await all;
    auto& children = all.children();
    if constexpr (std::is_void_v<T>) {
        co_return;
    } else {
        std::vector<T> results;
        results.reserve(children.size());
        for (std::size_t i = 0; i < children.size(); ++i) results.push_back(children[i].take());
        co_return results;
    }
}

/// Runs tasks concurrently until the first one finishes; the others are cancelled and
/// awaited before this returns. Yields a variant whose index() is the winner (void →
/// std::monostate); if the winner threw, rethrows that.
template <class... Ts>
task<std::variant<detail::non_void_t<Ts>...>> when_any(task<Ts>... tasks) {
    static_assert(sizeof...(Ts) > 0, "when_any needs at least one task");
    detail::when_any_awaiter<detail::tuple_children<Ts...>> any(std::move(tasks)...);
    const std::size_t winner = co_await any;
    auto& children = any.children();
    using result = std::variant<detail::non_void_t<Ts>...>;
    std::optional<result> out;
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
        ((winner == Is ? (void)out.emplace(std::in_place_index<Is>, children.template get<Is>().take()) : (void)0), ...);
    }(std::index_sequence_for<Ts...>{});
    co_return std::move(*out);
}

/// Result of when_any over a range: which task won, and its value.
template <class T>
struct when_any_result {
    std::size_t index;
    T value;
};

/// Range form of when_any. Yields when_any_result<T> (just the index for task<void>).
/// Throws std::invalid_argument for an empty range.
template <detail::input_range Range>
auto when_any(Range&& tasks) -> task<std::conditional_t<std::is_void_v<detail::range_task_value_t<Range>>, std::size_t,
                                                          when_any_result<detail::range_task_value_t<Range>>>> {
    using T = detail::range_task_value_t<Range>;
    detail::when_any_awaiter<detail::range_children<T>> any(static_cast<Range&&>(tasks));
    if (any.children().size() == 0) throw std::invalid_argument("tandem::when_any: no tasks");
    const std::size_t winner = co_await any;
    if constexpr (std::is_void_v<T>) {
        any.children()[winner].take();
        co_return winner;
    } else {
        co_return when_any_result<T>{winner, any.children()[winner].take()};
    }
}

} // namespace tandem
