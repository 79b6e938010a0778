// tandem — task_group: structured concurrency over spawned tasks (Python's TaskGroup,
// tokio's JoinSet).
//
// Layer: loop. Children are ordinary spawned tasks of the loop (so loop teardown handles
// them like any other), owned by the group instead of a join_handle.
#pragma once

#include "tandem/loop.hpp"
#include "tandem/spawn.hpp"
#include "tandem/task.hpp"

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
            m_loop->report_unhandled(std::exchange(m_failure, nullptr), none);
        }
    }

    /// Starts `t` in the group; it runs on the loop's next turn. Results are discarded:
    /// share them through captured state, or use when_all when you need them.
    template <class T>
    void spawn(task<T> t, std::string_view name = {}, source_location where = source_location::current()) {
        auto* r = new detail::group_root<T>(*m_loop, std::move(t), *this, name, where);
        m_children.push_back(r->hook);
        if (m_failure) r->request_cancel(); // a failed group starts nothing new
        m_loop->start_root(*r);
    }

    /// Cancels every running child.
    void cancel() noexcept {
        m_children.for_each([](detail::group_hook& h) { h.member->cancel_member(); });
    }

    /// Children that have not finished.
    std::size_t size() const noexcept { return m_children.size(); }
    bool empty() const noexcept { return m_children.empty(); }

    class join_awaiter : detail::cancel_slot {
    public:
        explicit join_awaiter(task_group& g) noexcept : m_group(g) { on_cancel = &cancel_children; }
        join_awaiter(const join_awaiter&) = delete;
        join_awaiter& operator=(const join_awaiter&) = delete;
        ~join_awaiter() {
            if (m_group.m_joiner == this) m_group.m_joiner = nullptr;
        }
        bool await_ready() const noexcept { return m_group.m_children.empty(); }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
            m_context = detail::context_of(h);
            m_handle = h;
            if (m_context && m_context->cancel_requested()) {
                m_parent_cancelled = true;
                m_group.cancel(); // structured: still wait for them
            } else if (m_context) {
                m_context->arm(this);
            }
            m_group.m_joiner = this;
            return true;
        }
        void await_resume() {
            m_group.m_joiner = nullptr;
            if (std::exception_ptr e = std::exchange(m_group.m_failure, nullptr)) std::rethrow_exception(e);
            if (m_parent_cancelled) throw cancelled{};
        }

    private:
        friend class task_group;
        static void cancel_children(detail::cancel_slot* slot) noexcept {
            auto* self = static_cast<join_awaiter*>(slot);
            self->m_parent_cancelled = true;
            self->m_group.cancel();
        }
        task_group& m_group;
        std::coroutine_handle<> m_handle;
        detail::task_context* m_context = nullptr;
        bool m_parent_cancelled = false;
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
        if (j->m_context) j->m_context->disarm();
        m_loop->set_current_task(j->m_context);
        return j->m_handle;
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
    if (failed) m_loop->report_unhandled(e, *this); // the group is gone: nobody else will see it
    return std::noop_coroutine();
}
} // namespace detail

} // namespace tandem
