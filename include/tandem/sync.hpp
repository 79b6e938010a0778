// tandem — coroutine synchronization for tasks of one loop: async_mutex, semaphore, event,
// and a bounded channel<T>.
//
// Layer: core. No OS headers, no locks: these are loop-local (use them from tasks of the
// same loop). Waiters are resumed through the loop's ready queue, never inline, and FIFO.
// Every wait is cancellable and cancel-safe: a cancelled waiter leaves the queue without
// taking anything.
#pragma once

#include "tandem/error.hpp"
#include "tandem/task.hpp"
#include "tandem/detail/cancellable_wait.hpp"
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

/// A task suspended on a primitive: queued in its list. The primitive's awaiter derives
/// from cancellable_wait<Awaiter, sync_waiter> and supplies start() (queue itself); a
/// cancelled waiter leaves the queue without taking anything.
class sync_waiter : public list_hook, public suspended_wait {
public:
    /// Woken with something handed over (a mutex's ownership, a semaphore's unit) that
    /// await_resume has not taken yet: a waiter destroyed in between (its loop torn down with
    /// it queued) gives it back.
    bool granted = false;
    void grant() noexcept {
        granted = true;
        wake();
    }
    void require_loop() const {
        if (!resumer) throw std::logic_error("tandem: waiting on a primitive outside an event loop");
    }
    bool stop() noexcept {
        unlink();
        return true;
    }
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
    class lock_awaiter : public detail::cancellable_wait<lock_awaiter<Scoped>, detail::sync_waiter> {
    public:
        explicit lock_awaiter(async_mutex& m) noexcept : m_mutex(m) {}
        lock_awaiter(const lock_awaiter&) = delete;
        lock_awaiter& operator=(const lock_awaiter&) = delete;
        ~lock_awaiter() {
            if (this->granted) m_mutex.unlock();
        }
        bool await_ready() noexcept { return m_mutex.try_lock(); }
        auto await_resume() {
            this->granted = false;
            this->throw_if_cancelled();
            if constexpr (Scoped) return async_lock(m_mutex);
        }

    private:
        friend class detail::cancellable_wait<lock_awaiter, detail::sync_waiter>;
        bool start() {
            this->require_loop();
            m_mutex.m_waiters.push_back(*this);
            return true;
        }
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
        m_waiters.pop_front().grant(); // ownership passes; m_locked stays true
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

    class acquire_awaiter : public detail::cancellable_wait<acquire_awaiter, detail::sync_waiter> {
    public:
        explicit acquire_awaiter(semaphore& s) noexcept : m_sem(s) {}
        acquire_awaiter(const acquire_awaiter&) = delete;
        acquire_awaiter& operator=(const acquire_awaiter&) = delete;
        ~acquire_awaiter() {
            if (granted) m_sem.release();
        }
        bool await_ready() noexcept { return m_sem.try_acquire(); }
        void await_resume() {
            granted = false;
            throw_if_cancelled();
        }

    private:
        friend class semaphore;
        friend cancellable_wait;
        bool start() {
            require_loop();
            m_sem.m_waiters.push_back(*this);
            return true;
        }
        semaphore& m_sem;
    };

    /// Takes one unit, suspending while none is available. Cancellable.
    acquire_awaiter acquire() noexcept { return acquire_awaiter{*this}; }

    /// Returns n units; each goes straight to a waiter if one is queued.
    void release(std::size_t n = 1) noexcept {
        for (; n > 0 && !m_waiters.empty(); --n) m_waiters.pop_front().grant();
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

    class wait_awaiter : public detail::cancellable_wait<wait_awaiter, detail::sync_waiter> {
    public:
        explicit wait_awaiter(event& e) noexcept : m_event(e) {}
        bool await_ready() const noexcept { return m_event.m_set; }
        void await_resume() const { throw_if_cancelled(); }

    private:
        friend class event;
        friend cancellable_wait;
        bool start() {
            require_loop();
            m_event.m_waiters.push_back(*this);
            return true;
        }
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
///
/// Cancel safety: receive() and send() are cancel-safe. A value stays in the channel until a
/// receiver resumes with it: a receive cancelled after a value arrived for it (e.g. the loser
/// of when_any(ch.receive(), sleep_for(..))) leaves the value for the next receiver. A send
/// that throws tandem::cancelled did not send; one that returns did.
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

    /// Receives without waiting; std::nullopt if nothing is buffered (or all that is buffered
    /// is promised to receivers already woken).
    std::optional<T> try_receive() {
        if (unclaimed() == 0) return std::nullopt;
        return take();
    }

    class send_awaiter : public detail::cancellable_wait<send_awaiter, detail::sync_waiter> {
    public:
        send_awaiter(channel& c, T&& value) noexcept(std::is_nothrow_move_constructible_v<T>)
            : m_channel(c), m_value(std::move(value)) {}
        // The offer happens in start(), after the cancellation check: a send in a task already
        // cancelled (a when_any loser started after the winner) must not send.
        bool await_ready() const noexcept { return m_channel.m_closed; }
        void await_resume() const {
            this->throw_if_cancelled();
            if (!m_sent) throw channel_closed{};
        }

    private:
        friend class channel;
        friend class detail::cancellable_wait<send_awaiter, detail::sync_waiter>;
        bool start() {
            if (m_channel.offer(m_value)) {
                m_sent = true;
                return false;
            }
            this->require_loop();
            m_channel.m_senders.push_back(*this);
            return true;
        }
        channel& m_channel;
        T m_value;
        bool m_sent = false;
    };

    class receive_awaiter : public detail::cancellable_wait<receive_awaiter, detail::sync_waiter> {
    public:
        explicit receive_awaiter(channel& c) noexcept : m_channel(c) {}
        receive_awaiter(const receive_awaiter&) = delete;
        receive_awaiter& operator=(const receive_awaiter&) = delete;
        /// Destroyed while woken for a value it never took (its loop was torn down with the
        /// task queued): the claim is released, so the value stays receivable.
        ~receive_awaiter() {
            if (m_promised) --m_channel.m_claimed;
        }
        // Taking happens in start(), after the cancellation check: a receive in a task already
        // cancelled (a when_any loser started after the winner) must leave the value.
        bool await_ready() const noexcept { return m_channel.m_closed && m_channel.m_size == 0; }
        std::optional<T> await_resume() {
            if (m_value || !std::exchange(m_promised, false)) {
                this->throw_if_cancelled();
                if (!m_value && m_channel.unclaimed() > 0) { // woken by close, nothing claimed
                    // Cancelled since (a when_any loser): the value is not ours to take.
                    if (this->context && this->context->cancel_requested()) throw cancelled{};
                    return m_channel.take();
                }
                return std::move(m_value);
            }
            // A value waits in the buffer for us. Cancelled before we could take it: leave it
            // there and pass the claim to the next receiver.
            --m_channel.m_claimed;
            if (this->context && this->context->cancel_requested()) {
                m_channel.wake_receivers();
                throw cancelled{};
            }
            return m_channel.take();
        }

    private:
        friend class channel;
        friend class detail::cancellable_wait<receive_awaiter, detail::sync_waiter>;
        bool start() {
            if (m_channel.unclaimed() > 0) {
                m_value = m_channel.take();
                return false;
            }
            if (m_channel.m_closed && m_channel.m_size == 0) return false;
            this->require_loop();
            m_channel.m_receivers.push_back(*this);
            return true;
        }
        channel& m_channel;
        std::optional<T> m_value;
        bool m_promised = false; // woken for a buffered value, claimed in m_claimed
    };

    /// Sends `value`, suspending while the channel is full. Throws channel_closed if the
    /// channel is (or becomes) closed first, tandem::cancelled if cancelled while waiting (then
    /// nothing was sent). Cancel-safe.
    send_awaiter send(T value) { return send_awaiter{*this, std::move(value)}; }

    /// Receives the next value, suspending while the channel is empty; std::nullopt once
    /// the channel is closed and drained. Cancel-safe: a receive that throws
    /// tandem::cancelled took nothing.
    receive_awaiter receive() noexcept { return receive_awaiter{*this}; }

private:
    static std::size_t check(std::size_t capacity) {
        if (capacity == 0) throw std::invalid_argument("tandem::channel: capacity must be at least 1");
        return capacity;
    }

    /// Buffered values no woken receiver has claimed yet.
    std::size_t unclaimed() const noexcept { return m_size - m_claimed; }

    /// Wakes one waiting receiver per unclaimed value. The value stays in the buffer until
    /// the receiver runs, so a receiver cancelled in between loses nothing.
    void wake_receivers() noexcept {
        while (unclaimed() > 0 && !m_receivers.empty()) {
            receive_awaiter& r = m_receivers.pop_front();
            r.m_promised = true;
            ++m_claimed;
            r.wake();
        }
    }

    /// Buffers `value` for a receiver; moves from it only on success.
    bool offer(T& value) {
        if (m_closed || m_size == m_buffer.size()) return false;
        m_buffer[(m_head + m_size) % m_buffer.size()].emplace(std::move(value));
        ++m_size;
        wake_receivers();
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
            wake_receivers();
        }
        // Closed and now drained: a receiver that arrived while the last values were promised
        // to others waits for nothing more.
        if (m_closed && m_size == 0)
            while (!m_receivers.empty()) m_receivers.pop_front().wake();
        return value;
    }

    std::vector<std::optional<T>> m_buffer;
    std::size_t m_head = 0;
    std::size_t m_size = 0;
    std::size_t m_claimed = 0; // buffered values promised to woken receivers
    detail::intrusive_list<send_awaiter> m_senders;
    detail::intrusive_list<receive_awaiter> m_receivers;
    bool m_closed = false;
};

} // namespace tandem
