// tandem — death with the parent: a child asks the kernel to SIGKILL it when the process that
// forked it goes away, so no worker outlives its program, even after the program's SIGKILL.
//
// Layer: process (ground floor of the wing).
//
// The race: PR_SET_PDEATHSIG watches whoever is the parent *now*. If the parent died between
// fork() and the prctl(), the child was already re-parented (to init or a subreaper) and
// the signal will never come. So the parent's pid is taken before fork() and compared with
// getppid() after the prctl(): a mismatch means the parent is gone, and the child must leave.
#pragma once

#include <csignal>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

namespace tandem::process {

/// In a freshly forked child: have the kernel send `sig` to us when our parent dies.
/// `parent` is the parent's pid as the parent saw it before fork() (getpid() there).
/// False if the parent is already gone (or the prctl failed): the caller should _exit().
[[nodiscard]] inline bool die_with_parent(pid_t parent, int sig = SIGKILL) noexcept {
    if (::prctl(PR_SET_PDEATHSIG, sig) != 0) return false;
    return ::getppid() == parent;
}

} // namespace tandem::process
