// tandem — coroutine synchronization for tasks of one loop: async_mutex, semaphore, event,
// and a bounded channel<T>.
//
// Layer: core. No OS headers, no locks: these are loop-local (use them from tasks of the
// same loop). Waiters are resumed through the loop's ready queue, never inline, and FIFO.
// Every wait is cancellable; a cancelled waiter leaves the queue without taking anything.
#pragma once

#include "tandem/error.hpp"
#include "tandem/task.hpp"
#include "tandem/detail/intrusive_list.hpp"
#include "tandem/detail/scheduler.hpp"

#include <coroutine>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

namespace tandem {

namespace detail {

/// A task suspended on a primitive: queued in its list, armed for cancellation.
class sync_waiter : public list_hook, public cancel_slot {
public:
    sync_waiter() noexcept { on_cancel = &cancel_wait; }

    /// Wakes the waiter (the caller has already taken it off the list).
    void wake() noexcept {
        if (m_context) m_context->disarm();
        m_scheduler->schedule(m_handle, m_context);
    }

protected:
    /// False if the task is already cancelled (then await_resume throws).
    template <class Promise>
    bool begin_wait(std::coroutine_handle<Promise> h) {
        m_context = context_of(h);
        if (m_context && m_context->cancel_requested()) {
            m_cancelled = true;
            return false;
        }
        m_scheduler = scheduler::current();
        if (!m_scheduler) throw std::logic_error("tandem: waiting on a primitive outside an event loop");
        m_handle = h;
        return true;
    }
    void arm() noexcept {
        if (m_context) m_context->arm(this);
    }
    void throw_if_cancelled() const {
        if (m_cancelled) throw cancelled{};
    }

private:
    static void cancel_wait(cancel_slot* slot) noexcept {
        auto* self = static_cast<sync_waiter*>(slot);
        self->unlink();
        self->m_cancelled = true;
        self->m_scheduler->schedule(self->m_handle, self->m_context);
    }

    std::coroutine_handle<> m_handle;
    task_context* m_context = nullptr;
    scheduler* m_scheduler = nullptr;
    bool m_cancelled = false;
};

} // namespace detail

class async_mutex;

/// Owns a locked async_mutex and unlocks it on destruction.
class [[nodiscard]] async_lock {
public:
    async_lock() noexcept = default;
    explicit async_lock(async_mutex& m) noexcept : m_mutex(&m) {}
    async_lock(async_lock&& other) noexcept : m_mutex(std::exchange(other.m_mutex, nullptr)) {}
    async_lock& operator=(async_lock&& other) noexcept {
        if (this != &other) {
            reset();
            m_mutex = std::exchange(other.m_mutex, nullptr);
        }
        return *this;
    }
    ~async_lock() { reset(); }
    bool owns_lock() const noexcept { return m_mutex != nullptr; }
    void unlock() noexcept { reset(); }

private:
    void reset() noexcept;
    async_mutex* m_mutex = nullptr;
};

/// A mutex for coroutines: waiting suspends the task, not the thread. Fair (FIFO): unlock
/// hands the mutex straight to the longest waiter, so it cannot be barged.
class async_mutex {
public:
    async_mutex() = default;
    async_mutex(const async_mutex&) = delete;
    async_mutex& operator=(const async_mutex&) = delete;

    bool try_lock() noexcept { return !std::exchange(m_locked, true); }

    /// Awaitable returned by lock() (resumes with void) and scoped_lock() (with an async_lock).
    template <bool Scoped>
    class lock_awaiter : public detail::sync_waiter {
    public:
        explicit lock_awaiter(async_mutex& m) noexcept : m_mutex(m) {}
        bool await_ready() noexcept { return m_mutex.try_lock(); }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            if (!begin_wait(h)) return false;
            m_mutex.m_waiters.push_back(*this);
            arm();
            return true;
        }
        auto await_resume() {
            throw_if_cancelled();
            if constexpr (Scoped) return async_lock(m_mutex);
        }

    private:
        async_mutex& m_mutex;
    };

    /// `co_await m.lock()` then m.unlock(). Cancellable.
    lock_awaiter<false> lock() noexcept { return lock_awaiter<false>{*this}; }
    /// `auto guard = co_await m.scoped_lock();` unlocks when guard dies. Cancellable.
    lock_awaiter<true> scoped_lock() noexcept { return lock_awaiter<true>{*this}; }

    void unlock() noexcept {
        if (m_waiters.empty()) {
            m_locked = false;
            return;
        }
        m_waiters.pop_front().wake(); // ownership passes; m_locked stays true
    }

private:
    detail::intrusive_list<detail::sync_waiter> m_waiters;
    bool m_locked = false;
};

inline void async_lock::reset() noexcept {
    if (async_mutex* m = std::exchange(m_mutex, nullptr)) m->unlock();
}

/// A counting semaphore for coroutines (asyncio.Semaphore): bounds concurrency. FIFO.
class semaphore {
public:
    explicit semaphore(std::size_t initial) noexcept : m_available(initial) {}
    semaphore(const semaphore&) = delete;
    semaphore& operator=(const semaphore&) = delete;

    std::size_t available() const noexcept { return m_available; }

    bool try_acquire() noexcept {
        if (m_available == 0 || !m_waiters.empty()) return false;
        --m_available;
        return true;
    }

    class acquire_awaiter : public detail::sync_waiter {
    public:
        explicit acquire_awaiter(semaphore& s) noexcept : m_sem(s) {}
        bool await_ready() noexcept { return m_sem.try_acquire(); }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            if (!begin_wait(h)) return false;
            m_sem.m_waiters.push_back(*this);
            arm();
            return true;
        }
        void await_resume() const { throw_if_cancelled(); }

    private:
        friend class semaphore;
        semaphore& m_sem;
    };

    /// Takes one unit, suspending while none is available. Cancellable.
    acquire_awaiter acquire() noexcept { return acquire_awaiter{*this}; }

    /// Returns n units; each goes straight to a waiter if one is queued.
    void release(std::size_t n = 1) noexcept {
        for (; n > 0 && !m_waiters.empty(); --n) m_waiters.pop_front().wake();
        m_available += n;
    }

private:
    detail::intrusive_list<acquire_awaiter> m_waiters;
    std::size_t m_available;
};

/// A manual-reset event (asyncio.Event): wait() suspends until set() is called.
class event {
public:
    event() = default;
    explicit event(bool initially_set) noexcept : m_set(initially_set) {}
    event(const event&) = delete;
    event& operator=(const event&) = delete;

    bool is_set() const noexcept { return m_set; }

    /// Wakes every waiter; later waits complete at once until reset().
    void set() noexcept {
        m_set = true;
        while (!m_waiters.empty()) m_waiters.pop_front().wake();
    }
    void reset() noexcept { m_set = false; }

    class wait_awaiter : public detail::sync_waiter {
    public:
        explicit wait_awaiter(event& e) noexcept : m_event(e) {}
        bool await_ready() const noexcept { return m_event.m_set; }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            if (!begin_wait(h)) return false;
            m_event.m_waiters.push_back(*this);
            arm();
            return true;
        }
        void await_resume() const { throw_if_cancelled(); }

    private:
        friend class event;
        event& m_event;
    };

    /// Suspends until the event is set. Cancellable.
    wait_awaiter wait() noexcept { return wait_awaiter{*this}; }

private:
    detail::intrusive_list<wait_awaiter> m_waiters;
    bool m_set = false;
};

/// A bounded multi-producer multi-consumer queue between tasks of one loop (tokio's mpsc,
/// asyncio.Queue(maxsize)). A full channel suspends senders: backpressure, not growth.
/// close(): senders fail with channel_closed; receivers drain what is buffered, then get
/// std::nullopt.
template <class T>
class channel {
public:
    /// Throws std::invalid_argument if capacity is 0.
    explicit channel(std::size_t capacity) : m_buffer(check(capacity)) {}
    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;

    std::size_t capacity() const noexcept { return m_buffer.size(); }
    std::size_t size() const noexcept { return m_size; }
    bool closed() const noexcept { return m_closed; }

    void close() noexcept {
        m_closed = true;
        while (!m_senders.empty()) m_senders.pop_front().wake();
        while (!m_receivers.empty()) m_receivers.pop_front().wake();
    }

    /// Sends without waiting; returns false (leaving `value` untouched) if the channel is
    /// full or closed.
    bool try_send(T&& value) { return offer(value); }
    bool try_send(const T& value) {
        T copy(value);
        return offer(copy);
    }

    /// Receives without waiting; std::nullopt if nothing is buffered.
    std::optional<T> try_receive() {
        if (m_size == 0) return std::nullopt;
        return take();
    }

    class send_awaiter : public detail::sync_waiter {
    public:
        send_awaiter(channel& c, T&& value) noexcept(std::is_nothrow_move_constructible_v<T>)
            : m_channel(c), m_value(std::move(value)) {}
        bool await_ready() {
            if (m_channel.m_closed) return true;
            return m_channel.offer(m_value) ? (m_sent = true) : false;
        }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            if (!begin_wait(h)) return false;
            m_channel.m_senders.push_back(*this);
            arm();
            return true;
        }
        void await_resume() const {
            throw_if_cancelled();
            if (!m_sent) throw channel_closed{};
        }

    private:
        friend class channel;
        channel& m_channel;
        T m_value;
        bool m_sent = false;
    };

    class receive_awaiter : public detail::sync_waiter {
    public:
        explicit receive_awaiter(channel& c) noexcept : m_channel(c) {}
        bool await_ready() {
            if (m_channel.m_size > 0) {
                m_value = m_channel.take();
                return true;
            }
            return m_channel.m_closed;
        }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            if (!begin_wait(h)) return false;
            m_channel.m_receivers.push_back(*this);
            arm();
            return true;
        }
        std::optional<T> await_resume() {
            throw_if_cancelled();
            return std::move(m_value);
        }

    private:
        friend class channel;
        channel& m_channel;
        std::optional<T> m_value;
    };

    /// Sends `value`, suspending while the channel is full. Throws channel_closed if the
    /// channel is (or becomes) closed first, tandem::cancelled if cancelled while waiting.
    send_awaiter send(T value) { return send_awaiter{*this, std::move(value)}; }

    /// Receives the next value, suspending while the channel is empty; std::nullopt once
    /// the channel is closed and drained. Cancellable.
    receive_awaiter receive() noexcept { return receive_awaiter{*this}; }

private:
    static std::size_t check(std::size_t capacity) {
        if (capacity == 0) throw std::invalid_argument("tandem::channel: capacity must be at least 1");
        return capacity;
    }

    /// Delivers to a waiting receiver or into the buffer; moves from `value` only on success.
    bool offer(T& value) {
        if (m_closed) return false;
        if (!m_receivers.empty()) { // buffer is empty whenever receivers wait
            receive_awaiter& r = m_receivers.pop_front();
            r.m_value.emplace(std::move(value));
            r.wake();
            return true;
        }
        if (m_size == m_buffer.size()) return false;
        m_buffer[(m_head + m_size) % m_buffer.size()].emplace(std::move(value));
        ++m_size;
        return true;
    }

    /// Takes the oldest buffered value and lets the longest-waiting sender refill the slot.
    T take() {
        std::optional<T>& slot = m_buffer[m_head];
        T value = std::move(*slot);
        slot.reset();
        m_head = (m_head + 1) % m_buffer.size();
        --m_size;
        if (!m_senders.empty()) {
            send_awaiter& s = m_senders.pop_front();
            m_buffer[(m_head + m_size) % m_buffer.size()].emplace(std::move(s.m_value));
            ++m_size;
            s.m_sent = true;
            s.wake();
        }
        return value;
    }

    std::vector<std::optional<T>> m_buffer;
    std::size_t m_head = 0;
    std::size_t m_size = 0;
    detail::intrusive_list<send_awaiter> m_senders;
    detail::intrusive_list<receive_awaiter> m_receivers;
    bool m_closed = false;
};

} // namespace tandem
