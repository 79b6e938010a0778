// tandem — the core: tasks, the event loop, time, combinators, loop-local primitives, spawn and
// task groups, cancellation and the loop's statistics. No sockets, no pools, no HTTP, no
// signals, so a program that needs only these pays only for these (see README, "Headers").
#pragma once

#include "tandem/cancel.hpp"
#include "tandem/config.hpp"
#include "tandem/error.hpp"
#include "tandem/fwd.hpp"
#include "tandem/lag.hpp"
#include "tandem/loop.hpp"
#include "tandem/source_location.hpp"
#include "tandem/spawn.hpp"
#include "tandem/sync.hpp"
#include "tandem/task.hpp"
#include "tandem/task_group.hpp"
#include "tandem/time.hpp"
#include "tandem/when.hpp"
