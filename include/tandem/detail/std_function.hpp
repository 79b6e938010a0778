// tandem — std::function, without the rest of <functional>.
//
// Why: since C++17, libstdc++'s <functional> also brings the searchers, and with them
// <unordered_map>, <vector> and the algorithms: with the containers tandem does not otherwise
// need, a third of a billion compiler instructions per translation unit. libstdc++ keeps
// std::function (and the function objects: std::less, std::hash, std::reference_wrapper) in
// internal headers its other headers include. Other standard libraries, or a build with
// TANDEM_FULL_STD_HEADERS defined, get <functional>. tandem does not use std::invoke, which
// only <functional> declares: std::apply over std::forward_as_tuple does the same from <tuple>.
#pragma once

#include "tandem/config.hpp"

#if defined(TANDEM_DETAIL_LEAN_STD_HEADERS) && __has_include(<bits/std_function.h>)
#include <bits/std_function.h>
#else
#include <functional>
#endif
