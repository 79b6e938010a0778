// tandem — configuration macros. Layer: detail (included by everything, includes nothing).
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
