// tandem — detail: the two range facilities the range forms of when_all/when_any and
// process_pool::map need, from <iterator> instead of <ranges> (whose views every includer would
// compile: about 0.07 s a translation unit, bench/README.md "Include cost").
//
// Layer: detail. Standard library only.
#pragma once

#include <iterator>
#include <utility>

namespace tandem::detail {

/// std::ranges::input_range, spelt with what <iterator> declares (ranges::begin/end and the
/// iterator concepts), which is what the standard defines it as.
template <class R>
concept input_range = requires(R& r) {
    std::ranges::begin(r);
    std::ranges::end(r);
} && std::input_iterator<decltype(std::ranges::begin(std::declval<R&>()))>;

/// std::ranges::range_value_t.
template <input_range R>
using range_value_t = std::iter_value_t<decltype(std::ranges::begin(std::declval<R&>()))>;

} // namespace tandem::detail
