// tandem — the library's exception types. Layer: core (no OS headers).
#pragma once

#include <exception>
#include <stdexcept>

namespace tandem {

/// Thrown from a suspension point whose task was cancelled (join_handle::cancel, a when_any
/// loser, a task_group sibling of a failed child, a timeout). Deliberately not derived from
/// std::runtime_error: cancellation is control flow, not a failure of the operation.
class cancelled : public std::exception {
public:
    const char* what() const noexcept override { return "tandem: operation cancelled"; }
};

/// Thrown by with_timeout when the deadline passed before the task finished.
class timed_out : public std::runtime_error {
public:
    timed_out() : std::runtime_error("tandem: operation timed out") {}
};

/// Thrown by channel<T>::send on a closed channel.
class channel_closed : public std::logic_error {
public:
    channel_closed() : std::logic_error("tandem: send on a closed channel") {}
};

} // namespace tandem
