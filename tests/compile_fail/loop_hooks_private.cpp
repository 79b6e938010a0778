// The loop's hooks for tandem's own awaiters are not user API: scheduling a handle by hand
// must not compile (tandem's code reaches them through detail::hooks).
#include <tandem/loop.hpp>

int main() {
    tandem::event_loop loop;
    loop.schedule(std::coroutine_handle<>{}, nullptr);
}
