// tandem — configuration macros. Layer: detail (included by everything, includes only <version>).
#pragma once

#define TANDEM_VERSION_MAJOR 0
#define TANDEM_VERSION_MINOR 1
#define TANDEM_VERSION_PATCH 0
#define TANDEM_VERSION "0.1.0"

// Reactor backend. Linux uses epoll unless TANDEM_REACTOR_POLL is defined, which forces the
// portable poll() backend (the test suite runs on both). Other POSIX systems always get poll().
#if !defined(TANDEM_REACTOR_POLL) && !defined(__linux__)
#define TANDEM_REACTOR_POLL 1
#endif

// Loop statistics (event_loop::stats(): delay and step histograms, utilization) cost two
// clock reads per batch of ready work and are on by default, cheap enough for production. Define
// TANDEM_LOOP_STATS=0 to measure what they cost; the blocking watchdog still works without.
#ifndef TANDEM_LOOP_STATS
#define TANDEM_LOOP_STATS 1
#endif

// Coroutine frames and spawned-task records come from a per-thread slab pool
// (detail/frame_pool.hpp): a spawn costs about half as much as with malloc. Off by default under
// AddressSanitizer and MemorySanitizer, so they see every frame's lifetime (use after free of a
// frame); define TANDEM_FRAME_POOL=0 for Valgrind or another allocator's tooling. Use one value
// for the whole program (a program that mixes them stops at the pool's first slab).
#ifndef TANDEM_FRAME_POOL
#if defined(__SANITIZE_ADDRESS__)
#define TANDEM_FRAME_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define TANDEM_FRAME_POOL 0
#endif
#endif
#endif
#ifndef TANDEM_FRAME_POOL
#define TANDEM_FRAME_POOL 1
#endif

// Standard headers. With libstdc++, tandem includes only the parts of <chrono>, <functional> and
// <algorithm> it uses, from libstdc++'s internal headers, and neither <map> nor <unordered_map>
// (detail/std_chrono.hpp says why). Define TANDEM_FULL_STD_HEADERS for the public headers; other
// standard libraries always get them. detail/std_*.hpp follow this one rule.
#include <version> // defines __GLIBCXX__
#if defined(__GLIBCXX__) && !defined(TANDEM_FULL_STD_HEADERS)
#define TANDEM_DETAIL_LEAN_STD_HEADERS 1
#endif

namespace tandem::detail {
inline constexpr bool loop_stats_enabled = TANDEM_LOOP_STATS != 0;
} // namespace tandem::detail
