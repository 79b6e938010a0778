// tandem — spin, then sleep: the one polling policy of the pools and their workers.
// Layer: detail. Knows nothing of pools or the loop; the loop's wait for an expected post uses it too.
//
// Why poll at all: a thread or process that sleeps in the kernel costs 5 µs to wake on a
// shared core and 50–70 µs once the other vCPU has gone idle, more than a short job's whole
// round trip. So whoever waits for the next job or reply polls for a configured while
// (thread_pool_options::spin, process_pool_options::spin) and only then sleeps.
#pragma once

#include "tandem/detail/std_chrono.hpp"

#include <thread>

namespace tandem::detail {

/// Polls `ready()` until it returns true or `deadline` has passed, yielding the core between
/// polls (a thread it waits for may share this CPU); true if it became ready. The caller
/// sleeps in the kernel on false.
template <class Ready>
bool spin_until_ready(std::chrono::steady_clock::time_point deadline, Ready&& ready) {
    for (;;) {
        if (ready()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::yield();
    }
}

/// The same for `spin` from now; no poll at all when `spin` is not positive.
template <class Ready>
bool spin_until_ready(std::chrono::nanoseconds spin, Ready&& ready) {
    if (spin.count() <= 0) return false;
    return spin_until_ready(std::chrono::steady_clock::now() + spin, ready);
}

} // namespace tandem::detail
