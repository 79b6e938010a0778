// worker_threads — the fix for blocked_loop: /compute runs on a thread pool, the loop stays
// free (Node's worker_threads, libuv's pool, asyncio's run_in_executor).
//
//   build/demo/examples/worker_threads --port 8080 --workers 2
//   curl 'http://127.0.0.1:8080/compute?n=200000000' &
//   curl -w '%{time_total}\n' http://127.0.0.1:8080/ping   # answers at once
//   curl http://127.0.0.1:8080/stats                      # the loop's own lag figures
//
// A cancelled request (client gone, timeout) takes its job out of the queue if it has not
// started yet.
#include "example_server.hpp"

int main(int argc, char** argv) {
    const example::options o = example::parse(argc, argv, {"--workers"});
    std::size_t workers = 0;
    for (const auto& [k, v] : o.extra)
        if (k == "--workers") workers = std::strtoul(v.c_str(), nullptr, 10);
    tandem::thread_pool pool(tandem::thread_pool_options{.threads = workers});
    tandem::event_loop loop;
    tandem::http::router routes;
    example::add_common_routes(routes);
    routes.get("/compute", [&pool](tandem::http::request& req) -> tandem::task<tandem::http::response> {
        const auto n = example::compute_n(req);
        if (!n) co_return tandem::http::response(400, "n must be a number between 0 and 2000000000\n");
        const double r = co_await pool.run(example::sum_sqrt, *n);
        co_return tandem::http::response::json(example::result_json(r));
    });
    routes.get("/stats", [&loop](tandem::http::request&) -> tandem::task<tandem::http::response> {
        const tandem::loop_stats& s = loop.stats();
        auto us = [](std::chrono::nanoseconds d) { return static_cast<long long>(d.count() / 1000); };
        char buf[256];
        std::snprintf(buf, sizeof buf,
                      "{\"delay_p50_us\": %lld, \"delay_p99_us\": %lld, \"delay_max_us\": %lld, "
                      "\"longest_step_us\": %lld, \"utilization\": %.3f}",
                      us(s.delay.percentile(50)), us(s.delay.percentile(99)), us(s.delay.max()), us(s.steps.max()),
                      s.utilization());
        co_return tandem::http::response::json(buf);
    });
    loop.watch_blocking(std::chrono::milliseconds(100)); // stays quiet here
    return example::serve(loop, o.port, std::move(routes), {}, {tandem::http::pool_metrics("compute", pool)});
}
