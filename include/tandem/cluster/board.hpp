// tandem — the cluster's status board: one shared memory mapping, created by the primary
// before it forks, in which every worker publishes its heartbeat, its figures and, when its
// loop blocks, the task that blocks it. The primary and every worker read it without a
// message or a syscall.
//
// Layer: offload (cluster). Plain memory and atomics; knows nothing of loops or sockets.
//
// Who writes what: the primary owns a seat's identity (state, index, pid, generation,
// restarts); the worker owns its heartbeat, its figures and its block record. Every field
// is a lock-free std::atomic, which is address-free, so it works across processes (the
// mapping is MAP_SHARED). The block record is several fields written by the worker's
// watchdog thread: a sequence lock keeps readers from mixing two records.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/syscall.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <sys/types.h>
#include <vector>

namespace tandem::cluster {

/// Where a worker is in its life.
enum class worker_state : std::uint32_t {
    free = 0,     // the seat is empty
    starting = 1, // forked, not accepting yet
    ready = 2,    // accepting
    draining = 3, // asked to stop: finishing its requests
};

/// One worker's figures, as read from the board.
struct worker_stats {
    std::size_t index = 0;      // the worker's position, 0 .. workers-1 (a replacement keeps it)
    pid_t pid = 0;
    worker_state state = worker_state::free;
    std::uint64_t restarts = 0; // replacements at this index so far
    std::uint64_t requests = 0; // as counted by the serve function (worker::count_requests)
    std::chrono::nanoseconds loop_delay_p99{}; // since the worker started
    double utilization = 0;                    // busy / (busy + idle), last heartbeat interval
    std::chrono::nanoseconds uptime{};
};

namespace detail {

inline std::int64_t now_ns() noexcept { return std::chrono::steady_clock::now().time_since_epoch().count(); }

/// One seat of the board: one worker process (a reload briefly needs two per index).
struct seat {
    static constexpr std::size_t task_size = 64;
    static constexpr std::size_t file_size = 160;

    std::atomic<std::uint32_t> state{0};
    std::atomic<std::uint32_t> index{0};
    std::atomic<std::uint32_t> generation{0};
    std::atomic<std::int32_t> pid{0};
    std::atomic<std::uint64_t> restarts{0};
    std::atomic<std::int64_t> started_ns{0};
    // Worker-owned.
    std::atomic<std::int64_t> heartbeat_ns{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::int64_t> delay_p99_ns{0};
    std::atomic<std::uint32_t> utilization_ppm{0};
    // The block record (sequence lock: odd while being written).
    std::atomic<std::uint32_t> block_seq{0};
    std::atomic<std::int64_t> blocked_since_ns{0};
    std::atomic<std::uint32_t> block_line{0};
    std::atomic<char> block_task[task_size]{};
    std::atomic<char> block_file[file_size]{};

    /// The worker's watchdog thread: "the step that started at `since` is still running, in
    /// `task` spawned at file:line". Single writer.
    void write_block(std::int64_t since, std::string_view task, std::string_view file, std::uint32_t line) noexcept {
        const std::uint32_t s = block_seq.load(std::memory_order_relaxed);
        block_seq.store(s + 1, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
        blocked_since_ns.store(since, std::memory_order_relaxed);
        block_line.store(line, std::memory_order_relaxed);
        copy_in(block_task, task);
        copy_in(block_file, file);
        block_seq.store(s + 2, std::memory_order_release);
    }

    struct block_record {
        std::int64_t since_ns = 0;
        std::string task;
        std::string file;
        std::uint32_t line = 0;
    };
    /// A consistent copy of the block record (a few retries while the worker writes it).
    /// (Record is block_record: a template only so that the string copies are compiled
    /// where it is called, tandem/detail/dependent.hpp.)
    template <class Record>
    bool read_block(Record& out) const {
        for (int attempt = 0; attempt < 100; ++attempt) {
            const std::uint32_t s1 = block_seq.load(std::memory_order_acquire);
            if (s1 & 1u) continue;
            out.since_ns = blocked_since_ns.load(std::memory_order_relaxed);
            out.line = block_line.load(std::memory_order_relaxed);
            out.task = copy_out(block_task);
            out.file = copy_out(block_file);
            std::atomic_thread_fence(std::memory_order_acquire);
            if (block_seq.load(std::memory_order_relaxed) == s1) return true;
        }
        return false;
    }

    worker_stats stats(std::int64_t now) const noexcept {
        worker_stats s;
        s.index = index.load(std::memory_order_relaxed);
        s.pid = pid.load(std::memory_order_relaxed);
        s.state = static_cast<worker_state>(state.load(std::memory_order_acquire));
        s.restarts = restarts.load(std::memory_order_relaxed);
        s.requests = requests.load(std::memory_order_relaxed);
        s.loop_delay_p99 = std::chrono::nanoseconds(delay_p99_ns.load(std::memory_order_relaxed));
        s.utilization = utilization_ppm.load(std::memory_order_relaxed) / 1e6;
        const std::int64_t started = started_ns.load(std::memory_order_relaxed);
        s.uptime = std::chrono::nanoseconds(started ? now - started : 0);
        return s;
    }

private:
    template <std::size_t N>
    static void copy_in(std::atomic<char> (&to)[N], std::string_view from) noexcept {
        const std::size_t n = from.size() < N - 1 ? from.size() : N - 1;
        for (std::size_t i = 0; i < n; ++i) to[i].store(from[i], std::memory_order_relaxed);
        to[n].store('\0', std::memory_order_relaxed);
    }
    template <std::size_t N>
    static std::string copy_out(const std::atomic<char> (&from)[N]) {
        std::string s;
        for (std::size_t i = 0; i < N; ++i) {
            const char c = from[i].load(std::memory_order_relaxed);
            if (c == '\0') break;
            s += c;
        }
        return s;
    }
};

static_assert(std::atomic<std::int64_t>::is_always_lock_free && std::atomic<char>::is_always_lock_free,
              "the status board needs address-free (lock-free) atomics to work across processes");

} // namespace detail

/// The status board: a fixed number of seats in a MAP_SHARED anonymous mapping. Created by
/// the primary before forking; every worker inherits the same pages.
class board {
public:
    explicit board(std::size_t seats) : m_count(seats) {
        m_bytes = seats * sizeof(detail::seat);
        void* at = ::mmap(nullptr, m_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (at == MAP_FAILED) tandem::detail::throw_errno("tandem cluster: mmap(status board)");
        m_seats = new (at) detail::seat[seats];
    }
    board(const board&) = delete;
    board& operator=(const board&) = delete;
    ~board() { ::munmap(m_seats, m_bytes); } // seats are trivially destructible atomics

    std::size_t size() const noexcept { return m_count; }
    detail::seat& operator[](std::size_t i) noexcept { return m_seats[i]; }
    const detail::seat& operator[](std::size_t i) const noexcept { return m_seats[i]; }

    /// Every occupied seat's figures, in seat order. Cheap: no syscall but the clock. (A
    /// template only so that the vector's members are compiled where it is called:
    /// tandem/detail/dependent.hpp.)
    template <class Deferred = void>
    tandem::detail::dependent_t<std::vector<worker_stats>, Deferred> snapshot() const {
        tandem::detail::dependent_t<std::vector<worker_stats>, Deferred> out;
        const std::int64_t now = detail::now_ns();
        for (std::size_t i = 0; i < m_count; ++i)
            if (m_seats[i].state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(worker_state::free))
                out.push_back(m_seats[i].stats(now));
        return out;
    }

private:
    detail::seat* m_seats = nullptr;
    std::size_t m_count = 0;
    std::size_t m_bytes = 0;
};

} // namespace tandem::cluster
