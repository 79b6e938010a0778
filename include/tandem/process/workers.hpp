// tandem — a process pool's workers: the slots (one per worker process), the queue of jobs
// no worker has yet, and the dispatcher thread that reads every worker's replies and the
// zygote's reports, fails and replaces dead workers, and enforces timeouts.
//
// Layer: process. Stands on the pool-job lifecycle (detail/pool_job.hpp), the channel, the
// zygote and the start board; waits with the loop's reactor and wake-up primitives
// (detail/reactor.hpp, detail/wakeup.hpp), not a backend of its own. process_pool.hpp is its
// face; pool_run_awaiter talks to it directly (enqueue_awaited, withdraw, stop_running).
//
// Threads: any thread submits (under m_mutex); the dispatcher alone watches descriptors,
// spawns workers and reads from them. A job is completed (its outcome decoded and posted)
// with the mutex released.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/intrusive_list.hpp"
#include "tandem/detail/pool_job.hpp"
#include "tandem/detail/reactor.hpp"
#include "tandem/detail/spin.hpp"
#include "tandem/detail/std_algorithm.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/wakeup.hpp"
#include "tandem/error.hpp"
#include "tandem/process/channel.hpp"
#include "tandem/process/descriptors.hpp"
#include "tandem/process/exit_status.hpp"
#include "tandem/process/job.hpp"
#include "tandem/process/options.hpp"
#include "tandem/process/pidfd.hpp"
#include "tandem/process/start_board.hpp"
#include "tandem/process/zygote.hpp"

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <pthread.h>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <system_error>
#include <thread>
#include <vector>

namespace tandem::detail {

/// The workers of one process_pool, their queue and the dispatcher thread. A class template
/// with one instantiation only so that including this header compiles none of its bodies
/// (bench/README.md, "Include cost"); what names std containers depends on Deferred so that
/// clang does not compile it either (detail/dependent.hpp).
template <class Deferred>
class basic_worker_set {
    template <class T>
    using deferred = dependent_t<T, Deferred>;

public:
    using clock = std::chrono::steady_clock;
    /// For pool_run_awaiter's "not on a loop" error.
    static constexpr const char* run_name = "process_pool::run";

    explicit basic_worker_set(const process_pool_options& options)
        : m_options(checked(options)), m_queue(options.max_queued), m_zygote(basic_zygote<Deferred>::instance(options.allow_threads)) {
        const std::size_t n = m_options.workers ? m_options.workers : hardware_threads();
        check_descriptor_room(n);
        m_slots.resize(n);
        int reports[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, reports) != 0) throw_errno("tandem: socketpair");
        m_reports.reset(reports[0]);
        m_reports_for_zygote.reset(reports[1]);
        m_board = process::start_board::create(n);
        m_reactor.watch_read_only(m_reports.get());
        m_reactor.watch_read_only(m_wake.read_fd());
        m_zygote_watch = process::pidfd::try_open(m_zygote->pid());
        if (m_zygote_watch) m_reactor.watch_read_only(m_zygote_watch.fd());
        try {
            std::lock_guard lock(m_mutex);
            for (std::size_t i = 0; i < n; ++i) spawn_locked(i);
        } catch (const std::system_error& e) {
            if (e.code() != std::errc::too_many_files_open) throw;
            throw descriptor_limit_error(n); // others opened descriptors meanwhile
        }
        m_dispatcher = std::thread([this] { dispatch(); });
    }
    basic_worker_set(const basic_worker_set&) = delete;
    basic_worker_set& operator=(const basic_worker_set&) = delete;
    ~basic_worker_set() { stop(true); }

    // ---- submission (any thread) ------------------------------------------------------------

    /// Loop thread: queues an awaited job (or parks it while the queue is full).
    void enqueue_awaited(process_job& job) {
        check_not_forked();
        std::unique_lock lock(m_mutex);
        check_open_locked();
        job.add_ref(); // the pool's
        if (m_broken) {
            fail_later_locked(job);
            return;
        }
        if (m_queue.park_if_full_locked(job)) return;
        push_locked(job);
    }

    /// Any thread: queues a job, waiting for room if the queue is bounded and full. Takes
    /// over the caller's reference.
    void enqueue_blocking(process_job& job) {
        if (forked_copy()) {
            job.release();
            check_not_forked();
        }
        std::unique_lock lock(m_mutex);
        m_queue.wait_for_room(lock, [&] { return m_closing || m_broken; });
        if (m_closing) {
            lock.unlock();
            job.m_state.store(process_job::state::running);
            job.complete(nullptr, make_failure<cancelled>());
            throw std::logic_error("tandem: process_pool is shutting down");
        }
        if (m_broken) {
            fail_later_locked(job);
            return;
        }
        push_locked(job);
    }

    /// Loop thread: takes back a job no worker has. True if removed (pool's reference dropped).
    bool withdraw(process_job& job) noexcept {
        {
            std::lock_guard lock(m_mutex);
            if (!m_queue.withdraw_locked(job)) return false;
        }
        job.release();
        return true;
    }

    /// Loop thread: the awaiter of a running job left; kill its worker (the job's result
    /// would be dropped anyway, and the CPU is better spent on the next job).
    void stop_running(process_job& job) noexcept {
        bool drop = false;
        {
            std::lock_guard lock(m_mutex);
            if (job.m_slot < m_slots.size() && m_slots[job.m_slot].job == &job) {
                worker_slot& s = m_slots[job.m_slot];
                s.job = nullptr;
                s.leaving = true;
                s.deadline = clock::time_point::max();
                kill_locked(s);
                drop = true;
            } else if (job.m_requeued) {
                // Back in the queue after its worker died idle (redispatch_locked).
                job.m_requeued = false;
                m_queue.unlink_locked(job);
                drop = true;
            }
        }
        if (drop) job.release(); // the pool's
    }

    /// How long the awaiting loop polls for a completion (pool_run_awaiter).
    std::chrono::microseconds spin() const noexcept { return m_options.spin; }

    /// Stops accepting jobs, cancels queued ones, lets running ones finish (or kills them),
    /// and waits for every worker to exit. Idempotent.
    void stop(bool finish_running) noexcept {
        // One stop at a time: a second caller (another thread's shutdown, then the
        // destructor) waits for the first to join the dispatcher, then finds nothing to do.
        if (forked_copy()) return forget_forked_copy();
        std::lock_guard stopping(m_stop_mutex);
        intrusive_list<process_job> abandoned;
        deferred<std::vector<process_job*>> killed;
        {
            std::unique_lock lock(m_mutex);
            if (!m_dispatcher.joinable()) return;
            m_closing = true;
            m_queue.drain_locked(abandoned);
            for (worker_slot& s : m_slots) {
                if (!s.alive) continue;
                if (s.job && !finish_running) {
                    killed.push_back(std::exchange(s.job, nullptr));
                    s.leaving = true;
                    kill_locked(s);
                } else if (!s.job && s.ready) {
                    quit_locked(s);
                } else if (!s.ready && s.spawned) {
                    s.leaving = true;
                    kill_locked(s); // still starting: nothing to finish
                }
            }
            m_queue.wait_blocked_gone(lock);
        }
        m_wake.signal();
        while (!abandoned.empty()) abandoned.pop_front().complete(nullptr, make_failure<cancelled>());
        for (process_job* job : killed) job->complete(nullptr, make_failure<cancelled>());
        m_dispatcher.join();
    }

    // ---- counters ---------------------------------------------------------------------------

    std::size_t size() const noexcept { return m_slots.size(); }
    std::size_t queued() const {
        std::lock_guard lock(m_mutex);
        return m_queue.queued_locked();
    }
    std::size_t running() const {
        std::lock_guard lock(m_mutex);
        std::size_t n = 0;
        for (const worker_slot& s : m_slots) n += s.job != nullptr;
        return n;
    }
    std::vector<pid_t> worker_pids() const {
        std::lock_guard lock(m_mutex);
        deferred<std::vector<pid_t>> pids;
        for (const worker_slot& s : m_slots)
            if (s.alive && s.pid > 0) pids.push_back(s.pid);
        return pids;
    }
    void wait_ready() const {
        std::unique_lock lock(m_mutex);
        m_ready.wait(lock, [&] {
            if (m_broken || m_closing) return true;
            for (const worker_slot& s : m_slots)
                if (!(s.alive && s.spawned && s.ready)) return false;
            return true;
        });
    }
    std::size_t workers_started() const {
        std::lock_guard lock(m_mutex);
        return m_started;
    }
    pid_t zygote_pid() const noexcept { return m_zygote->pid(); }
    const process_pool_options& options() const noexcept { return m_options; }

private:
    /// Settings that cannot mean anything are refused before any process is forked.
    static const process_pool_options& checked(const process_pool_options& o) {
        if (o.job_timeout.count() < 0) throw std::invalid_argument("tandem: process_pool job_timeout cannot be negative (0: none)");
        return o;
    }

    /// Each worker holds one channel descriptor here, and the pool a few more: fail at once,
    /// naming the limit, rather than halfway through starting the workers.
    static void check_descriptor_room(std::size_t workers) {
        rlimit limit{};
        if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
        constexpr std::size_t own = 8; // reports, board, wake-up, reactor, pidfd, a spawn's spare ends
        if (process::open_descriptor_count() + workers + own > limit.rlim_cur) throw descriptor_limit_error(workers);
    }
    static std::system_error descriptor_limit_error(std::size_t workers) {
        rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit);
        return std::system_error(EMFILE, std::system_category(),
                                 "tandem: a process_pool of " + std::to_string(workers) +
                                     " workers needs a descriptor per worker, and this process may open " +
                                     std::to_string(limit.rlim_cur) + " (RLIMIT_NOFILE), " +
                                     std::to_string(process::open_descriptor_count()) +
                                     " of them open already: use fewer workers or raise the limit");
    }

    /// A forked copy of the program (fork() after the pool was built) shares the parent's
    /// workers, channels and zygote but runs no dispatcher. It must neither use the pool (its
    /// job would reach a parent's worker, and the reply the parent) nor stop it (a quit or a
    /// kill sent from here would stop the parent's workers).
    bool forked_copy() const noexcept { return m_owner.forked_copy(); }
    void check_not_forked() const { m_owner.check("process_pool"); }
    /// The forked copy's teardown: nothing is sent, nothing is joined. The dispatcher thread,
    /// and any thread that held a lock or waited on a condition variable at fork time, exist
    /// only in the parent, so they are forgotten (not destroyed); descriptors close as copies,
    /// and the jobs (the parent's) are left alone.
    void forget_forked_copy() noexcept {
        new (&m_dispatcher) std::thread();
        new (&m_mutex) std::mutex();
        new (&m_stop_mutex) std::mutex();
        new (&m_ready) std::condition_variable();
        m_queue.forget_waiters_after_fork();
    }

    struct worker_slot {
        unique_fd channel;
        pid_t pid = 0;
        std::uint32_t generation = 0;
        bool alive = false;    // spawn requested, exit not yet reported
        bool spawned = false;  // pid known
        bool ready = false;    // initializer done
        bool leaving = false;  // told to quit or killed: its exit is expected
        bool settling = false; // its last reply is being decoded: not idle yet
        bool reaped = false;   // its death was reported: its pid may name another process now
        process_job* job = nullptr;
        clock::time_point deadline = clock::time_point::max();
        std::size_t jobs_done = 0;
        clock::time_point respawn_at = clock::time_point::max();
    };

    void check_open_locked() const {
        if (m_closing) throw std::logic_error("tandem: process_pool is shutting down");
    }

    /// The pool cannot run jobs (broken): the job fails from the dispatcher.
    void fail_later_locked(process_job& job) {
        job.leave_queue();
        m_failing.push_back(job);
        m_wake.signal();
    }

    /// Hands the job to an idle worker, or queues it.
    void push_locked(process_job& job) {
        for (std::size_t i = 0; i < m_slots.size(); ++i)
            if (idle(m_slots[i]) && assign_locked(i, job)) return;
        m_queue.push_back_locked(job);
    }

    static bool idle(const worker_slot& s) noexcept {
        return s.alive && s.spawned && s.ready && !s.leaving && !s.settling && s.job == nullptr;
    }

    /// Asks the zygote to kill worker s, unless it has no pid yet or its death was already
    /// reported: the zygote kills only pids it still tracks, but one could be a new worker's.
    void kill_locked(const worker_slot& s) noexcept {
        if (s.spawned && !s.reaped) m_zygote->kill(s.pid);
    }

    /// Sends the job to worker i. False if the worker is gone (the job did not start).
    bool assign_locked(std::size_t i, process_job& job) {
        worker_slot& s = m_slots[i];
        const auto h = frame_header::job(++m_next_id, reinterpret_cast<std::uintptr_t>(job.m_entry), job.m_fn);
        if (job.m_args.send(s.channel.get(), h) != 0) {
            s.leaving = true; // dead or dying: its exit report replaces it
            kill_locked(s);
            return false;
        }
        // A queued job becomes running. A re-dispatched one is running already, or detached
        // if its awaiter just left (stop_running then finds it on this worker).
        job.leave_queue();
        job.m_slot = i;
        job.m_sent_id = h.job_id();
        s.job = &job;
        if (job.m_timeout.count() > 0) {
            s.deadline = deadline_after(job.m_timeout);
            if (s.deadline < m_next_wake) m_wake.signal();
        }
        return true;
    }

    /// now + timeout, saturated: milliseconds::max() means "never", not an overflow into the past.
    static clock::time_point deadline_after(std::chrono::milliseconds timeout) noexcept {
        const auto now = clock::now();
        const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(clock::time_point::max() - now);
        return timeout >= room ? clock::time_point::max() : now + timeout;
    }

    /// Worker i is free: give it the next queued job, if any.
    void feed_locked(std::size_t i) {
        while (!m_queue.empty_locked() && idle(m_slots[i])) {
            process_job& job = m_queue.pop_front_locked();
            const bool requeued = std::exchange(job.m_requeued, false);
            if (!assign_locked(i, job)) {
                job.m_requeued = requeued;
                m_queue.push_front_locked(job);
                return;
            }
        }
    }

    /// A job whose worker died before taking it goes back to the front of the queue (or to
    /// an idle worker). Its state stays `running`: withdraw() cannot take it back, and an
    /// awaiter that leaves finds it through stop_running().
    void redispatch_locked(process_job& job) {
        if (m_closing || m_broken) {
            m_failing.push_back(job);
            m_wake.signal();
            return;
        }
        for (std::size_t i = 0; i < m_slots.size(); ++i)
            if (idle(m_slots[i]) && assign_locked(i, job)) return;
        job.m_requeued = true;
        m_queue.push_front_locked(job);
    }

    /// Asks a worker to exit after its current job (recycling, shutdown).
    void quit_locked(worker_slot& s) noexcept {
        if (s.leaving) return;
        s.leaving = true;
        if (s.job == nullptr) outgoing_payload{}.send(s.channel.get(), frame_header::quit());
    }

    // ---- worker processes (dispatcher thread, and the constructor before it starts) --------

    void spawn_locked(std::size_t i) {
        worker_slot& s = m_slots[i];
        close_channel_locked(s);
        const std::uint32_t generation = s.generation + 1;
        s = worker_slot{};
        s.generation = generation;
        auto [parent_end, worker_end] = make_channel();
        const std::uint64_t token = token_of(i);
        if (const int err = m_zygote->spawn(worker_end.get(), m_reports_for_zygote.get(), m_board.fd(), token,
                                            m_options.initializer, m_options.spin)) {
            m_broken = make_failure<std::system_error>(err, std::system_category(),
                                                       "tandem: the process-pool zygote is gone; cannot start workers");
            return;
        }
        const int fd = parent_end.get();
        if (static_cast<std::size_t>(fd) >= m_token_by_fd.size()) m_token_by_fd.resize(fd + 1, 0);
        m_token_by_fd[fd] = token;
        m_reactor.watch_read_only(fd); // the pool never waits to write to a worker
        s.channel = std::move(parent_end);
        s.alive = true;
        ++m_started;
    }

    /// Stops watching a worker's channel (before its descriptor can be reused) and closes it.
    void close_channel_locked(worker_slot& s) noexcept {
        if (!s.channel) return;
        unwatch_locked(s);
        s.channel.reset();
    }
    /// Stops watching a worker's channel; it stays open (the worker's exit report follows).
    void unwatch_locked(worker_slot& s) noexcept {
        const int fd = s.channel.get();
        if (fd < 0) return;
        m_reactor.forget(fd);
        if (static_cast<std::size_t>(fd) < m_token_by_fd.size()) m_token_by_fd[fd] = 0;
    }

    std::size_t live_locked() const noexcept {
        std::size_t n = 0;
        for (const worker_slot& s : m_slots) n += s.alive;
        return n;
    }

    /// Worker i's name in its channel's watch and in the zygote's reports: its slot and
    /// generation, so that nothing meant for a dead worker reaches its replacement.
    std::uint64_t token_of(std::size_t i) const noexcept { return (std::uint64_t{m_slots[i].generation} << 32) | i; }

    worker_slot* slot_for(std::uint64_t token) noexcept {
        const std::size_t i = token & 0xffffffffu;
        if (i >= m_slots.size() || m_slots[i].generation != static_cast<std::uint32_t>(token >> 32)) return nullptr;
        return &m_slots[i];
    }

    /// Worker i is dead (reaped, or gone with the zygote): read what it sent before dying,
    /// then fail its job if the worker had taken it (the start board says), or give it to
    /// another worker if not, and replace the worker.
    void worker_exited(std::unique_lock<std::mutex>& lock, std::size_t i, int status, std::byte* buffer) {
        worker_slot& s = m_slots[i];
        // The news of its death (the zygote's report, the zygote's pidfd) can be read before
        // the worker's last reply, which its channel still holds: read that first, or a job
        // the worker finished would fail as crashed. Leaving: it gets no job meanwhile.
        s.leaving = true;
        s.reaped = true; // no kill from here on: the pid is free for reuse
        const std::uint64_t token = token_of(i);
        lock.unlock();
        read_worker(token, buffer);
        lock.lock();
        if (!slot_for(token) || !s.alive) return;
        process_job* job = std::exchange(s.job, nullptr);
        const pid_t pid = s.pid;
        s.alive = false;
        close_channel_locked(s);
        if (job && m_board.started(i) != job->m_sent_id) {
            redispatch_locked(*job); // it died idle: the job never started, so it is not lost
            job = nullptr;
        }
        if (!m_closing && !m_broken) {
            spawn_locked(i);
        } else {
            m_queue.wake_blocked();
        }
        lock.unlock();
        if (job) {
            const auto how = process::exit_status::from_wait_status(status);
            job->complete(nullptr, make_failure<worker_crashed>(pid, how.signal(), how.code(), describe_exit(pid, how)));
        }
        lock.lock();
    }

    // ---- the dispatcher thread ---------------------------------------------------------------

    void dispatch() {
        ::pthread_setname_np(::pthread_self(), "tandem-procpool");
        deferred<std::vector<std::byte>> buffer(max_message);
        for (;;) {
            deferred<std::optional<std::chrono::nanoseconds>> timeout; // none: until something happens
            {
                std::lock_guard lock(m_mutex);
                if (m_closing && live_locked() == 0 && m_failing.empty()) break;
                m_next_wake = clock::time_point::max();
                std::size_t busy = 0;
                for (const worker_slot& s : m_slots) {
                    busy += s.job != nullptr;
                    if (s.job) m_next_wake = std::min(m_next_wake, s.deadline);
                    if (!s.alive) m_next_wake = std::min(m_next_wake, s.respawn_at);
                }
                m_in_flight.store(busy, std::memory_order_relaxed);
                if (m_next_wake != clock::time_point::max())
                    timeout = std::clamp<std::chrono::nanoseconds>(m_next_wake - clock::now(), std::chrono::nanoseconds(0),
                                                                   std::chrono::seconds(60));
            }
            // A reply is due: poll for it a little before sleeping.
            if (m_in_flight.load(std::memory_order_relaxed) != 0 &&
                spin_until_ready(m_options.spin, [&] { return m_reactor.has_events_now(); }))
                timeout = std::chrono::nanoseconds(0);
            m_reactor.wait(timeout, [&](int fd, bool readable, bool /*writable*/) {
                if (!readable) return; // a channel with room to write: nothing to do
                if (fd == m_wake.read_fd()) {
                    m_wake.drain();
                } else if (fd == m_reports.get()) {
                    read_reports(buffer.data());
                } else if (m_zygote_watch && fd == m_zygote_watch.fd()) {
                    zygote_died(buffer.data());
                } else if (static_cast<std::size_t>(fd) < m_token_by_fd.size() && m_token_by_fd[fd] != 0) {
                    read_worker(m_token_by_fd[fd], buffer.data());
                }
            });
            fail_pending();
            expire_and_respawn();
        }
    }

    /// The zygote's reports: a worker started, failed to start, or was reaped.
    void read_reports(std::byte* buffer) {
        for (;;) {
            incoming_frame f;
            int got;
            try {
                got = f.receive(m_reports.get(), buffer, MSG_DONTWAIT);
            } catch (const std::exception&) {
                continue; // only the zygote writes here
            }
            if (got <= 0) return;
            std::unique_lock lock(m_mutex);
            switch (f.header.kind()) {
            case frame_kind::spawned:
                if (worker_slot* s = slot_for(f.header.token())) {
                    s->pid = f.header.pid();
                    s->spawned = true;
                    m_ready.notify_all();
                    if (s->leaving || m_closing) kill_locked(*s);
                    feed_locked(static_cast<std::size_t>(s - m_slots.data()));
                }
                break;
            case frame_kind::spawn_failed:
                if (worker_slot* s = slot_for(f.header.token())) {
                    s->alive = false;
                    close_channel_locked(*s);
                    s->respawn_at = clock::now() + std::chrono::milliseconds(100); // EAGAIN from fork: try again
                }
                break;
            case frame_kind::exited:
                for (std::size_t i = 0; i < m_slots.size(); ++i) {
                    if (!m_slots[i].alive || m_slots[i].pid != f.header.pid()) continue;
                    worker_exited(lock, i, f.header.wait_status(), buffer);
                    break;
                }
                break;
            default:
                break;
            }
        }
    }

    /// Everything a worker sent, until its channel is empty; each kind of frame has its own
    /// handler below.
    void read_worker(std::uint64_t token, std::byte* buffer) {
        for (;;) {
            int fd;
            {
                std::lock_guard lock(m_mutex);
                worker_slot* s = slot_for(token);
                if (!s || !s->channel) return;
                fd = s->channel.get();
            }
            incoming_frame f;
            int got;
            std::exception_ptr malformed;
            try {
                got = f.receive(fd, buffer, MSG_DONTWAIT);
            } catch (...) {
                malformed = std::current_exception();
                got = 1;
            }
            if (got == -EAGAIN) return;
            std::unique_lock lock(m_mutex);
            worker_slot* s = slot_for(token);
            if (!s) return;
            if (got <= 0) return on_end_of_stream(*s);
            if (malformed) return on_malformed(lock, *s, std::move(malformed));
            switch (f.header.kind()) {
            case frame_kind::ready:
                on_ready(*s);
                continue;
            case frame_kind::init_failed:
                return on_init_failed(*s, f);
            case frame_kind::result:
            case frame_kind::error:
                if (!on_reply(lock, token, f)) return;
                continue;
            default: // not ours, or broken: the worker cannot be trusted with another job
                return on_malformed(lock, *s, make_failure<protocol_error>("tandem: unexpected message from a worker"));
            }
        }
    }

    /// End of stream: the worker died (its exit report follows) or closed its end.
    void on_end_of_stream(worker_slot& s) {
        unwatch_locked(s);
        if (!s.leaving) kill_locked(s);
        s.leaving = true;
    }

    /// The initializer ran: the worker takes jobs.
    void on_ready(worker_slot& s) {
        s.ready = true;
        m_ready.notify_all();
        if (m_closing) quit_locked(s);
        feed_locked(static_cast<std::size_t>(&s - m_slots.data()));
    }

    /// The initializer threw: no worker of this pool can run a job, so every job fails.
    void on_init_failed(worker_slot& s, const incoming_frame& f) {
        std::string why = "unknown";
        try {
            auto [type, what] = tandem::decode<deferred<std::pair<std::string, std::string>>>(f.data(), f.size());
            why = type + ": " + what;
        } catch (...) {
        }
        m_ready.notify_all();
        if (!m_broken)
            m_broken = make_failure<remote_error>("tandem::initializer_failed", "the process_pool initializer threw " + why);
        s.leaving = true;
        m_queue.drain_locked(m_failing);
    }

    /// A frame that does not parse, or is not one a worker sends: fail the worker's job
    /// with the error and kill the worker.
    void on_malformed(std::unique_lock<std::mutex>& lock, worker_slot& s, std::exception_ptr error) {
        process_job* job = std::exchange(s.job, nullptr);
        s.leaving = true;
        s.deadline = clock::time_point::max();
        kill_locked(s);
        unwatch_locked(s);
        lock.unlock();
        if (job) job->complete(nullptr, std::move(error));
    }

    /// A result or an exception: complete the worker's job, then give the worker the next
    /// one (or retire it). False if the worker can no longer be trusted.
    bool on_reply(std::unique_lock<std::mutex>& lock, std::uint64_t token, const incoming_frame& f) {
        worker_slot* s = slot_for(token);
        // A reply must answer the job the worker has now. Another one (a job that wrote to
        // the channel itself, or forked and returned in both processes) would be taken as
        // the next job's answer: the worker cannot be trusted. A worker we stopped
        // listening to (cancelled, timed out) may still answer; that reply is dropped.
        if (s->job ? f.header.job_id() != s->job->m_sent_id : !s->leaving) {
            on_malformed(lock, *s, make_failure<protocol_error>("tandem: a worker answered a job it was not running"));
            return false;
        }
        process_job* job = std::exchange(s->job, nullptr);
        s->deadline = clock::time_point::max();
        ++s->jobs_done;
        // Decode before the worker gets another job: a reply that does not decode means the
        // worker cannot be trusted, and no innocent job should be on it then.
        s->settling = true;
        lock.unlock();
        const bool decoded = job ? job->complete(&f, nullptr) : true; // off the loop thread
        lock.lock();
        s = slot_for(token);
        if (!s) return false;
        s->settling = false;
        if (!decoded) {
            s->leaving = true;
            kill_locked(*s);
            unwatch_locked(*s);
            return false;
        }
        if (m_closing || (m_options.max_jobs_per_worker != 0 && s->jobs_done >= m_options.max_jobs_per_worker)) {
            quit_locked(*s);
        } else {
            feed_locked(static_cast<std::size_t>(s - m_slots.data()));
        }
        return true;
    }

    /// The zygote is gone: its workers die with it (PDEATHSIG), no worker can be started, and
    /// every job still waiting, queued or parked, fails.
    void zygote_died(std::byte* buffer) {
        std::unique_lock lock(m_mutex);
        m_reactor.forget(m_zygote_watch.fd());
        if (!m_broken)
            m_broken = make_failure<std::runtime_error>("tandem: the process-pool zygote died; the pool cannot start workers");
        for (std::size_t i = 0; i < m_slots.size(); ++i)
            if (m_slots[i].alive) worker_exited(lock, i, SIGKILL, buffer);
        m_queue.drain_locked(m_failing);
        m_ready.notify_all();
    }

    /// Jobs that can never run (the pool is broken) fail here, off the submitting thread.
    void fail_pending() {
        intrusive_list<process_job> failing;
        std::exception_ptr why;
        {
            std::lock_guard lock(m_mutex);
            if (m_failing.empty()) return;
            while (!m_failing.empty()) failing.push_back(m_failing.pop_front());
            why = m_broken ? m_broken : make_failure<cancelled>();
        }
        while (!failing.empty()) failing.pop_front().complete(nullptr, why);
    }

    void expire_and_respawn() {
        deferred<std::vector<process_job*>> expired;
        {
            std::lock_guard lock(m_mutex);
            const auto now = clock::now();
            for (std::size_t i = 0; i < m_slots.size(); ++i) {
                worker_slot& s = m_slots[i];
                if (s.job && s.deadline <= now) {
                    expired.push_back(std::exchange(s.job, nullptr));
                    s.deadline = clock::time_point::max();
                    s.leaving = true;
                    kill_locked(s);
                }
                if (!s.alive && s.respawn_at <= now && !m_closing && !m_broken) spawn_locked(i);
            }
        }
        for (process_job* job : expired) job->complete(nullptr, make_failure<timed_out>());
    }

    process_pool_options m_options;
    pool_owner m_owner; // the process whose pool this is (forked_copy)
    mutable std::mutex m_mutex;
    std::mutex m_stop_mutex;                 // held through stop(), joining included
    mutable std::condition_variable m_ready; // wait_ready()
    bounded_job_queue<process_job> m_queue;
    std::shared_ptr<basic_zygote<Deferred>> m_zygote;
    std::vector<worker_slot> m_slots;
    intrusive_list<process_job> m_failing; // to fail from the dispatcher
    std::size_t m_started = 0;
    std::uint64_t m_next_id = 0;
    bool m_closing = false;
    std::exception_ptr m_broken;
    clock::time_point m_next_wake = clock::time_point::max();
    std::atomic<std::size_t> m_in_flight{0}; // jobs on workers, as the dispatcher last saw
    unique_fd m_reports;                     // the zygote's reports arrive here
    unique_fd m_reports_for_zygote;          // passed to the zygote with each spawn
    process::pidfd m_zygote_watch;           // readable when the zygote dies
    process::start_board m_board;            // which job each worker has taken
    reactor m_reactor;                       // dispatcher thread only (and the constructor)
    wakeup m_wake;                           // any thread → the dispatcher
    deferred<std::vector<std::uint64_t>> m_token_by_fd; // channel descriptor → its worker's token
    std::thread m_dispatcher;
};
using worker_set = basic_worker_set<void>;

} // namespace tandem::detail
