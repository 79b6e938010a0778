// tandem — the part of <chrono> tandem uses: durations, clocks, time points, the literals.
//
// Why not <chrono> itself: since C++20, libstdc++'s <chrono> also carries the calendar, time
// zones and their stream formatting, which pull in <sstream> and <locale>. That was a quarter of
// a billion compiler instructions in every translation unit that includes tandem, 4% of all of
// <asio.hpp>. libstdc++ keeps the durations and clocks in <bits/chrono.h>, the part its own
// <thread>, <mutex> and <condition_variable> include. Other standard libraries, or a build with
// TANDEM_FULL_STD_HEADERS defined, get the public header. Code that uses the calendar includes
// <chrono> itself, as it should.
#pragma once

#include "tandem/config.hpp"

#if defined(TANDEM_DETAIL_LEAN_STD_HEADERS) && __has_include(<bits/chrono.h>)
#include <bits/chrono.h>
#else
#include <chrono>
#endif
