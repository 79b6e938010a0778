// tandem — <map> and <unordered_map>, only where the public standard headers are asked for.
//
// codec.hpp recognises maps by shape and needs neither header. With libstdc++ tandem leaves
// them out (detail/std_chrono.hpp says why); a build with TANDEM_FULL_STD_HEADERS defined, or
// on another standard library, gets them as it did before, so that the macro gives back every
// standard header tandem used to include, not only three of the five.
#pragma once

#include "tandem/config.hpp"

#if !defined(TANDEM_DETAIL_LEAN_STD_HEADERS)
#include <map>
#include <unordered_map>
#endif
