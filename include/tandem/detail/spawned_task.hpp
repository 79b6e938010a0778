// tandem — the loop's record of a spawned task (a "root"): its context, its frame, who
// waits for it, and the references that keep it alive.
//
// Layer: detail (loop). The members that talk to the loop (finish, release, reporting) are
// defined in loop.hpp, once event_loop is complete.
#pragma once

#include "tandem/source_location.hpp"
#include "tandem/task.hpp"
#include "tandem/detail/cancellable_wait.hpp"
#include "tandem/detail/frame_pool.hpp"
#include "tandem/detail/intrusive_list.hpp"

#include <coroutine>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

namespace tandem {

class event_loop;

namespace detail {

/// The loop's record of one spawned task: its context, its frame, and who waits for it.
/// Reference-counted by the loop (while it runs) and by its join_handle (while one exists).
/// Allocated from the frame pool, like the frame it goes with.
class root_base : public task_context, public list_hook, public pooled {
public:
    struct join_waiter : suspended_wait {};

    root_base(event_loop& loop, std::string_view name, source_location where)
        : m_loop(&loop), m_name(name), m_where(where) {
        mark_root();
    }

    std::string_view name() const noexcept override { return m_name; }
    source_location where() const noexcept override { return m_where; }
    std::coroutine_handle<> finish() noexcept override;

    virtual std::coroutine_handle<> frame() const noexcept = 0;
    virtual std::exception_ptr exception() const noexcept = 0;
    virtual void destroy_frame() noexcept = 0;

    event_loop& loop() const noexcept { return *m_loop; }
    bool done() const noexcept { return m_done; }
    bool abandoned() const noexcept { return m_abandoned; }
    join_waiter* joiner() const noexcept { return m_joiner; }
    void set_joiner(join_waiter* w) noexcept { m_joiner = w; }

    void add_handle() noexcept {
        ++m_refs;
        m_has_handle = true;
    }
    /// The join_handle is gone; `observed` says whether it took the result.
    void drop_handle(bool observed) noexcept;
    void release() noexcept;
    /// Loop teardown: destroy the suspended frame, never resume it.
    void abandon() noexcept {
        m_abandoned = true;
        m_done = true;
        destroy_frame();
    }

protected:
    /// Decides what runs after this task finished. Task groups override it.
    virtual std::coroutine_handle<> on_finished() noexcept;
    /// True if this exception must reach the loop's exception handler.
    bool worth_reporting(const std::exception_ptr& e) const noexcept;

    event_loop* m_loop;
    join_waiter* m_joiner = nullptr;
    std::string m_name;
    source_location m_where;
    unsigned m_refs = 1; // the loop's, until the task finishes
    bool m_has_handle = false;
    bool m_done = false;
    bool m_abandoned = false;

public:
    bool m_is_run_main = false; // event_loop::run(task) waits for this one: finishing ends the turn
};

template <class T>
class root final : public root_base {
public:
    root(event_loop& loop, task<T> t, std::string_view name, source_location where)
        : root_base(loop, name, where), m_task(std::move(t)) {
        m_task.handle().promise().set_context(this);
    }
    std::coroutine_handle<> frame() const noexcept override { return m_task.handle(); }
    std::exception_ptr exception() const noexcept override { return m_task.handle().promise().exception(); }
    void destroy_frame() noexcept override { m_task = task<T>{}; }
    decltype(auto) result() { return m_task.handle().promise().result(); }

private:
    task<T> m_task;
};

} // namespace detail

} // namespace tandem
