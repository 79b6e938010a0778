// Replaces the global operator new and delete of the one test binary whose source includes
// this header: every unaligned allocation asks test_new_allowed(size), which that test
// defines, first (to count allocations, or to refuse some and play out of memory).
// ThreadSanitizer's runtime defines the global operator new itself, so under it nothing is
// replaced, TANDEM_TEST_REPLACES_NEW is 0, and the tests that need the hook say so and pass.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_THREAD__)
#define TANDEM_TEST_REPLACES_NEW 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TANDEM_TEST_REPLACES_NEW 0
#endif
#endif
#ifndef TANDEM_TEST_REPLACES_NEW
#define TANDEM_TEST_REPLACES_NEW 1
#endif

/// Defined by the test that includes this header; false refuses the allocation.
bool test_new_allowed(std::size_t size) noexcept;

#if TANDEM_TEST_REPLACES_NEW
// Every unaligned form, so that no sanitizer's new meets this delete or the reverse.
void* operator new(std::size_t n) {
    if (!test_new_allowed(n)) throw std::bad_alloc();
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return test_new_allowed(n) ? std::malloc(n == 0 ? 1 : n) : nullptr;
}
void* operator new[](std::size_t n, const std::nothrow_t& tag) noexcept { return operator new(n, tag); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#endif
