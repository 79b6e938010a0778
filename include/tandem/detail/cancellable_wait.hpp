// tandem — the one home of the cancellable-wait protocol (cppcoro's pattern).
//
// Layer: core (detail). Every awaiter that suspends a task until something happens derives
// from cancellable_wait<Derived> and supplies two operations:
//
//   start()  register the wait (a timer, an fd, a queue of waiters, a job, children). Returns
//            bool — true: the task suspends; false: it completed at once — or a coroutine
//            handle to transfer to (a child that starts now; never the awaiting coroutine,
//            see TOOLCHAIN pitfall 4).
//   stop()   the task was cancelled while waiting: unhook the wait. Returns true if it did
//            (the task is resumed and throws tandem::cancelled), false if the wait ends on
//            its own (a job already finished, children that must unwind first); the
//            awaiter then decides what await_resume reports, e.g. by calling mark_cancelled().
//
// and calls complete() (or wake()) when the wait ends normally. The base does the rest, the
// same way for all: take the task's context, fail at once if it is already cancelled,
// register, arm the context's cancel slot, and throw tandem::cancelled on resume.
#pragma once

#include "tandem/error.hpp"
#include "tandem/task.hpp"
#include "tandem/detail/scheduler.hpp"

#include <coroutine>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace tandem::detail {

/// The state of one suspended wait, apart from the operation: who waits, in which task,
/// resumed by which scheduler, and whether it ended by cancellation. Non-template so the loop
/// and the primitives can complete a wait without knowing its operation.
struct suspended_wait : cancel_slot {
    std::coroutine_handle<> handle;
    task_context* context = nullptr;
    scheduler* resumer = nullptr;
    bool cancelled = false;

    /// The wait ended normally: later cancellation no longer concerns it. Returns the
    /// coroutine to resume (for awaiters that transfer to it symmetrically).
    std::coroutine_handle<> complete() noexcept {
        if (context) context->disarm();
        return handle;
    }
    /// complete(), then resume the waiter through its scheduler's ready queue.
    void wake() noexcept { resumer->schedule(complete(), context); }
    /// Records that the wait ended by cancellation (await_resume throws).
    void mark_cancelled() noexcept { cancelled = true; }
    void throw_if_cancelled() const {
        if (cancelled) throw tandem::cancelled{};
    }
};

/// Derived awaiters that must keep waiting although their task is already cancelled (a
/// structured join still waits for its children) declare
///   static constexpr bool wait_when_cancelled = true;
/// then start() runs and stop() follows at once.
template <class Derived>
concept waits_when_cancelled = requires { requires Derived::wait_when_cancelled; };

/// What cancellable_wait::await_suspend returns for a start() returning R: bool, or a handle
/// to transfer to.
template <class R>
using suspend_result_t = std::conditional_t<std::is_same_v<R, bool>, bool, std::coroutine_handle<>>;

template <class Derived, class Base = suspended_wait>
class cancellable_wait : public Base {
    static_assert(std::is_base_of_v<suspended_wait, Base>);

public:
    /// The protocol. Returns what Derived::start() returns (bool or a handle to transfer to).
    /// The return type is spelled, not deduced: clang compiles a function with a deduced
    /// return type as soon as a template's non-dependent co_await names it, and with it
    /// start() and all it reaches, in every translation unit (see dependent.hpp).
    template <class Promise, class D = Derived>
    suspend_result_t<decltype(std::declval<D&>().start())> await_suspend(std::coroutine_handle<Promise> h) {
        using start_result = decltype(self().start());
        constexpr bool transfers = !std::is_same_v<start_result, bool>;
        this->context = context_of(h);
        this->handle = h;
        this->resumer = scheduler::current();
        this->on_cancel = &on_cancel_requested;
        if (this->context && this->context->cancel_requested()) {
            if constexpr (waits_when_cancelled<Derived>) {
                static_assert(!transfers);
                if (!self().start()) return false;
                if (!self().stop()) return true; // it ends on its own, later
                this->cancelled = true;
                return false;
            } else if constexpr (transfers) {
                // A transferring await_suspend cannot say "do not suspend" (returning h
                // itself is what clang 14 miscompiles): come back through the ready queue.
                this->cancelled = true;
                if (!this->resumer) throw std::logic_error("tandem: cancelled wait outside an event loop");
                this->resumer->schedule(h, this->context);
                return std::coroutine_handle<>(std::noop_coroutine());
            } else {
                this->cancelled = true;
                return false;
            }
        }
        // Armed before start(): start() may run a child's code, which may cancel us.
        if (this->context) this->context->arm(this);
        if constexpr (transfers) {
            try {
                return std::coroutine_handle<>(self().start());
            } catch (...) {
                if (this->context) this->context->disarm();
                throw;
            }
        } else {
            bool suspended = false;
            try {
                suspended = self().start();
            } catch (...) {
                if (this->context) this->context->disarm();
                throw;
            }
            if (!suspended && this->context) this->context->disarm();
            return suspended;
        }
    }

protected:
    cancellable_wait() noexcept = default;
    ~cancellable_wait() = default;

private:
    Derived& self() noexcept { return static_cast<Derived&>(*this); }

    static void on_cancel_requested(cancel_slot* slot) noexcept {
        Derived& self = static_cast<Derived&>(static_cast<suspended_wait&>(*slot));
        if (!self.stop()) return;
        self.cancelled = true;
        self.resumer->schedule(self.handle, self.context);
    }
};

} // namespace tandem::detail
