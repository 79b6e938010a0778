// tandem — the library's exception types. Layer: core (no OS headers).
#pragma once

#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

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

/// An exception thrown by a job in a process_pool worker, carried back as its type name and
/// what(): the object itself cannot cross the process boundary.
class remote_error : public std::runtime_error {
public:
    remote_error(std::string type_name, std::string message)
        : std::runtime_error(type_name + ": " + message), m_type(std::move(type_name)), m_message(std::move(message)) {}
    /// The demangled type of the original exception, e.g. "std::invalid_argument".
    const std::string& type_name() const noexcept { return m_type; }
    /// The original what().
    const std::string& message() const noexcept { return m_message; }

private:
    std::string m_type;
    std::string m_message;
};

/// A process_pool worker died while running the job (a signal, exit(), abort()). Only that
/// job fails; the pool replaces the worker.
class worker_crashed : public std::runtime_error {
public:
    worker_crashed(int pid, int signal, int exit_status, const std::string& what)
        : std::runtime_error(what), m_pid(pid), m_signal(signal), m_exit_status(exit_status) {}
    int pid() const noexcept { return m_pid; }
    /// The signal that killed the worker, or 0 if it exited.
    int signal() const noexcept { return m_signal; }
    /// The worker's exit status, or -1 if a signal killed it.
    int exit_status() const noexcept { return m_exit_status; }

private:
    int m_pid;
    int m_signal;
    int m_exit_status;
};

} // namespace tandem
