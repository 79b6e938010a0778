// tandem — the loop's table of fd waiters and remembered readiness edges.
//
// Layer: detail (loop). It decides and the loop acts: a change of interest is returned for
// the loop to pass to the reactor, and an event returns the waiters it completed for the
// loop to schedule, instead of scheduling them itself.
#pragma once

#include "tandem/detail/cancellable_wait.hpp"
#include "tandem/detail/fd_indexed.hpp"

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <utility>

namespace tandem::detail {

/// A coroutine waiting for one direction of one fd.
struct io_waiter : suspended_wait {
    /// Optional: retries the operation when the fd is reported ready, before the coroutine
    /// is resumed. Returns false (EAGAIN again) to keep waiting. Lets an I/O awaiter finish
    /// its syscall without a coroutine frame of its own.
    bool (*perform)(io_waiter*) noexcept = nullptr;
    /// Non-zero for fds owned by a tandem socket: a new owner of an fd number (the old fd was
    /// closed and the number reused) gets a fresh registration.
    std::uint64_t owner = 0;
    int fd = -1;
    bool write = false;
    bool aborted = false; // the fd was forgotten (closed) while we waited
};

/// Per-fd readiness. With edge-triggered epoll an edge that arrives while nobody waits is
/// remembered here, so the next wait does not sleep through data that is already there.
struct fd_state {
    io_waiter* reader = nullptr;
    io_waiter* writer = nullptr;
    std::uint64_t owner = 0;
    bool readable = false;
    bool writable = false;
};

// remove() reports through an out parameter, not a std::optional: the loop's non-template
// members use this class, and std::optional's constexpr members would be compiled in every
// translation unit (detail/dependent.hpp; fd_indexed.hpp for the states).
class fd_table {
public:
    /// What the reactor should watch for an fd.
    struct interest {
        bool read = false;
        bool write = false;
    };
    /// Waiters an event or a forget completed (at most one per direction).
    struct completed {
        io_waiter* reader = nullptr;
        io_waiter* writer = nullptr;
    };

    /// Takes a remembered edge: true if one was there.
    bool consume_readiness(int fd, bool write) noexcept {
        if (!m_fds.known(fd)) return false;
        bool& ready = write ? m_fds[fd].writable : m_fds[fd].readable;
        return std::exchange(ready, false);
    }

    /// True if w's fd number was last registered by another (closed) socket: forget it first.
    bool owned_by_another(const io_waiter& w) const noexcept {
        return w.owner != 0 && m_fds.known(w.fd) && m_fds[w.fd].owner != w.owner;
    }

    /// Registers w; returns the fd's new interest. One waiter per direction.
    interest add(io_waiter& w) {
        m_fds.cover(w.fd);
        fd_state& s = m_fds[w.fd];
        if (w.owner != 0) s.owner = w.owner;
        io_waiter*& slot = w.write ? s.writer : s.reader;
        if (slot) throw std::logic_error("tandem: two tasks wait for the same direction of one fd");
        slot = &w;
        return interest_of(s);
    }

    /// Unregisters w if it is registered (true), and sets `left` to the fd's new interest then.
    bool remove(io_waiter& w, interest& left) noexcept {
        if (!m_fds.known(w.fd)) return false;
        fd_state& s = m_fds[w.fd];
        io_waiter*& slot = w.write ? s.writer : s.reader;
        if (slot != &w) return false;
        slot = nullptr;
        left = interest_of(s);
        return true;
    }

    /// Records who registered fd (a socket's id) before the first waiter comes, for a
    /// registration made outside add() (event_loop::watch_exclusive).
    void claim(int fd, std::uint64_t owner) {
        m_fds.cover(fd);
        m_fds[fd].owner = owner;
    }

    /// The fd is being closed: clears its state and returns its waiters, marked aborted.
    completed forget(int fd) noexcept {
        if (!m_fds.known(fd)) return {};
        fd_state& s = m_fds[fd];
        completed out{std::exchange(s.reader, nullptr), std::exchange(s.writer, nullptr)};
        for (io_waiter* w : {out.reader, out.writer})
            if (w) w->aborted = true;
        s = fd_state{};
        return out;
    }

    /// The reactor reported fd ready: each direction's waiter retries its operation (it may
    /// ask to keep waiting); with no waiter the edge is remembered. Returns the waiters that
    /// are done, and the interest left in `left` (poll drops satisfied interest).
    completed on_event(int fd, bool readable, bool writable, interest& left) noexcept {
        if (!m_fds.known(fd)) return {};
        fd_state& s = m_fds[fd];
        completed out;
        if (readable) out.reader = ready(s.reader, s.readable);
        if (writable) out.writer = ready(s.writer, s.writable);
        left = interest_of(s);
        return out;
    }

    /// Treats one direction of fd as ready (a task out of I/O budget asked for a retry);
    /// returns its waiter if that completed it.
    io_waiter* retry(int fd, bool write) noexcept {
        if (!m_fds.known(fd)) return nullptr;
        fd_state& s = m_fds[fd];
        io_waiter*& w = write ? s.writer : s.reader;
        return w ? ready(w, write ? s.writable : s.readable) : nullptr;
    }

private:
    static interest interest_of(const fd_state& s) noexcept { return {s.reader != nullptr, s.writer != nullptr}; }
    static io_waiter* ready(io_waiter*& waiter, bool& remembered) noexcept {
        io_waiter* w = waiter;
        if (!w) {
            remembered = true;
            return nullptr;
        }
        if (w->perform && !w->perform(w)) return nullptr; // EAGAIN again: stay registered
        waiter = nullptr;
        return w;
    }

    fd_indexed<fd_state> m_fds;
};

} // namespace tandem::detail
