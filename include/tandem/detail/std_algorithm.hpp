// tandem — the classic algorithms of <algorithm> (std::min, std::find, the heap operations),
// without the C++20 range algorithms.
//
// Why: libstdc++'s <algorithm> in C++20 adds <bits/ranges_algo.h> and the parallel-algorithm
// glue, about 0.15 billion compiler instructions per translation unit, for algorithms tandem
// does not use. libstdc++ keeps the classic ones in <bits/stl_algo.h>. Other standard
// libraries, or a build with TANDEM_FULL_STD_HEADERS defined, get <algorithm>.
#pragma once

#include "tandem/config.hpp"

#if defined(TANDEM_DETAIL_LEAN_STD_HEADERS) && __has_include(<bits/stl_algo.h>)
#include <bits/stl_algo.h>
#else
#include <algorithm>
#endif
