// tandem — umbrella header: includes every public header and nothing else.
#pragma once

#include "tandem/cancel.hpp"
#include "tandem/config.hpp"
#include "tandem/error.hpp"
#include "tandem/fwd.hpp"
#include "tandem/lag.hpp"
#include "tandem/loop.hpp"
#include "tandem/net.hpp"
#include "tandem/signal.hpp"
#include "tandem/source_location.hpp"
#include "tandem/spawn.hpp"
#include "tandem/sync.hpp"
#include "tandem/task.hpp"
#include "tandem/task_group.hpp"
#include "tandem/thread_pool.hpp"
#include "tandem/time.hpp"
#include "tandem/when.hpp"
