// slow_io — non-blocking waits scale, blocking calls inside a handler do not.
//
//   build/demo/examples/slow_io --port 8080
//   wrk -t1 -c1000 -d5s http://127.0.0.1:8080/slow   # ~5,000 req/s, each ~200 ms: waits overlap
//   wrk -t1 -c100  -d5s http://127.0.0.1:8080/bad    # ~5 req/s: each request holds the loop 200 ms
//
// /slow awaits a 200 ms timer: thousands of requests wait at once on one thread.
// /bad calls std::this_thread::sleep_for(200ms) inside the handler — the `time.sleep` in an
// `async def` mistake — and the whole server serves one request per 200 ms. The blocking
// watchdog names it on stderr.
#include "example_server.hpp"

#include <thread>

int main(int argc, char** argv) {
    const example::options o = example::parse(argc, argv);
    tandem::http::router routes;
    example::add_common_routes(routes);
    routes.get("/bad", [](tandem::http::request&) -> tandem::task<tandem::http::response> {
        std::this_thread::sleep_for(std::chrono::milliseconds(200)); // blocks the loop: the bug
        co_return tandem::http::response::text("bad");
    });
    routes.get("/compute", [](tandem::http::request& req) -> tandem::task<tandem::http::response> {
        const auto n = example::compute_n(req);
        if (!n) co_return tandem::http::response(400, "n must be a number between 0 and 2000000000\n");
        const double r = co_await tandem::offload(example::sum_sqrt, *n);
        co_return tandem::http::response::json(example::result_json(r));
    });
    tandem::event_loop loop;
    loop.watch_blocking(std::chrono::milliseconds(100));
    return example::serve(loop, o.port, std::move(routes), {}, {tandem::http::pool_metrics("offload", tandem::default_thread_pool())});
}
