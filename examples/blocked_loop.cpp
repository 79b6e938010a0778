// blocked_loop — the Node pitfall: CPU work inside a handler stalls every other request.
//
//   build/demo/examples/blocked_loop --port 8080
//   curl 'http://127.0.0.1:8080/compute?n=200000000' &   # ~1 s of CPU, inline on the loop
//   curl -w '%{time_total}\n' http://127.0.0.1:8080/ping  # waits for the computation
//
// /compute computes sum(sqrt(i)) right in the handler, never suspending: while it runs, the
// loop cannot accept, read or answer anything else. The blocking watchdog prints on stderr,
// while it happens, which task holds the loop, e.g.
//   tandem: event loop blocked for 31 ms by task 'http connection' (examples/...)
// Its threshold is half the CPU time the default /compute takes on this machine (measured at
// start, on thread CPU time), so it speaks on a fast CPU too; --watch-ms N sets it.
// Compare worker_threads (the same /compute offloaded): /ping stays fast there.
#include "example_server.hpp"

int main(int argc, char** argv) {
    const example::options o = example::parse(argc, argv, {"--watch-ms"});
    // What the default job (n = 20,000,000) costs here, from a tenth of it on thread CPU time.
    const auto start = example::thread_cpu_time();
    volatile double sink = example::sum_sqrt(2'000'000);
    (void)sink;
    const long default_job_ms = std::max(1L, static_cast<long>((example::thread_cpu_time() - start).count() / 100'000));
    long watch_ms = std::max(1L, default_job_ms / 2);
    for (const auto& [k, v] : o.extra)
        if (k == "--watch-ms") watch_ms = std::strtol(v.c_str(), nullptr, 10);
    std::fprintf(stderr,
                 "blocked_loop: the default /compute takes about %ld ms of CPU here; the watchdog names any step "
                 "holding the loop over %ld ms\n",
                 default_job_ms, watch_ms);
    tandem::http::router routes;
    example::add_common_routes(routes);
    routes.get("/compute", [](tandem::http::request& req) -> tandem::task<tandem::http::response> {
        const auto n = example::compute_n(req);
        if (!n) co_return tandem::http::response(400, "n must be a number between 0 and 2000000000\n");
        const double r = example::sum_sqrt(*n); // the mistake this example exists to show
        co_return tandem::http::response::json(example::result_json(r));
    });
    tandem::event_loop loop;
    if (watch_ms > 0) loop.watch_blocking(std::chrono::milliseconds(watch_ms));
    return example::serve(loop, o.port, std::move(routes));
}
