// tandem — non-blocking sockets on the event loop: addresses, TCP, Unix stream sockets, UDP,
// name resolution. The umbrella of net/: one header per concept.
//
// Layer: I/O. Knows the loop (readiness, timers); knows nothing of HTTP.
// Every fd is O_NONBLOCK | O_CLOEXEC, writes never raise SIGPIPE (MSG_NOSIGNAL), a peer reset
// is a std::system_error, end of stream is read_some() returning 0. I/O is optimistic: the
// syscall is tried first and the task waits for readiness only on EAGAIN; the operation
// awaiters live in the caller's frame, so a read or write allocates nothing.
// Sockets are used and closed on the thread of the loop that runs them.
#pragma once

#include "tandem/net/address.hpp"
#include "tandem/net/socket.hpp"
#include "tandem/net/stream.hpp"
#include "tandem/net/tcp.hpp"
#include "tandem/net/unix.hpp"
#include "tandem/net/udp.hpp"
#include "tandem/net/resolve.hpp"
