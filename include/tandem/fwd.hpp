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

} // namespace tandem
