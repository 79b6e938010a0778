// tandem — a per-thread slab allocator for coroutine frames and spawned-task records.
//
// Layer: core (detail). No event loop; one OS header, <pthread.h>, for pthread_atfork (see fork()).
//
// Spawning a task costs two heap blocks (its frame and the loop's record of it) and a
// million spawned at once used to spend half their time in malloc and free: glibc consolidates
// and unlinks chunks one by one. A bounded per-thread free list cannot help there (a burst of a
// million allocates before it frees anything, so a list of N blocks serves N of them), but
// slabs can: blocks of one size class are carved from 64 KiB slabs, a slab goes back to the
// system as a whole once its last block is freed, and a thread keeps at most max_idle_slabs
// slabs with no block in use. Memory held is what is in use, rounded up to slabs, plus that cap.
//
// Threads. Each thread allocates from its own slabs without a lock. A block freed by the thread
// that owns its slab goes back to the slab at once; a block freed by another thread (a loop
// destroyed on another thread than the one that ran it, a task made on one thread and run on
// another) is handed to the owner under a process-wide lock, and the owner takes such blocks
// back when it next runs out of room. When a thread ends, its slabs with blocks in use are
// orphaned: the last free of such a slab, from any thread, releases it. A thread whose
// thread-local storage is being torn down (a thread_local destructor making a task) allocates
// from orphaned slabs under the lock.
//
// Off (TANDEM_FRAME_POOL=0, the default under AddressSanitizer and MemorySanitizer): every
// block comes from ::operator new, so a sanitizer or Valgrind sees each frame's lifetime.
// Choose the same value in every translation unit of a program: mixed, a block could be taken
// from the pool by a function of one TU and given to ::operator delete by an inline function of
// another (the linker keeps one copy of each). That cannot be made to fail at link time in a
// header-only library, so each TU records its value when it is initialized and the pool stops
// the program (a message, then std::abort) at its first slab if it saw both.
//
// Slabs are carved from regions of slabs_per_region slabs, each one plain ::operator new block
// (not an aligned one: glibc serves a 64 KiB-aligned request by splitting a larger chunk, and
// the pieces it leaves around each slab kept a burst's memory from being reused by the next,
// which then faulted in fresh pages: 100k sleeping tasks cost 1.3x main). A region goes back
// when none of its slabs is in use; one empty region is kept. Worst case, one block in use
// keeps its slab, and one slab in use keeps its region (1 MiB).
//
// fork(): the process-wide lock is taken around fork() (pthread_atfork), so the child never
// inherits it held. In the child, the forking thread's slabs are its own as before; slabs of
// the parent's other threads belong to threads that do not exist there: their blocks can still
// be freed (into lists nobody collects) and their memory stays with the child: a bounded leak
// of what those threads held at the fork, never a deadlock or a reuse.
#pragma once

#include "tandem/config.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <utility>

#include <pthread.h>

// Forced on under AddressSanitizer (TANDEM_FRAME_POOL=1), free blocks are poisoned: a use of a
// freed frame is reported even though the pool, not malloc, holds it.
#if defined(__SANITIZE_ADDRESS__)
#define TANDEM_FRAME_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TANDEM_FRAME_POOL_ASAN 1
#endif
#endif
#if TANDEM_FRAME_POOL && defined(TANDEM_FRAME_POOL_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace tandem::detail {

// 1: a TU with the pool was initialized, 2: one without. See the top of the file.
inline std::atomic<unsigned> frame_pool_settings_seen{0};
namespace {
[[maybe_unused]] const bool frame_pool_setting_recorded =
    (frame_pool_settings_seen.fetch_or(TANDEM_FRAME_POOL ? 1u : 2u, std::memory_order_relaxed), true);
} // namespace

/// What the pool holds for the calling thread (tests and diagnostics).
struct frame_pool_usage {
    std::size_t slabs = 0;      // slabs owned by this thread
    std::size_t idle_slabs = 0; // of which no block is in use (at most frame_pool::max_idle_slabs)
};

#if TANDEM_FRAME_POOL

namespace frame_pool_parts {

inline constexpr std::size_t slab_size = 64 * 1024;
inline constexpr std::size_t slabs_per_region = 16;
inline constexpr std::size_t max_block = 1024;
// Size classes: 16-byte steps up to 256 bytes (most frames and records), 64-byte steps up to
// max_block.
inline constexpr std::size_t small_max = 256;
inline constexpr unsigned class_count = small_max / 16 + (max_block - small_max) / 64;
constexpr unsigned class_of(std::size_t n) noexcept {
    return n <= small_max ? static_cast<unsigned>((n + 15) / 16 - (n != 0)) // 0 bytes: the 16-byte class
                          : static_cast<unsigned>(small_max / 16 + (n - small_max + 63) / 64 - 1);
}
constexpr std::size_t block_size(unsigned cls) noexcept {
    return cls < small_max / 16 ? (cls + 1) * 16 : small_max + (cls + 1 - small_max / 16) * 64;
}

struct block {
    block* next;
};
inline void poison(void* p, std::size_t n) noexcept {
#if defined(TANDEM_FRAME_POOL_ASAN)
    ASAN_POISON_MEMORY_REGION(p, n);
#else
    (void)p, (void)n;
#endif
}
inline void unpoison(void* p, std::size_t n) noexcept {
#if defined(TANDEM_FRAME_POOL_ASAN)
    ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
    (void)p, (void)n;
#endif
}
struct heap;
struct region;
enum class state : unsigned char { current, partial, full, cached, orphaned };

// The header at the start of every slab; blocks follow it. slab_size-aligned, so a block's
// slab is its address rounded down.
struct slab {
    std::atomic<heap*> owner; // null once orphaned (or allocated after its thread ended)
    block* free = nullptr;    // owner only
    char* bump = nullptr;     // next never-used block
    char* end = nullptr;
    std::uint32_t used = 0; // blocks handed out; once orphaned, guarded by the lock
    std::uint16_t cls = 0;
    state where = state::current;
    bool remote_listed = false;  // guarded by the lock
    slab* prev = nullptr;        // in its bin's partial or full list, or the cache
    slab* next = nullptr;
    block* remote = nullptr;     // guarded by the lock: freed by other threads
    slab* next_remote = nullptr; // guarded by the lock: the owner's slabs with remote frees
    region* home;                // the region it was carved from

    slab(heap* h, region* r) noexcept : owner(h), home(r) {}
    bool has_room() const noexcept { return free != nullptr || bump != end; }
    void reset(unsigned c) noexcept;
};
inline constexpr std::size_t header_size = (sizeof(slab) + 63) / 64 * 64;
static_assert(header_size + max_block <= slab_size);

inline void slab::reset(unsigned c) noexcept {
    cls = static_cast<std::uint16_t>(c);
    free = nullptr;
    bump = reinterpret_cast<char*>(this) + header_size;
    const std::size_t bs = block_size(c);
    end = bump + (slab_size - header_size) / bs * bs;
}

// A run of slabs_per_region slab_size-aligned slabs in one ::operator new block; the header
// sits in front of the first slab. Guarded by the lock.
struct free_slab {
    free_slab* next;
};
struct region {
    region* prev = nullptr; // in the list of regions with room
    region* next = nullptr;
    void* memory;           // what ::operator new returned
    char* first;            // the first slab
    free_slab* free = nullptr;
    unsigned carved = 0;    // slabs handed out at least once
    unsigned in_use = 0;
    bool listed = false;
    explicit region(void* m, char* f) noexcept : memory(m), first(f) {}
    bool has_room() const noexcept { return free != nullptr || carved < slabs_per_region; }
};
inline constexpr std::size_t region_bytes = slabs_per_region * slab_size + slab_size + sizeof(region);

struct list {
    slab* head = nullptr;
    void push(slab& s) noexcept {
        s.prev = nullptr;
        s.next = head;
        if (head) head->prev = &s;
        head = &s;
    }
    void erase(slab& s) noexcept {
        if (s.prev) s.prev->next = s.next;
        else head = s.next;
        if (s.next) s.next->prev = s.prev;
        s.prev = s.next = nullptr;
    }
    slab* pop() noexcept {
        slab* s = head;
        if (s) erase(*s);
        return s;
    }
};

struct bin {
    slab* current = nullptr; // allocated from
    list partial;            // others with free blocks
    list full;               // others without
};

// Constant-initialized and trivially destructible, so reaching it costs no TLS guard; the
// thread-exit work is done by a separate thread_local (exit_guard), made with the first slab.
struct heap {
    bin bins[class_count];
    list cached;                  // idle slabs that are no bin's current
    std::size_t idle = 0;         // idle slabs: the cached ones and idle currents
    std::size_t slabs = 0;
    slab* remote_slabs = nullptr; // guarded by the lock
    std::atomic<bool> has_remote{false};
    bool ended = false;           // the thread's exit_guard ran
};

inline thread_local heap t_heap;

} // namespace frame_pool_parts

class frame_pool {
public:
    static constexpr std::size_t slab_size = frame_pool_parts::slab_size;
    /// Larger blocks come from ::operator new.
    static constexpr std::size_t max_block = frame_pool_parts::max_block;
    /// Slabs a thread keeps with no block in use, to be reused without a trip to the system.
    static constexpr std::size_t max_idle_slabs = 4;

    static void* allocate(std::size_t n) {
        if (n > max_block) return ::operator new(n);
        heap& h = frame_pool_parts::t_heap;
        const unsigned cls = frame_pool_parts::class_of(n);
        slab* s = h.bins[cls].current;
        if (s && s->has_room()) return take(h, *s);
        return allocate_slow(h, cls);
    }

    static void deallocate(void* p, std::size_t n) noexcept {
        if (n > max_block) {
            ::operator delete(p); // unsized: clang 14 has no sized deallocation by default
            return;
        }
        slab* s = slab_of(p);
        heap& h = frame_pool_parts::t_heap;
        if (s->owner.load(std::memory_order_relaxed) != &h) return deallocate_foreign(*s, p);
        give_back(h, *s, p);
    }

    static frame_pool_usage thread_usage() noexcept {
        return {frame_pool_parts::t_heap.slabs, frame_pool_parts::t_heap.idle};
    }
    /// Regions of slabs held from the system, process-wide (each slabs_per_region slabs).
    static std::size_t regions() noexcept {
        lock_guard lock;
        return s_region_count;
    }
    /// Slabs of ended threads that still have blocks in use, process-wide.
    static std::size_t orphaned_slabs() noexcept {
        lock_guard lock;
        return s_orphans;
    }

private:
    using slab = frame_pool_parts::slab;
    using heap = frame_pool_parts::heap;
    using bin = frame_pool_parts::bin;
    using block = frame_pool_parts::block;
    using state = frame_pool_parts::state;

    static slab* slab_of(void* p) noexcept {
        return reinterpret_cast<slab*>(reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{slab_size} - 1));
    }

    static void* take(heap& h, slab& s) noexcept {
        void* p;
        if (block* b = s.free) {
            frame_pool_parts::unpoison(b, frame_pool_parts::block_size(s.cls));
            s.free = b->next;
            p = b;
        } else {
            p = s.bump;
            s.bump += frame_pool_parts::block_size(s.cls);
            frame_pool_parts::unpoison(p, frame_pool_parts::block_size(s.cls));
        }
        if (s.used++ == 0) --h.idle;
        return p;
    }

    // `locked`: the caller holds the lock (taking blocks back from other threads).
    static void give_back(heap& h, slab& s, void* p, bool locked = false) noexcept {
        block* b = static_cast<block*>(p);
        b->next = s.free;
        s.free = b;
        frame_pool_parts::poison(b, frame_pool_parts::block_size(s.cls));
        if (--s.used == 0) return went_idle(h, s, locked);
        if (s.where == state::full) return unfull(h, s);
    }
    [[gnu::noinline]] static void unfull(heap& h, slab& s) noexcept {
        h.bins[s.cls].full.erase(s);
        h.bins[s.cls].partial.push(s);
        s.where = state::partial;
    }

    [[gnu::noinline]] static void went_idle(heap& h, slab& s, bool locked) noexcept {
        bin& b = h.bins[s.cls];
        s.reset(s.cls); // the next blocks come in address order again
        if (b.current == &s) {
            if (h.idle < max_idle_slabs) {
                ++h.idle;
                return;
            }
            b.current = nullptr;
        } else {
            (s.where == state::full ? b.full : b.partial).erase(s);
            if (h.idle < max_idle_slabs) {
                s.where = state::cached;
                h.cached.push(s);
                ++h.idle;
                return;
            }
        }
        --h.slabs;
        if (locked) return release(s);
        lock_guard lock;
        release(s);
    }

    // Slabs come from and go back to regions, under the lock.
    static slab* new_slab(heap* owner) {
        using frame_pool_parts::region;
        region* r = s_regions;
        if (!r) {
            if (frame_pool_settings_seen.load(std::memory_order_relaxed) == 3) mixed_settings();
            void* mem = ::operator new(frame_pool_parts::region_bytes); // may throw: nothing changed yet
            const auto after_header = reinterpret_cast<std::uintptr_t>(mem) + sizeof(region);
            char* first = reinterpret_cast<char*>((after_header + slab_size - 1) & ~(std::uintptr_t{slab_size} - 1));
            r = ::new (mem) region(mem, first);
            list_region(*r);
            ++s_region_count;
            ++s_empty_regions;
        }
        char* mem;
        if (frame_pool_parts::free_slab* f = r->free) {
            r->free = f->next;
            mem = reinterpret_cast<char*>(f);
        } else {
            mem = r->first + r->carved++ * slab_size;
        }
        if (r->in_use++ == 0) --s_empty_regions;
        if (!r->has_room()) unlist_region(*r);
        return ::new (mem) slab(owner, r);
    }
    [[noreturn, gnu::cold]] static void mixed_settings() noexcept {
        std::fputs("tandem: translation units built with TANDEM_FRAME_POOL=0 and =1 are linked into one "
                   "program; their coroutine frames cannot be freed by each other. Build all with one value.\n",
                   stderr);
        std::abort();
    }
    static void release(slab& s) noexcept {
        using frame_pool_parts::region;
        region* r = s.home;
        s.~slab();
        auto* f = ::new (static_cast<void*>(&s)) frame_pool_parts::free_slab{r->free};
        r->free = f;
        if (!r->listed) list_region(*r);
        if (--r->in_use != 0) return;
        if (s_empty_regions == 0) { // keep one, at the back: the others are filled first
            ++s_empty_regions;
            unlist_region(*r);
            r->next = nullptr;
            r->prev = s_regions_tail;
            (s_regions_tail ? s_regions_tail->next : s_regions) = r;
            s_regions_tail = r;
            r->listed = true;
            return;
        }
        unlist_region(*r);
        --s_region_count;
        void* mem = r->memory;
        r->~region();
        ::operator delete(mem);
    }
    static void list_region(frame_pool_parts::region& r) noexcept { // at the front
        r.prev = nullptr;
        r.next = s_regions;
        (s_regions ? s_regions->prev : s_regions_tail) = &r;
        s_regions = &r;
        r.listed = true;
    }
    static void unlist_region(frame_pool_parts::region& r) noexcept {
        (r.prev ? r.prev->next : s_regions) = r.next;
        (r.next ? r.next->prev : s_regions_tail) = r.prev;
        r.prev = r.next = nullptr;
        r.listed = false;
    }

    [[gnu::noinline]] static void* allocate_slow(heap& h, unsigned cls) {
        if (h.ended) return allocate_orphaned(cls);
        if (h.has_remote.load(std::memory_order_acquire)) {
            lock_guard lock;
            collect_remote(h);
        }
        bin& b = h.bins[cls];
        slab* s = b.current;
        if (s && !s->has_room()) {
            s->where = state::full;
            b.full.push(*s);
            b.current = s = nullptr; // consistent if no new slab can be had (bad_alloc)
        }
        if (!s) {
            if ((s = b.partial.pop()) == nullptr) {
                if ((s = h.cached.pop()) == nullptr) {
                    if (h.slabs == 0) register_exit();
                    {
                        lock_guard lock;
                        s = new_slab(&h);
                    }
                    ++h.slabs;
                    ++h.idle; // take() counts it out again
                }
                s->reset(cls);
            }
            s->where = state::current;
            b.current = s;
        }
        return take(h, *s);
    }

    // Blocks freed by other threads, taken back by the owner. Under the lock.
    static void collect_remote(heap& h) noexcept {
        h.has_remote.store(false, std::memory_order_relaxed);
        slab* s = std::exchange(h.remote_slabs, nullptr);
        while (s) {
            slab* next_slab = s->next_remote;
            block* b = std::exchange(s->remote, nullptr);
            s->remote_listed = false;
            while (b) { // the slab may be released with the last of its blocks: read ahead
                block* next = b->next;
                give_back(h, *s, b, true);
                b = next;
            }
            s = next_slab;
        }
    }

    [[gnu::noinline]] static void deallocate_foreign(slab& s, void* p) noexcept {
        lock_guard lock;
        heap* owner = s.owner.load(std::memory_order_relaxed);
        if (!owner) { // orphaned: its last block releases it
            frame_pool_parts::poison(p, frame_pool_parts::block_size(s.cls));
            if (--s.used == 0) {
                if (s_orphan_current[s.cls] == &s) s_orphan_current[s.cls] = nullptr;
                --s_orphans;
                release(s);
            }
            return;
        }
        block* b = static_cast<block*>(p);
        b->next = s.remote;
        s.remote = b;
        if (!s.remote_listed) {
            s.remote_listed = true;
            s.next_remote = owner->remote_slabs;
            owner->remote_slabs = &s;
        }
        owner->has_remote.store(true, std::memory_order_release);
    }

    // After the thread's exit_guard ran: carve from an ownerless slab, under the lock. Such a
    // slab is orphaned from the start; a full one is left to its last free.
    [[gnu::noinline]] static void* allocate_orphaned(unsigned cls) {
        lock_guard lock;
        slab* s = s_orphan_current[cls];
        if (!s || s->bump == s->end) {
            s = new_slab(nullptr);
            s->reset(cls);
            s->where = state::orphaned;
            ++s_orphans;
            s_orphan_current[cls] = s;
        }
        void* p = s->bump;
        s->bump += frame_pool_parts::block_size(cls);
        frame_pool_parts::unpoison(p, frame_pool_parts::block_size(cls));
        ++s->used;
        return p;
    }

    // The thread ends: release its idle slabs, orphan the others.
    struct exit_guard {
        exit_guard() = default;
        exit_guard(const exit_guard&) = delete;
        exit_guard& operator=(const exit_guard&) = delete;
        ~exit_guard() {
            heap& h = frame_pool_parts::t_heap;
            lock_guard lock;
            collect_remote(h);
            auto leave = [&h](slab& s) noexcept {
                --h.slabs;
                if (s.used == 0) return release(s);
                s.where = state::orphaned;
                ++s_orphans;
                s.owner.store(nullptr, std::memory_order_relaxed); // others read it again under the lock
            };
            for (bin& b : h.bins) {
                if (slab* s = std::exchange(b.current, nullptr)) leave(*s);
                while (slab* s = b.partial.pop()) leave(*s);
                while (slab* s = b.full.pop()) leave(*s);
            }
            while (slab* s = h.cached.pop()) leave(*s);
            h.idle = 0;
            h.ended = true;
        }
    };
    static void register_exit() {
        static thread_local exit_guard guard;
        (void)guard;
    }

    // The process-wide lock of the rare paths: a spin lock that sleeps (std::atomic::wait)
    // rather than <mutex>, which the core headers do not include.
    inline static std::atomic<bool> s_locked{false};
    static void lock() noexcept {
        while (s_locked.exchange(true, std::memory_order_acquire)) s_locked.wait(true, std::memory_order_relaxed);
    }
    static void unlock() noexcept {
        s_locked.store(false, std::memory_order_release);
        s_locked.notify_one();
    }
    struct lock_guard {
        lock_guard() noexcept {
            static const bool fork_safe = install_fork_handlers(); // before the lock is first held
            (void)fork_safe;
            lock();
        }
        ~lock_guard() { unlock(); }
        lock_guard(const lock_guard&) = delete;
        lock_guard& operator=(const lock_guard&) = delete;
    };
    inline static slab* s_orphan_current[frame_pool_parts::class_count] = {}; // guarded by the lock
    inline static std::size_t s_orphans = 0;                                  // guarded by the lock
    // Regions with a free slab, the ones in use first; guarded by the lock.
    inline static frame_pool_parts::region* s_regions = nullptr;
    inline static frame_pool_parts::region* s_regions_tail = nullptr;
    inline static std::size_t s_region_count = 0;
    inline static std::size_t s_empty_regions = 0; // at most 1

    // fork(): the child must not inherit the lock held by a thread it does not have.
    static bool install_fork_handlers() noexcept {
        return ::pthread_atfork([] { lock(); }, [] { unlock(); }, [] { unlock(); }) == 0;
    }
};

#else // TANDEM_FRAME_POOL

class frame_pool {
public:
    static constexpr std::size_t slab_size = 0;
    static constexpr std::size_t max_block = 0;
    static constexpr std::size_t max_idle_slabs = 0;
    static void* allocate(std::size_t n) { return ::operator new(n); }
    static void deallocate(void* p, std::size_t) noexcept { ::operator delete(p); }
    static frame_pool_usage thread_usage() noexcept { return {}; }
    static std::size_t orphaned_slabs() noexcept { return 0; }
    static std::size_t regions() noexcept { return 0; }
};

#endif // TANDEM_FRAME_POOL

/// Gives a class (a promise type, a task record) the frame pool's operator new and delete.
/// The sized delete is the one called, so the pool learns each block's size class for free.
struct pooled {
    static void* operator new(std::size_t n) { return frame_pool::allocate(n); }
    static void operator delete(void* p, std::size_t n) noexcept { frame_pool::deallocate(p, n); }
};

} // namespace tandem::detail
