// tandem — umbrella header: every public header, through the narrower umbrellas a program that
// needs only part may include instead (README, "Headers"):
//   tandem/core.hpp          tasks, the loop, time, combinators, primitives, cancellation, statistics
//   tandem/signal.hpp        signal_set
//   tandem/net.hpp           addresses, TCP, Unix sockets, UDP, name lookup
//   tandem/thread_pool.hpp   offload to threads
//   tandem/process_pool.hpp  offload to worker processes (with tandem/codec.hpp)
//   tandem/http.hpp          the HTTP/1.1 parser, server and client
//   tandem/cluster.hpp       the prefork cluster (Node's cluster, gunicorn)
#pragma once

#include "tandem/core.hpp"

#include "tandem/cluster.hpp"
#include "tandem/codec.hpp"
#include "tandem/http.hpp"
#include "tandem/net.hpp"
#include "tandem/process_pool.hpp"
#include "tandem/signal.hpp"
#include "tandem/thread_pool.hpp"
