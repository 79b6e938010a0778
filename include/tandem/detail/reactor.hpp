// tandem — the only place a reactor backend is chosen. Layer: detail (loop).
// Every backend offers watch(fd, read, write), watch_read_only(fd), watch_exclusive(fd), forget(fd),
// has_events_now(), wait(timeout, on_event).
#pragma once

#include "tandem/config.hpp"

#if defined(TANDEM_REACTOR_POLL)
#include "tandem/detail/reactor_poll.hpp"
namespace tandem::detail {
using reactor = poll_reactor;
}
#else
#include "tandem/detail/reactor_epoll.hpp"
namespace tandem::detail {
using reactor = epoll_reactor;
}
#endif
