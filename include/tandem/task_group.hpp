// tandem — task_group: structured concurrency over spawned tasks (Python's TaskGroup,
// tokio's JoinSet).
//
// Layer: loop. Children are ordinary spawned tasks of the loop (so loop teardown handles
// them like any other), owned by the group instead of a join_handle.
#pragma once

#include "tandem/loop.hpp"
#include "tandem/spawn.hpp"
#include "tandem/task.hpp"
#include "tandem/detail/cancellable_wait.hpp"

#include <cstddef>
#include <exception>
#include "tandem/source_location.hpp"
#include <string_view>
#include <utility>

namespace tandem {

class task_group;

namespace detail {

class group_member;

struct group_hook : list_hook {
    group_member* member = nullptr;
};

/// A spawned task whose fate is reported to its group.
class group_member {
public:
    virtual void detach_from_group() noexcept = 0;
    virtual void cancel_member() noexcept = 0;
    group_hook hook;

protected:
    ~group_member() = default;
};

template <class T>
class group_root final : public root_base, public group_member {
public:
    group_root(event_loop& loop, task<T> t, task_group& group, std::string_view name, source_location where)
        : root_base(loop, name, where), m_task(std::move(t)), m_group(&group) {
        m_task.handle().promise().set_context(this);
        hook.member = this;
    }
    std::coroutine_handle<> frame() const noexcept override { return m_task.handle(); }
    std::exception_ptr exception() const noexcept override { return m_task.handle().promise().exception(); }
    void destroy_frame() noexcept override { m_task = task<T>{}; }
    void detach_from_group() noexcept override {
        m_group = nullptr;
        hook.unlink();
    }
    void cancel_member() noexcept override { request_cancel(); }

private:
    std::coroutine_handle<> on_finished() noexcept override;

    task<T> m_task;
    task_group* m_group;
};

} // namespace detail

/// Spawns tasks whose lifetime is bounded by the group: `co_await group.join()` waits for
/// all of them. The first child that fails cancels its siblings; join() rethrows that
/// failure once every child has finished. Cancelling the task that waits in join() cancels
/// the children and still waits for them. Destroying a group that was not joined cancels its
/// children (they unwind on their own, as tokio's JoinSet does on drop) and reports an
/// unretrieved failure to the loop's exception handler.
class task_group {
public:
    task_group() : task_group(this_loop()) {}
    explicit task_group(event_loop& loop) noexcept : m_loop(&loop) {}
    task_group(const task_group&) = delete;
    task_group& operator=(const task_group&) = delete;
    ~task_group() {
        m_children.for_each([](detail::group_hook& h) {
            detail::group_member* m = h.member;
            m->detach_from_group();
            m->cancel_member();
        });
        if (m_failure) {
            detail::task_context none;
            tandem::detail::hooks(*m_loop).report_unhandled(std::exchange(m_failure, nullptr), none);
        }
    }

    /// Starts `t` in the group; it runs on the loop's next turn. Results are discarded:
    /// share them through captured state, or use when_all when you need them.
    template <class T>
    void spawn(task<T> t, std::string_view name = {}, source_location where = source_location::current()) {
        auto* r = new detail::group_root<T>(*m_loop, std::move(t), *this, name, where);
        m_children.push_back(r->hook);
        if (m_failure) r->request_cancel(); // a failed group starts nothing new
        tandem::detail::hooks(*m_loop).start_root(*r);
    }

    /// Cancels every running child.
    void cancel() noexcept {
        m_children.for_each([](detail::group_hook& h) { h.member->cancel_member(); });
    }

    /// Children that have not finished.
    std::size_t size() const noexcept { return m_children.size(); }
    bool empty() const noexcept { return m_children.empty(); }

    class join_awaiter : detail::cancellable_wait<join_awaiter> {
    public:
        /// Structured: a join by a task that is already cancelled cancels the children and
        /// still waits for them.
        static constexpr bool wait_when_cancelled = true;

        explicit join_awaiter(task_group& g) noexcept : m_group(g) {}
        join_awaiter(const join_awaiter&) = delete;
        join_awaiter& operator=(const join_awaiter&) = delete;
        ~join_awaiter() {
            if (m_group.m_joiner == this) m_group.m_joiner = nullptr;
        }
        bool await_ready() const noexcept { return m_group.m_children.empty(); }
        using cancellable_wait::await_suspend;
        void await_resume() {
            m_group.m_joiner = nullptr;
            if (std::exception_ptr e = std::exchange(m_group.m_failure, nullptr)) std::rethrow_exception(e);
            throw_if_cancelled();
        }

    private:
        friend class task_group;
        friend cancellable_wait;
        bool start() noexcept {
            m_group.m_joiner = this;
            return true;
        }
        bool stop() noexcept {
            mark_cancelled();
            m_group.cancel(); // structured: we still wait for them
            return false;
        }
        task_group& m_group;
    };

    /// Waits until every child has finished; rethrows the first failure.
    [[nodiscard]] join_awaiter join() noexcept { return join_awaiter{*this}; }

private:
    template <class T> friend class detail::group_root;

    /// A child finished; returns who runs next.
    std::coroutine_handle<> child_finished(std::exception_ptr failure) noexcept {
        if (failure && !m_failure) {
            m_failure = std::move(failure);
            cancel();
        }
        if (!m_children.empty() || !m_joiner) return std::noop_coroutine();
        join_awaiter* j = std::exchange(m_joiner, nullptr);
        std::coroutine_handle<> next = j->complete();
        tandem::detail::hooks(*m_loop).set_current_task(j->context);
        return next;
    }

    event_loop* m_loop;
    detail::intrusive_list<detail::group_hook> m_children;
    join_awaiter* m_joiner = nullptr;
    std::exception_ptr m_failure;
};

namespace detail {
template <class T>
std::coroutine_handle<> group_root<T>::on_finished() noexcept {
    std::exception_ptr e = exception();
    const bool failed = worth_reporting(e);
    if (task_group* g = std::exchange(m_group, nullptr)) {
        hook.unlink();
        return g->child_finished(failed ? e : nullptr);
    }
    if (failed) tandem::detail::hooks(*m_loop).report_unhandled(e, *this); // the group is gone: nobody else will see it
    return std::noop_coroutine();
}
} // namespace detail

} // namespace tandem
