// process_pool — /compute in worker processes: Python's run_in_executor(ProcessPoolExecutor)
// and Node's cluster-free answer to CPU work. The loop stays free (/ping answers at once)
// and /compute throughput grows with cores, because each job runs in its own process.
//
//   build/demo/examples/process_pool --port 8080 --workers 2
//   curl 'http://127.0.0.1:8080/compute?n=200000000' &
//   curl -w '%{time_total}\n' http://127.0.0.1:8080/ping   # answers at once
//   curl http://127.0.0.1:8080/crash                       # a job that abort()s: 500, one worker replaced
//   curl http://127.0.0.1:8080/stats                       # workers, replacements, queue, loop lag
//
// What Python's pool cannot do: a crashed worker fails only its own request (the pool
// carries on), and --timeout-ms kills a job that runs too long instead of leaving it on a
// core forever. A client that goes away cancels its job: queued, it never runs; running,
// its worker is killed and replaced.
#include "example_server.hpp"

int main(int argc, char** argv) {
    const example::options o = example::parse(argc, argv, {"--workers", "--timeout-ms"});
    std::size_t workers = 0;
    long timeout_ms = 0;
    for (const auto& [k, v] : o.extra) {
        if (k == "--workers") workers = std::strtoul(v.c_str(), nullptr, 10);
        if (k == "--timeout-ms") timeout_ms = std::strtol(v.c_str(), nullptr, 10);
    }
    // First, before anything starts a thread: the pool forks its zygote now, and every
    // worker, replacements included, is forked from that clean single-threaded process.
    tandem::process_pool pool({.workers = workers, .job_timeout = std::chrono::milliseconds(timeout_ms)});
    tandem::event_loop loop;
    tandem::http::router routes;
    example::add_common_routes(routes);
    routes.get("/compute", [&pool](tandem::http::request& req) -> tandem::task<tandem::http::response> {
        const auto n = example::compute_n(req);
        if (!n) co_return tandem::http::response(400, "n must be a number between 0 and 2000000000\n");
        std::string failure;
        int status = 500;
        try {
            const double r = co_await pool.run(example::sum_sqrt, *n);
            co_return tandem::http::response::json(example::result_json(r));
        } catch (const tandem::timed_out&) {
            status = 503;
            failure = "the job ran past --timeout-ms; its worker was killed and replaced\n";
        } catch (const tandem::worker_crashed& e) {
            failure = std::string(e.what()) + "\n";
        }
        co_return tandem::http::response(status, failure);
    });
    routes.get("/crash", [&pool](tandem::http::request&) -> tandem::task<tandem::http::response> {
        try {
            co_await pool.run([] { std::abort(); });
        } catch (const tandem::worker_crashed& e) {
            co_return tandem::http::response(500, std::string(e.what()) + "; the pool carries on\n");
        }
        co_return tandem::http::response(500, "the job survived abort()\n");
    });
    routes.get("/stats", [&pool, &loop](tandem::http::request&) -> tandem::task<tandem::http::response> {
        const tandem::loop_stats& s = loop.stats();
        char buf[320];
        std::snprintf(buf, sizeof buf,
                      "{\"workers\": %zu, \"workers_started\": %zu, \"queued\": %zu, \"running\": %zu, "
                      "\"delay_p99_us\": %lld, \"longest_step_us\": %lld}",
                      pool.size(), pool.workers_started(), pool.queued(), pool.running(),
                      static_cast<long long>(s.delay.percentile(99).count() / 1000),
                      static_cast<long long>(s.steps.max().count() / 1000));
        co_return tandem::http::response::json(buf);
    });
    loop.watch_blocking(std::chrono::milliseconds(100)); // stays quiet here
    return example::serve(loop, o.port, std::move(routes), {}, {tandem::http::pool_metrics("compute", pool)});
}
