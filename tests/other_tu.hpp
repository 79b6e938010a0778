// What tests/other_tu.cpp defines. Declared with only fwd.hpp, as a user's header would.
#pragma once

#include "tandem/fwd.hpp"

#include <cstddef>

namespace other_tu {

/// &tandem::default_thread_pool() as the other translation unit sees it.
tandem::thread_pool& default_pool();
/// pool.size(), called through a reference to the type fwd.hpp declares.
std::size_t size_of(tandem::thread_pool& pool);
/// The process's zygote as the other translation unit sees it (forked if there is none).
const void* zygote();

} // namespace other_tu
