// A second translation unit, linked into test_thread_pool and test_process_pool. The pools
// and the process wing are class templates and default_thread_pool() a function template
// (bench/README.md, "Include cost"), so the process-wide pool and the zygote now live in
// templates' statics: they must still be one per program, not one per translation unit.
#include "tandem/process_pool.hpp"
#include "tandem/thread_pool.hpp"

#include "other_tu.hpp"

namespace other_tu {

tandem::thread_pool& default_pool() { return tandem::default_thread_pool(); }

std::size_t size_of(tandem::thread_pool& pool) { return pool.size(); }

const void* zygote() { return tandem::detail::zygote::instance(true).get(); }

} // namespace other_tu
