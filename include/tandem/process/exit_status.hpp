// tandem — process::exit_status: how a child process ended, as the kernel reported it, and
// as a sentence ("exited with status 3", "killed by signal 9 (Killed)").
//
// Layer: process (ground floor of the wing). Knows nothing of pools or the loop.
//
// Why a type: waitpid() returns a packed int and waitid()/pidfd return a siginfo_t; callers
// (the process pool, the cluster) should read one vocabulary, and say the same words in
// their errors.
#pragma once

#include <csignal>
#include <cstring>
#include <string>
#include <sys/wait.h>

namespace tandem::process {

class exit_status {
public:
    /// From waitpid()'s packed status.
    static exit_status from_wait_status(int status) noexcept {
        if (WIFSIGNALED(status)) return killed(WTERMSIG(status), WCOREDUMP(status) != 0);
        if (WIFEXITED(status)) return exited(WEXITSTATUS(status));
        return exit_status(kind::other, status);
    }
    /// From waitid()'s siginfo (si_code CLD_EXITED, CLD_KILLED or CLD_DUMPED).
    static exit_status from_siginfo(const siginfo_t& info) noexcept {
        switch (info.si_code) {
        case CLD_EXITED: return exited(info.si_status);
        case CLD_KILLED: return killed(info.si_status, false);
        case CLD_DUMPED: return killed(info.si_status, true);
        default: return exit_status(kind::other, info.si_status);
        }
    }
    static exit_status exited(int code) noexcept { return exit_status(kind::exit, code); }
    static exit_status killed(int signal, bool core_dumped = false) noexcept {
        exit_status s(kind::signal, signal);
        s.m_core = core_dumped;
        return s;
    }

    /// The child called exit()/_exit() (or returned from main).
    bool is_exit() const noexcept { return m_kind == kind::exit; }
    /// A signal ended the child.
    bool is_signal() const noexcept { return m_kind == kind::signal; }
    bool core_dumped() const noexcept { return m_core; }
    /// The exit code (0-255), or -1 if the child did not exit.
    int code() const noexcept { return is_exit() ? m_value : -1; }
    /// The terminating signal, or 0 if no signal ended it.
    int signal() const noexcept { return is_signal() ? m_value : 0; }
    /// Ended with exit code 0.
    bool success() const noexcept { return is_exit() && m_value == 0; }

    /// Back to waitpid()'s packing: what travels in a frame or a log line.
    int wait_status() const noexcept {
        switch (m_kind) {
        case kind::exit: return (m_value & 0xff) << 8;
        case kind::signal: return (m_value & 0x7f) | (m_core ? 0x80 : 0);
        default: return m_value;
        }
    }

    /// "exited with status 3", "killed by signal 9 (Killed)", "killed by signal 6 (Aborted),
    /// core dumped".
    std::string describe() const {
        switch (m_kind) {
        case kind::exit: return "exited with status " + std::to_string(m_value);
        case kind::signal: {
            const char* name = ::strsignal(m_value);
            std::string what = "killed by signal " + std::to_string(m_value) + " (" + (name ? name : "?") + ")";
            if (m_core) what += ", core dumped";
            return what;
        }
        default: return "ended in an unknown way (status " + std::to_string(m_value) + ")";
        }
    }

    friend bool operator==(const exit_status&, const exit_status&) = default;

private:
    enum class kind : unsigned char { exit, signal, other };
    exit_status(kind k, int value) noexcept : m_kind(k), m_value(value) {}
    kind m_kind;
    bool m_core = false;
    int m_value;
};

} // namespace tandem::process
