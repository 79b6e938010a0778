// tandem — loop lag and utilization statistics, and the blocking watchdog.
//
// Layer: loop. The event loop records into these; nothing here knows the loop itself.
//
// Node samples loop delay with a timer (monitorEventLoopDelay) and so misses what happens
// between samples. A tandem loop instead records every step's delay (how long the resumed
// task or callback waited after becoming runnable), and times each batch of ready work, the
// stretch during which it looks at neither timers nor I/O. It reads the clock once per batch,
// not per step: a clock read costs as much as a small task's whole step.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/source_location.hpp"
#include "tandem/task.hpp"

#include <array>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace tandem {

/// A histogram of durations with bounded relative error (6.25%), constant size (5 KiB) and
/// constant-time recording: 16 linear sub-buckets per power of two, HdrHistogram style.
/// Exact for durations under 32 ns; durations past 2^42 ns (73 minutes) share the last bucket.
/// count, min, max and mean are exact.
class latency_histogram {
public:
    using duration = std::chrono::nanoseconds;

    void record(duration d) noexcept { record(d, 1); }
    /// Records `d` `times` times (no-op for zero).
    void record(duration d, std::uint64_t times) noexcept {
        if (times == 0) return;
        const std::uint64_t v = d.count() > 0 ? static_cast<std::uint64_t>(d.count()) : 0;
        m_buckets[bucket_of(v)] += times;
        m_count += times;
        m_sum += v * times;
        m_max = std::max(m_max, v);
        m_min = std::min(m_min, v);
    }

    std::uint64_t count() const noexcept { return m_count; }
    duration min() const noexcept { return duration(m_count ? static_cast<std::int64_t>(m_min) : 0); }
    duration max() const noexcept { return duration(static_cast<std::int64_t>(m_max)); }
    duration mean() const noexcept {
        return duration(m_count ? static_cast<std::int64_t>(m_sum / m_count) : 0);
    }
    duration total() const noexcept { return duration(static_cast<std::int64_t>(m_sum)); }

    /// The smallest recorded-bucket bound that at least `p` percent of the samples do not
    /// exceed (p in [0, 100]); zero when empty. Never above max().
    duration percentile(double p) const noexcept {
        if (m_count == 0) return duration::zero();
        p = std::clamp(p, 0.0, 100.0);
        auto rank = static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(m_count) + 0.5);
        rank = std::clamp<std::uint64_t>(rank, 1, m_count);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            seen += m_buckets[i];
            if (seen >= rank) {
                if (i == bucket_count - 1) return max(); // the open-ended last bucket
                return duration(static_cast<std::int64_t>(std::min(upper_bound_of(i), m_max)));
            }
        }
        return max();
    }

    /// Adds another histogram's samples (several loops' figures into one).
    void merge(const latency_histogram& other) noexcept {
        for (std::size_t i = 0; i < bucket_count; ++i) m_buckets[i] += other.m_buckets[i];
        m_count += other.m_count;
        m_sum += other.m_sum;
        m_max = std::max(m_max, other.m_max);
        m_min = std::min(m_min, other.m_min);
    }

    void reset() noexcept { *this = latency_histogram{}; }

private:
    static constexpr unsigned sub_bits = 4;
    static constexpr unsigned max_bits = 42;
    static constexpr std::size_t bucket_count = (max_bits - sub_bits + 1) << sub_bits;

    static constexpr std::size_t bucket_of(std::uint64_t v) noexcept {
        if (v < (2u << sub_bits)) return static_cast<std::size_t>(v);
        const unsigned msb = 63u - static_cast<unsigned>(std::countl_zero(v));
        if (msb >= max_bits) return bucket_count - 1;
        const unsigned exponent = msb - sub_bits + 1;
        const auto mantissa = static_cast<std::size_t>(v >> (msb - sub_bits)) - (std::size_t{1} << sub_bits);
        return (static_cast<std::size_t>(exponent) << sub_bits) + mantissa;
    }
    static constexpr std::uint64_t upper_bound_of(std::size_t i) noexcept {
        const std::size_t exponent = i >> sub_bits;
        const std::uint64_t mantissa = i & ((std::size_t{1} << sub_bits) - 1);
        if (exponent == 0) return mantissa;
        const std::uint64_t width = std::uint64_t{1} << (exponent - 1);
        return (((std::uint64_t{1} << sub_bits) + mantissa) << (exponent - 1)) + width - 1;
    }

    std::array<std::uint64_t, bucket_count> m_buckets{};
    std::uint64_t m_count = 0;
    std::uint64_t m_sum = 0;
    std::uint64_t m_max = 0;
    std::uint64_t m_min = UINT64_MAX;
};

/// What a loop has measured about itself since it was created (or since reset_stats()).
///
/// Each turn of the loop runs a batch of ready work (the tasks and callbacks that were ready
/// when the batch began, plus the callbacks those tasks post) between its timers and its wait
/// for I/O. A step is one resumed task or one callback. The loop reads the clock when a batch
/// starts and when it ends, never in between (the blocking watchdog reads it per step).
///
/// delay: one sample per step: from when the step became runnable to the start of the batch
///   that ran it. Runnable means: its timer's deadline passed, the reactor reported its fd,
///   or the batch in which it was woken or posted ended. A long step therefore shows up in the
///   delay of every timer, I/O completion and task queued behind it in later batches; work
///   queued by a batch and run in that same batch (a callback a task posted) records zero.
///   Work queued before run() started counts from run()'s start.
/// steps: one sample per batch: how long it ran, i.e. how long the loop looked at neither
///   timers nor I/O. steps.max() bounds the longest single step from above, and equals it
///   when that step ran alone in its batch; steps.count() is the number of batches.
/// busy / idle: time running work versus waiting in the reactor; utilization() is Node's
///   eventLoopUtilization().
/// turns: loop turns (at most one batch each).
struct loop_stats {
    latency_histogram delay;
    latency_histogram steps;
    std::chrono::nanoseconds busy{};
    std::chrono::nanoseconds idle{};
    std::uint64_t turns = 0;

    /// busy / (busy + idle), 0 when nothing was measured.
    double utilization() const noexcept { return ratio(busy, busy + idle); }
    /// Utilization over the interval since `earlier` (a copy taken before).
    double utilization_since(const loop_stats& earlier) const noexcept {
        const auto b = busy - earlier.busy;
        return ratio(b, b + (idle - earlier.idle));
    }

private:
    static double ratio(std::chrono::nanoseconds part, std::chrono::nanoseconds whole) noexcept {
        return whole.count() > 0 ? static_cast<double>(part.count()) / static_cast<double>(whole.count()) : 0.0;
    }
};

/// What the blocking watchdog saw. A blocking step is reported twice: once while it is still
/// running (finished == false, blocked_for: so far), and once when it has ended
/// (finished == true, blocked_for: its total duration).
struct blocking_report {
    std::chrono::nanoseconds blocked_for{};
    /// The step has ended; blocked_for is how long it ran in all.
    bool finished = false;
    /// The name given to spawn(), "main" for event_loop::run's task, empty if none.
    std::string task_name;
    /// Where that task was spawned (file empty when unknown).
    source_location where;
    /// True when the step is a plain callback (event_loop::post) rather than a task.
    bool in_callback = false;

    /// One line: "tandem: event loop blocked for 212 ms by task 'compute' (examples/x.cpp:41)",
    /// and when the step ended: "tandem: event loop was blocked for 540 ms in total by ...".
    std::string describe() const {
        std::string line = std::string(finished ? "tandem: event loop was blocked for " : "tandem: event loop blocked for ") +
                           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(blocked_for).count()) +
                           (finished ? " ms in total by " : " ms by ");
        const bool located = where.file_name() != nullptr && where.file_name()[0] != '\0';
        if (in_callback) {
            line += "a posted callback";
        } else if (!task_name.empty()) {
            line += "task '" + task_name + "'";
        } else if (located) {
            line += "a task";
        } else {
            line += "an unnamed coroutine";
        }
        if (located && !in_callback) {
            line += " (";
            line += where.file_name();
            line += ':' + std::to_string(where.line()) + ')';
        }
        return line;
    }
};

using blocking_handler = std::function<void(const blocking_report&)>;

namespace detail {

/// Tiny spin lock: held for a string copy at most, so sleeping would cost more than spinning.
class spin_lock {
public:
    void lock() noexcept {
        while (m_flag.exchange(true, std::memory_order_acquire)) {
            while (m_flag.load(std::memory_order_relaxed)) std::this_thread::yield();
        }
    }
    void unlock() noexcept { m_flag.store(false, std::memory_order_release); }

private:
    std::atomic<bool> m_flag{false};
};

/// What the loop publishes for the watchdog: which step is running, since when, for which
/// task. Written by the loop thread only; read by the watchdog thread.
///
/// The task's identity (a root context) can die while the watchdog reads its name: a root
/// takes `identity_lock` before it is deleted and the watchdog holds it while it copies.
struct step_probe {
    std::atomic<std::uint64_t> seq{0};
    std::atomic<std::int64_t> started_ns{0}; // 0: between steps (waiting, or in the reactor)
    std::atomic<const task_context*> identity{nullptr};
    std::atomic<bool> in_callback{false};
    spin_lock identity_lock;
    // The step the watchdog has reported (its seq), and when it ended (0: not yet): the loop
    // notes the end of that one step only, so the watchdog can report its total.
    std::atomic<std::uint64_t> flagged{0};
    std::atomic<std::int64_t> flagged_end_ns{0};

    void begin(std::int64_t now_ns, const task_context* who, bool callback) noexcept {
        const std::uint64_t ended = seq.load(std::memory_order_relaxed);
        identity.store(who, std::memory_order_relaxed);
        in_callback.store(callback, std::memory_order_relaxed);
        started_ns.store(now_ns, std::memory_order_relaxed);
        // seq_cst store, then load of `flagged`, against the watchdog's store of `flagged`,
        // then load of seq: one of the two sees the other, so a reported step's end is noted.
        seq.store(ended + 1, std::memory_order_seq_cst);
        note_end(ended, now_ns);
    }
    void switch_to(const task_context* who) noexcept { identity.store(who, std::memory_order_release); }
    void end(std::int64_t now_ns) noexcept {
        started_ns.store(0, std::memory_order_seq_cst);
        note_end(seq.load(std::memory_order_relaxed), now_ns);
    }
    void note_end(std::uint64_t ended, std::int64_t now_ns) noexcept {
        if (ended != 0 && flagged.load(std::memory_order_seq_cst) == ended &&
            flagged_end_ns.load(std::memory_order_relaxed) == 0)
            flagged_end_ns.store(now_ns, std::memory_order_release);
    }

    /// A root context is about to be deleted: make sure the watchdog is not reading it and
    /// never will.
    void retire(const task_context* who) noexcept {
        std::lock_guard lock(identity_lock);
        const task_context* expected = who;
        identity.compare_exchange_strong(expected, nullptr, std::memory_order_relaxed);
    }
};

/// What the loop holds of its watchdog: only the destructor, so that the watchdog itself (its
/// thread, condition variable and handler) is compiled only where watch_blocking is called.
class watchdog_base {
public:
    virtual ~watchdog_base() = default;
};

/// The watchdog thread: samples the probe a few times per threshold and reports a step that
/// has run past the threshold, once per step, while it is still running. A class template
/// only so that a translation unit that never calls watch_blocking compiles none of it.
/// Its handler is named through the parameter too (dependent.hpp).
template <class Deferred = void>
class basic_blocking_watchdog final : public watchdog_base {
public:
    using clock = std::chrono::steady_clock;

    basic_blocking_watchdog(step_probe& probe, std::chrono::nanoseconds threshold, blocking_handler handler)
        : m_probe(&probe), m_threshold(threshold), m_handler(std::move(handler)) {
        if (!m_handler) m_handler = &print_to_stderr;
        m_thread = std::thread([this] { watch(); });
    }
    basic_blocking_watchdog(const basic_blocking_watchdog&) = delete;
    basic_blocking_watchdog& operator=(const basic_blocking_watchdog&) = delete;
    ~basic_blocking_watchdog() override {
        {
            std::lock_guard lock(m_mutex);
            m_stopping = true;
        }
        m_wake.notify_one();
        m_thread.join();
    }

    static void print_to_stderr(const blocking_report& report) {
        const std::string line = report.describe() + '\n';
        std::fwrite(line.data(), 1, line.size(), stderr); // one write: lines from threads stay whole
        std::fflush(stderr);
    }

private:
    void watch() {
        // Four looks per threshold: a report comes at most a quarter of a threshold late.
        const auto interval = std::clamp<std::chrono::nanoseconds>(m_threshold / 4, std::chrono::microseconds(500),
                                                                    std::chrono::milliseconds(250));
        std::uint64_t reported = 0;
        std::int64_t reported_started = 0;
        blocking_report running; // the last report, kept to report its step's total
        bool awaiting_end = false;
        std::unique_lock lock(m_mutex);
        auto report_total = [&] { // the reported step has ended: say how long it lasted
            if (!awaiting_end) return;
            const std::int64_t ended = m_probe->flagged_end_ns.load(std::memory_order_acquire);
            if (ended == 0) return;
            awaiting_end = false;
            blocking_report total = running;
            total.finished = true;
            total.blocked_for = std::chrono::nanoseconds(ended - reported_started);
            deliver(lock, total);
        };
        while (!m_wake.wait_for(lock, interval, [this] { return m_stopping; })) {
            report_total();
            const std::uint64_t seq = m_probe->seq.load(std::memory_order_acquire);
            const std::int64_t started = m_probe->started_ns.load(std::memory_order_acquire);
            if (started == 0 || seq == reported) continue;
            const auto blocked = clock::now().time_since_epoch() - std::chrono::nanoseconds(started);
            if (blocked < m_threshold) continue;

            blocking_report report;
            report.blocked_for = std::chrono::duration_cast<std::chrono::nanoseconds>(blocked);
            m_probe->flagged_end_ns.store(0, std::memory_order_relaxed);
            m_probe->flagged.store(seq, std::memory_order_seq_cst); // before the re-check: see step_probe::begin
            {
                std::lock_guard identity(m_probe->identity_lock);
                if (m_probe->seq.load(std::memory_order_seq_cst) != seq ||
                    m_probe->started_ns.load(std::memory_order_seq_cst) == 0)
                    continue; // it just ended
                report.in_callback = m_probe->in_callback.load(std::memory_order_relaxed);
                if (const task_context* who = m_probe->identity.load(std::memory_order_acquire)) {
                    report.task_name = std::string(who->name());
                    report.where = who->where();
                }
            }
            reported = seq;
            reported_started = started;
            running = report;
            awaiting_end = true;
            deliver(lock, report);
        }
        report_total(); // stopping: a step that has ended still gets its total
    }

    void deliver(std::unique_lock<std::mutex>& lock, const blocking_report& report) {
        lock.unlock(); // a slow handler must not hold up the destructor's stop request
        try {
            m_handler(report);
        } catch (...) {
            // A reporting failure must not take the process down.
        }
        lock.lock();
    }

    step_probe* m_probe;
    std::chrono::nanoseconds m_threshold;
    dependent_t<blocking_handler, Deferred> m_handler;
    std::mutex m_mutex;
    std::condition_variable m_wake;
    bool m_stopping = false;
    std::thread m_thread;
};

using blocking_watchdog = basic_blocking_watchdog<>;

} // namespace detail

} // namespace tandem
