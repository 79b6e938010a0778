// Must NOT compile: `point` has no codec. tests/check_compile_fail.cmake expects one clear
// error that names the type and says how to opt in.
#include "tandem/process_pool.hpp"

struct point {
    int x, y;
};
point mirror(point p) { return {p.y, p.x}; }

tandem::task<void> use(tandem::process_pool& pool) {
    point r = co_await pool.run(mirror, point{1, 2});
    (void)r;
}

int main() {}
