// tandem — the start board: which job each worker has taken off its channel, in memory the
// pool and its workers share (one word per worker slot, in a memfd).
//
// Layer: process. Knows nothing of pools or the loop.
//
// Why: a worker can die while idle, after the pool wrote it a job but before it read it
// (SIGKILL, the OOM killer). Only a job the worker really took may fail with
// worker_crashed; any other goes back to the front of the queue. The worker writes the job's
// id here before it runs the job, which costs one store and no message; the pool reads it
// only after the worker is dead, when the kernel has made every store of the dead process
// visible.
#pragma once

#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace tandem::process {

class start_board {
public:
    /// Bytes per slot: a cache line, so workers do not share one.
    static constexpr std::size_t stride = 64;

    start_board() = default;
    start_board(start_board&& other) noexcept
        : m_fd(std::move(other.m_fd)), m_base(other.m_base), m_bytes(other.m_bytes) {
        other.m_base = nullptr;
        other.m_bytes = 0;
    }
    start_board& operator=(start_board&& other) noexcept {
        if (this != &other) {
            unmap();
            m_fd = std::move(other.m_fd);
            m_base = other.m_base;
            m_bytes = other.m_bytes;
            other.m_base = nullptr;
            other.m_bytes = 0;
        }
        return *this;
    }
    ~start_board() { unmap(); }

    /// The pool's side: a zeroed board for `slots` workers. Throws std::system_error.
    static start_board create(std::size_t slots) {
        start_board b;
        b.m_fd.reset(::memfd_create("tandem-start-board", MFD_CLOEXEC));
        if (!b.m_fd) detail::throw_errno("tandem: memfd_create (start board)");
        const std::size_t bytes = (slots == 0 ? 1 : slots) * stride;
        if (::ftruncate(b.m_fd.get(), static_cast<off_t>(bytes)) != 0) detail::throw_errno("tandem: ftruncate (start board)");
        b.map(bytes);
        if (!b.m_base) detail::throw_errno("tandem: mmap (start board)");
        return b;
    }
    /// A worker's side: maps the board passed as `fd` (and closes it). Empty on failure.
    static start_board attach(int fd) noexcept {
        start_board b;
        struct stat st {};
        if (fd >= 0 && ::fstat(fd, &st) == 0 && st.st_size > 0) {
            b.m_fd.reset(fd);
            b.map(static_cast<std::size_t>(st.st_size));
            b.m_fd.reset();
        } else if (fd >= 0) {
            ::close(fd);
        }
        return b;
    }

    /// The descriptor to pass to a new worker (the pool's side).
    int fd() const noexcept { return m_fd.get(); }
    std::size_t slots() const noexcept { return m_bytes / stride; }

    /// The worker in `slot` has taken job `id` (worker side; ignored past the board).
    void mark_started(std::size_t slot, std::uint64_t id) const noexcept {
        if (slot < slots()) std::atomic_ref<std::uint64_t>(word(slot)).store(id, std::memory_order_release);
    }
    /// The last job the worker in `slot` took (pool side, once the worker is dead).
    std::uint64_t started(std::size_t slot) const noexcept {
        return slot < slots() ? std::atomic_ref<std::uint64_t>(word(slot)).load(std::memory_order_acquire) : 0;
    }

private:
    void map(std::size_t bytes) noexcept {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, m_fd.get(), 0);
        if (p == MAP_FAILED) return;
        m_base = static_cast<std::byte*>(p);
        m_bytes = bytes;
    }
    void unmap() noexcept {
        if (m_base) ::munmap(m_base, m_bytes);
        m_base = nullptr;
        m_bytes = 0;
    }
    std::uint64_t& word(std::size_t slot) const noexcept {
        return *reinterpret_cast<std::uint64_t*>(m_base + slot * stride);
    }

    detail::unique_fd m_fd;
    std::byte* m_base = nullptr;
    std::size_t m_bytes = 0;
};

} // namespace tandem::process
