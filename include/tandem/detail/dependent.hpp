// tandem — a type named through a template parameter, so that code using it is compiled only
// where the template is instantiated. Layer: detail (includes nothing).
#pragma once

namespace tandem::detail {

/// `dependent_t<T, Deferred>` is T, spelled so that it depends on `Deferred` (the
/// `template <class Deferred = void>` parameter of the class or function that uses it).
///
/// Why: clang analyses a template's non-dependent code where the template is defined, and
/// instantiates there, at once, every constexpr function and every function with a deduced
/// return type that such code names. C++20 made the members of std::vector, std::string,
/// std::optional and std::unique_ptr constexpr, so a class template holding a
/// `std::vector<pollfd>` that calls `push_back` compiles vector<pollfd>::push_back, and what it
/// reaches, in every translation unit that includes its header, whether or not anyone uses the
/// class. Held as `dependent_t<std::vector<pollfd>, Deferred>`, the member is dependent, and
/// the work happens where the class is instantiated, if it is. (A plain alias template such as
/// `template <class T, class> using same = T;` does not do this: it is replaced by T at once.)
/// bench/README.md, "Include cost", has the figures.
template <class T, class Deferred>
struct dependent_type {
    using type = T;
};
template <class T, class Deferred>
using dependent_t = typename dependent_type<T, Deferred>::type;

} // namespace tandem::detail
