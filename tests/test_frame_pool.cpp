#include "tandem/detail/frame_pool.hpp"

#include "catch.hpp"
#include "replace_new.hpp"
#include "tandem/loop.hpp"
#include "tandem/spawn.hpp"
#include "tandem/task.hpp"

#include <algorithm>
#include <coroutine>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

using tandem::detail::frame_pool;

#if TANDEM_FRAME_POOL && TANDEM_TEST_REPLACES_NEW
#define TANDEM_TEST_NEW_HOOK 1
#endif
// The system out of memory exactly when the pool needs a new region, on this thread.
namespace {
[[maybe_unused]] thread_local bool t_refuse_regions = false;
}
bool test_new_allowed([[maybe_unused]] std::size_t n) noexcept {
#if TANDEM_FRAME_POOL
    return !(t_refuse_regions && n == tandem::detail::frame_pool_parts::region_bytes);
#else
    return true; // no pool, no regions (AddressSanitizer, TANDEM_FRAME_POOL=0)
#endif
}

namespace {

constexpr bool pool_on = TANDEM_FRAME_POOL != 0;

tandem::task<> count_up(long& done) {
    ++done;
    co_return;
}

// A frame of about `Pad` bytes more than count_up's: other size classes.
// The array lives across a suspension point, so it is in the frame with either compiler.
template <std::size_t Pad>
tandem::task<int> padded(int seed) {
    unsigned char bytes[Pad];
    for (std::size_t i = 0; i < Pad; ++i) bytes[i] = static_cast<unsigned char>(seed + static_cast<int>(i));
    co_await std::suspend_never{};
    int sum = 0;
    for (std::size_t i = 0; i < Pad; ++i) sum += bytes[i];
    co_return sum;
}

int padded_sum(std::size_t pad, int seed) {
    int sum = 0;
    for (std::size_t i = 0; i < pad; ++i) sum += static_cast<unsigned char>(seed + static_cast<int>(i));
    return sum;
}

std::vector<tandem::task<>> make_tasks(std::size_t n, long& done) {
    std::vector<tandem::task<>> tasks;
    tasks.reserve(n);
    for (std::size_t i = 0; i < n; ++i) tasks.push_back(count_up(done));
    return tasks;
}

/// Hands values from one thread to another, one at a time (no sleeping to wait).
template <class T>
class handoff {
public:
    void put(T value) {
        std::lock_guard lock(m_mutex);
        m_value = std::move(value);
        m_full = true;
        m_changed.notify_all();
    }
    T take() {
        std::unique_lock lock(m_mutex);
        m_changed.wait(lock, [&] { return m_full; });
        m_full = false;
        return std::move(m_value);
    }

private:
    std::mutex m_mutex;
    std::condition_variable m_changed;
    T m_value{};
    bool m_full = false;
};

} // namespace

TEST_CASE("a burst of a million spawned tasks leaves at most the idle cap in the pool", "[frame_pool]") {
    // The thread may hold slabs from earlier tests: measure from an empty loop's view.
    long done = 0;
    std::size_t peak = 0;
    const std::size_t regions_before = frame_pool::regions();
    std::size_t regions_peak = 0;
    {
        tandem::event_loop loop;
        constexpr long n = 1'000'000;
        for (long i = 0; i < n; ++i) tandem::spawn(loop, count_up(done)).detach();
        peak = frame_pool::thread_usage().slabs;
        regions_peak = frame_pool::regions();
        loop.run([](long& d) -> tandem::task<> {
            while (d < n) co_await tandem::yield();
        }(done));
    }
    CHECK(done == 1'000'000);
    const tandem::detail::frame_pool_usage after = frame_pool::thread_usage();
    if constexpr (pool_on) {
        // A frame and a record per task: at least their bytes were in slabs at the peak.
        CHECK(peak * frame_pool::slab_size >= 1'000'000u * 2 * 64);
        CHECK(after.idle_slabs <= frame_pool::max_idle_slabs);
        CHECK(after.slabs == after.idle_slabs); // nothing is in use any more
        // and the regions the burst took went back, but for those the idle slabs are in and the
        // one empty region kept
        CHECK(regions_peak > regions_before + 50);
        CHECK(frame_pool::regions() <= regions_before + frame_pool::max_idle_slabs + 1);
    } else {
        CHECK(peak == 0);
        CHECK(after.slabs == 0);
    }
}

TEST_CASE("blocks of every size class keep their contents and never overlap", "[frame_pool]") {
    const auto seed = std::random_device{}();
    std::printf("frame_pool property seed %u\n", seed);
    std::mt19937 rng(seed);
    struct live {
        unsigned char* p;
        std::size_t n;
        unsigned char tag;
    };
    std::vector<live> blocks;
    std::uniform_int_distribution<std::size_t> size(1, frame_pool::max_block + 300); // some above the pool's range
    auto check = [](const live& b) {
        for (std::size_t i = 0; i < b.n; ++i)
            if (b.p[i] != b.tag) return false;
        return true;
    };
    for (int round = 0; round < 40'000; ++round) {
        if (blocks.empty() || rng() % 3 != 0) {
            const std::size_t n = size(rng);
            auto* p = static_cast<unsigned char*>(frame_pool::allocate(n));
            REQUIRE(reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t) == 0);
            const auto tag = static_cast<unsigned char>(rng());
            std::memset(p, tag, n);
            blocks.push_back({p, n, tag});
        } else {
            const std::size_t i = rng() % blocks.size();
            REQUIRE(check(blocks[i]));
            frame_pool::deallocate(blocks[i].p, blocks[i].n);
            blocks[i] = blocks.back();
            blocks.pop_back();
        }
    }
    for (const live& b : blocks) {
        REQUIRE(check(b));
        frame_pool::deallocate(b.p, b.n);
    }
    CHECK(frame_pool::thread_usage().slabs == frame_pool::thread_usage().idle_slabs);
    CHECK(frame_pool::thread_usage().idle_slabs <= frame_pool::max_idle_slabs);
}

TEST_CASE("frames destroyed on another thread go back to the thread that made them", "[frame_pool]") {
    handoff<std::vector<tandem::task<>>> to_main;
    handoff<int> destroyed;
    handoff<tandem::detail::frame_pool_usage> usage_after;
    long done = 0;
    std::thread maker([&] {
        to_main.put(make_tasks(50'000, done));
        (void)destroyed.take();
        // The next allocation that runs out of room takes the blocks back.
        std::vector<tandem::task<>> more = make_tasks(50'000, done);
        more.clear();
        usage_after.put(frame_pool::thread_usage());
    });
    {
        std::vector<tandem::task<>> tasks = to_main.take();
        tasks.clear(); // frees 50,000 frames made on `maker`, which is still running
    }
    destroyed.put(1);
    const tandem::detail::frame_pool_usage after = usage_after.take();
    maker.join();
    CHECK(after.slabs == after.idle_slabs);
    CHECK(after.idle_slabs <= frame_pool::max_idle_slabs);
    CHECK(done == 0);
}

TEST_CASE("blocks of an ended thread are released by whoever frees the last of them", "[frame_pool]") {
    const std::size_t orphans_before = frame_pool::orphaned_slabs();
    long done = 0;
    std::vector<tandem::task<>> tasks;
    std::thread maker([&] { tasks = make_tasks(20'000, done); });
    maker.join();
    if constexpr (pool_on) CHECK(frame_pool::orphaned_slabs() > orphans_before);
    // Run half of them here, then drop them all.
    tandem::event_loop loop;
    for (std::size_t i = 0; i < tasks.size() / 2; ++i) tandem::spawn(loop, std::move(tasks[i])).detach();
    loop.run([](long& d) -> tandem::task<> {
        while (d < 10'000) co_await tandem::yield();
    }(done));
    tasks.clear();
    CHECK(done == 10'000);
    CHECK(frame_pool::orphaned_slabs() == orphans_before);
}

namespace {
std::vector<tandem::task<int>>* g_late_tasks = nullptr;
int g_late_result = 0;

// Made before the thread's first frame, so destroyed after the pool's thread teardown.
struct late_user {
    bool armed = false;
    ~late_user() {
        if (!armed) return;
        // Runs after the pool's own thread_local: allocates from ownerless slabs.
        tandem::task<int> t = padded<40>(1);
        tandem::event_loop loop;
        g_late_result = loop.run(std::move(t));
        g_late_tasks->push_back(padded<40>(2)); // outlives the thread
    }
};
} // namespace

TEST_CASE("a thread_local destructor can make and run tasks after the pool tore down", "[frame_pool]") {
    const std::size_t orphans_before = frame_pool::orphaned_slabs();
    std::vector<tandem::task<int>> late;
    g_late_tasks = &late;
    std::thread t([] {
        static thread_local late_user user;
        user.armed = true;
        long done = 0;
        tandem::event_loop loop; // a frame or two, so the pool registers its teardown after `user`
        tandem::spawn(loop, count_up(done)).detach();
        loop.run([](long& d) -> tandem::task<> {
            while (d < 1) co_await tandem::yield();
        }(done));
    });
    t.join();
    CHECK(g_late_result == padded_sum(40, 1));
    REQUIRE(late.size() == 1);
    tandem::event_loop loop;
    const int value = loop.run(std::move(late.front()));
    CHECK(value == padded_sum(40, 2));
    late.clear();
    CHECK(frame_pool::orphaned_slabs() == orphans_before);
}

TEST_CASE("threads trading frames while others end keep the pool consistent", "[frame_pool]") {
    // Each producer thread makes tasks of several size classes and hands them to a consumer
    // that destroys or runs them; producers end at different times (their slabs are orphaned
    // with blocks still in flight). TSan checks the hand-offs.
    const std::size_t orphans_before = frame_pool::orphaned_slabs();
    constexpr int producers = 4;
    constexpr int per_producer = 4'000;
    std::mutex m;
    std::condition_variable cv;
    std::vector<tandem::task<int>> queue;
    int finished = 0;
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            for (int i = 0; i < per_producer * (p + 1) / producers; ++i) {
                tandem::task<int> t = i % 4 == 0 ? padded<8>(i) : i % 4 == 1 ? padded<300>(i) : i % 4 == 2 ? padded<900>(i) : padded<1500>(i);
                std::lock_guard lock(m);
                queue.push_back(std::move(t));
                cv.notify_one();
            }
            std::lock_guard lock(m);
            ++finished;
            cv.notify_one();
        });
    }
    long run = 0, dropped = 0;
    tandem::event_loop loop;
    for (;;) {
        std::vector<tandem::task<int>> batch;
        {
            std::unique_lock lock(m);
            cv.wait(lock, [&] { return !queue.empty() || finished == producers; });
            if (queue.empty()) break;
            batch.swap(queue);
        }
        for (tandem::task<int>& t : batch) {
            if ((run + dropped) % 2 == 0) {
                (void)loop.run(std::move(t));
                ++run;
            } else {
                t = {};
                ++dropped;
            }
        }
    }
    for (std::thread& t : threads) t.join();
    CHECK(run + dropped == per_producer / producers * (1 + 2 + 3 + 4));
    CHECK(frame_pool::orphaned_slabs() == orphans_before);
}

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {
// Waits for a child to end, at most `ms`; kills it if it did not. The exit status, or -1.
int wait_child(pid_t pid, int ms) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    REQUIRE(fd >= 0);
    pollfd p{fd, POLLIN, 0};
    int ready;
    while ((ready = ::poll(&p, 1, ms)) < 0 && errno == EINTR) {
    }
    ::close(fd);
    if (ready != 1) ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return ready == 1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
} // namespace

// Not under AddressSanitizer: g++ 12's runtime is not fork-safe itself (a child forked while
// another thread is inside its allocator hangs or dies in malloc, pool or no pool: 1 child in
// about 2,000 here).
#if !defined(TANDEM_FRAME_POOL_ASAN)
TEST_CASE("fork while other threads free blocks across threads leaves the child a working pool", "[frame_pool]") {
    // One thread makes blocks, another frees them (each free takes the pool's process-wide
    // lock), while this thread forks. A child that inherited the lock held would hang on its
    // first cross-thread free or new slab.
    std::atomic<bool> stop{false};
    std::mutex m;
    std::vector<void*> queue;
    std::vector<void*> foreign; // made by `maker`, freed in the children
    handoff<int> ready;
    std::thread maker([&] {
        for (int i = 0; i < 256; ++i) foreign.push_back(frame_pool::allocate(64));
        ready.put(1);
        while (!stop.load(std::memory_order_relaxed)) {
            void* p = frame_pool::allocate(48);
            std::lock_guard lock(m);
            queue.push_back(p);
        }
    });
    (void)ready.take();
    std::thread freer([&] {
        std::vector<void*> batch;
        while (!stop.load(std::memory_order_relaxed)) {
            {
                std::lock_guard lock(m);
                batch.swap(queue);
            }
            for (void* p : batch) frame_pool::deallocate(p, 48);
            batch.clear();
        }
    });
    int failed = 0;
    constexpr int forks = 100;
    std::fflush(nullptr);
    for (int i = 0; i < forks && failed == 0; ++i) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            frame_pool::deallocate(foreign[static_cast<std::size_t>(i)], 64); // a cross-thread free
            long done = 0;
            {
                tandem::event_loop loop;
                for (int k = 0; k < 2'000; ++k) tandem::spawn(loop, count_up(done)).detach();
                loop.run([](long& d) -> tandem::task<> {
                    while (d < 2'000) co_await tandem::yield();
                }(done));
            }
            std::vector<void*> blocks;
            for (int k = 0; k < 20'000; ++k) blocks.push_back(frame_pool::allocate(200));
            for (void* p : blocks) frame_pool::deallocate(p, 200);
            ::_exit(done == 2'000 ? 0 : 2);
        }
        if (const int rc = wait_child(pid, 20'000); rc != 0) {
            UNSCOPED_INFO("child " << i << ": " << (rc < 0 ? "killed after 20 s or by a signal" : "exit status ") << rc);
            ++failed;
        }
    }
    stop = true;
    maker.join();
    freer.join();
    for (std::size_t i = forks; i < foreign.size(); ++i) frame_pool::deallocate(foreign[i], 64);
    for (int i = 0; i < forks; ++i) frame_pool::deallocate(foreign[static_cast<std::size_t>(i)], 64);
    for (void* p : queue) frame_pool::deallocate(p, 48);
    CHECK(failed == 0);
}
#endif

#if defined(TANDEM_TEST_NEW_HOOK)
TEST_CASE("out of memory for a slab throws std::bad_alloc from the coroutine call and the pool stays whole", "[frame_pool]") {
    // On a new thread, whose slabs are all its own: allocate until the system refuses a region,
    // free some blocks of the slab that was full when it did, allocate again; every block keeps
    // its contents (a slab listed twice hands out blocks past its end).
    int refusals = 0;
    bool coroutine_threw = false;
    bool intact = true;
    tandem::detail::frame_pool_usage after{};
    std::thread t([&] {
        struct live {
            unsigned char* p;
            unsigned char tag;
        };
        constexpr std::size_t n = 48;
        std::vector<live> blocks;
        unsigned char tag = 0;
        auto fill = [&] {
            while (blocks.size() < blocks.capacity()) {
                try {
                    auto* p = static_cast<unsigned char*>(frame_pool::allocate(n));
                    const auto* home = reinterpret_cast<const tandem::detail::frame_pool_parts::slab*>(
                        reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{frame_pool::slab_size} - 1));
                    if (reinterpret_cast<char*>(p) + n > home->end) intact = false; // past the end of its slab
                    std::memset(p, ++tag, n);
                    blocks.push_back({p, tag});
                } catch (const std::bad_alloc&) {
                    ++refusals;
                    return;
                }
            }
        };
        auto drop = [&](std::size_t i) {
            for (std::size_t k = 0; k < n; ++k)
                if (blocks[i].p[k] != blocks[i].tag) intact = false;
            frame_pool::deallocate(blocks[i].p, n);
            blocks[i] = blocks.back();
            blocks.pop_back();
        };
        blocks.reserve(100'000);
        fill(); // some regions first
        blocks.reserve(4'000'000);
        t_refuse_regions = true;
        for (int round = 0; round < 4; ++round) {
            fill();
            // The newest blocks are in the slab that was current when the allocation failed.
            for (int i = 0; i < 40 && !blocks.empty(); ++i) drop(blocks.size() - 1);
            for (std::size_t i = 0; i < 40 && i * 97 < blocks.size(); ++i) drop(i * 97);
        }
        long done = 0;
        try {
            for (int i = 0; i < 1'000'000; ++i) (void)padded<16>(i); // made and dropped: fills no slab
            std::vector<tandem::task<int>> tasks;
            tasks.reserve(4'000'000);
            while (tasks.size() < tasks.capacity()) tasks.push_back(padded<16>(1));
        } catch (const std::bad_alloc&) {
            coroutine_threw = true;
        }
        t_refuse_regions = false;
        fill();
        (void)done;
        while (!blocks.empty()) drop(blocks.size() - 1);
        after = frame_pool::thread_usage();
    });
    t.join();
    CHECK(refusals == 4);
    CHECK(coroutine_threw);
    CHECK(intact);
    CHECK(after.slabs == after.idle_slabs);
}
#endif

#if TANDEM_FRAME_POOL && defined(TANDEM_FRAME_POOL_ASAN)
TEST_CASE("under AddressSanitizer the pool's free blocks are poisoned", "[frame_pool]") {
    // Built with -DTANDEM_FRAME_POOL=1 in an ASan build: a freed frame stays in the pool, so
    // ASan only sees a use after free if the pool poisons it.
    std::vector<void*> blocks;
    for (int i = 0; i < 2'000; ++i) blocks.push_back(frame_pool::allocate(72));
    void* kept = blocks.back();
    blocks.pop_back();
    for (void* p : blocks) frame_pool::deallocate(p, 72);
    for (void* p : blocks) CHECK(__asan_address_is_poisoned(p));
    CHECK_FALSE(__asan_address_is_poisoned(kept));
    void* again = frame_pool::allocate(72);
    CHECK_FALSE(__asan_address_is_poisoned(again));
    CHECK_FALSE(__asan_address_is_poisoned(static_cast<char*>(again) + 71));
    frame_pool::deallocate(again, 72);
    frame_pool::deallocate(kept, 72);
}
#endif

TEST_CASE("blocks at the size class boundaries and above the pool's range", "[frame_pool]") {
    const std::size_t sizes[] = {0, 1, 15, 16, 17, 31, 32, 33, 255, 256, 257, 319, 320, 321, 1023, 1024, 1025, 4096, 70'000};
    for (const std::size_t n : sizes) {
        std::vector<unsigned char*> blocks;
        for (int i = 0; i < 3'000; ++i) { // a slab's worth or more of every class
            auto* p = static_cast<unsigned char*>(frame_pool::allocate(n));
            REQUIRE(reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t) == 0);
            std::memset(p, static_cast<int>(i & 0xff), n);
            blocks.push_back(p);
        }
        bool intact = true;
        for (std::size_t i = 0; i < blocks.size(); ++i)
            for (std::size_t k = 0; k < n; ++k)
                if (blocks[i][k] != static_cast<unsigned char>(i & 0xff)) intact = false;
        CHECK(intact);
        for (unsigned char* p : blocks) frame_pool::deallocate(p, n);
    }
    CHECK(frame_pool::thread_usage().slabs == frame_pool::thread_usage().idle_slabs);
}

TEST_CASE("one live block per slab pins slabs but does not make the pool grow round after round", "[frame_pool]") {
    // Each round allocates 200,000 blocks and keeps one in 1,000 (about one a slab): later
    // rounds must fill the pinned slabs' holes rather than take new slabs.
    std::vector<void*> survivors;
    std::size_t first_peak = 0, peak = 0;
    for (int round = 0; round < 10; ++round) {
        std::vector<void*> blocks;
        for (int i = 0; i < 200'000; ++i) blocks.push_back(frame_pool::allocate(64));
        peak = std::max(peak, frame_pool::thread_usage().slabs);
        if (round == 0) first_peak = peak;
        for (std::size_t i = 0; i < blocks.size(); ++i) {
            if (i % 1'000 == 0) survivors.push_back(blocks[i]);
            else frame_pool::deallocate(blocks[i], 64);
        }
    }
    for (void* p : survivors) frame_pool::deallocate(p, 64);
    if constexpr (pool_on) CHECK(peak <= first_peak + 8);
    CHECK(frame_pool::thread_usage().slabs == frame_pool::thread_usage().idle_slabs);
}

namespace {
tandem::task<> never_run(long& done) {
    ++done;
    co_return;
}
} // namespace

TEST_CASE("a static event loop with tasks in it destroyed at exit after the pool's thread teardown", "[frame_pool]") {
    // exit() runs the main thread's thread_local destructors (the pool's) before static ones: the
    // loop's frames and records are freed into slabs whose thread has ended.
    std::fflush(nullptr); // what is buffered is printed once, not again by the child's exit()
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        static tandem::event_loop loop;
        static long done = 0;
        for (int i = 0; i < 5'000; ++i) tandem::spawn(loop, never_run(done)).detach();
        std::exit(done == 0 ? 0 : 3);
    }
    CHECK(wait_child(pid, 20'000) == 0);
}
