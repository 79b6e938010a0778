// tandem — forward declarations of the public types, for headers that only name them.
#pragma once

namespace tandem {

template <class T> class task;
template <class T> class join_handle;
class event_loop;
class task_group;
class signal_set;
class async_mutex;
class semaphore;
class event;
template <class T> class channel;
class cancelled;
class timed_out;
// The pools are class templates with one instantiation, so that including their headers
// compiles none of their bodies (bench/README.md, "Include cost"); name them by the aliases.
// Include this header rather than writing `class thread_pool;`, which conflicts with the alias.
template <class = void> class basic_thread_pool;
using thread_pool = basic_thread_pool<>;
template <class = void> class basic_process_pool;
using process_pool = basic_process_pool<>;

namespace http {
// The HTTP wing's classes with many bodies, for the same reason (README, "Headers").
template <class = void> class basic_server;
using server = basic_server<>;
template <class = void> class basic_router;
using router = basic_router<>;
template <class = void> class basic_client;
using client = basic_client<>;
template <class = void> class basic_connection_pool;
using connection_pool = basic_connection_pool<>;
template <class = void> class basic_connection_lease;
using connection_lease = basic_connection_lease<>;
template <class = void> class basic_json;
using json = basic_json<>;
} // namespace http

} // namespace tandem
