// tandem — errno → std::error_code / std::system_error, and EINTR retry. Layer: detail.
// Hot paths return codes (EAGAIN must never throw); public awaiters throw, naming the call.
#pragma once

#include <cerrno>
#include <system_error>

namespace tandem::detail {

inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

[[noreturn]] inline void throw_errno(const char* what) {
    throw std::system_error(errno, std::system_category(), what);
}

/// Repeats a syscall interrupted by a signal handler.
template <class F>
auto retry_on_eintr(F&& call) noexcept(noexcept(call())) {
    for (;;) {
        auto result = call();
        if (!(result == -1 && errno == EINTR)) return result;
    }
}

} // namespace tandem::detail
