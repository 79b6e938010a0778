// cluster — Node's cluster module, tandem style: the whole server, loop and all, once per CPU
// in worker processes sharing one port, under a primary that keeps them alive.
//
//   build/demo/examples/cluster --port 8080                    # one worker per available CPU
//   build/demo/examples/cluster --port 8080 --workers 2 --balance reuseport
//   curl http://127.0.0.1:8080/cluster       # every worker: pid, restarts, requests, loop p99
//   curl 'http://127.0.0.1:8080/compute?n=200000000' &   # blocks ONE worker's loop (inline)
//   curl -w '%{time_total}\n' http://127.0.0.1:8080/ping # another worker answers (shared mode)
//   kill -9 <a worker pid>       # only its connections fail; it is replaced
//   kill -HUP <primary>          # rolling reload, no failed request
//   kill -TTIN / -TTOU <primary> # one worker more / less
//   ab -n 20000 -c 32 http://127.0.0.1:8080/   # new connections spread over the workers
//
// What a cluster buys: CPU-bound /compute scales with cores (each worker computes inline on
// its own loop). What it does not: a blocked worker still stalls the requests it holds, and
// in reuseport mode also the new connections the kernel hashes to it.
//
// Options: --workers N (default: available CPUs: affinity mask and cgroup quota),
// --balance shared|reuseport, --stall-timeout-ms (default 30000, 0: off),
// --drain-timeout-ms (default 10000), --bind ADDR (default 127.0.0.1; the "listening on" line
// keeps the contract's 127.0.0.1 form, with the real port). --available-parallelism prints the default worker
// count and exits.
#include "example_server.hpp"

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdlib>

namespace {

std::string cluster_json(const std::vector<tandem::cluster::worker_stats>& all) {
    std::string out = "{\"workers\": [";
    for (std::size_t i = 0; i < all.size(); ++i) {
        const auto& s = all[i];
        static const char* const states[] = {"free", "starting", "ready", "draining"};
        char buf[320];
        std::snprintf(buf, sizeof buf,
                      "%s{\"index\": %zu, \"pid\": %d, \"state\": \"%s\", \"restarts\": %" PRIu64
                      ", \"requests\": %" PRIu64 ", \"loop_delay_p99_us\": %lld, \"utilization\": %.3f, "
                      "\"uptime_s\": %.1f}",
                      i ? ", " : "", s.index, static_cast<int>(s.pid), states[static_cast<unsigned>(s.state) & 3u],
                      s.restarts, s.requests, static_cast<long long>(s.loop_delay_p99.count() / 1000), s.utilization,
                      static_cast<double>(s.uptime.count()) / 1e9);
        out += buf;
    }
    return out + "]}";
}

tandem::task<> serve(tandem::cluster::worker& w) {
    tandem::http::router routes;
    example::add_common_routes(routes);
    // Inline, like a Node cluster without worker threads: it blocks this worker's loop.
    routes.get("/compute", [](tandem::http::request& req) -> tandem::task<tandem::http::response> {
        const auto n = example::compute_n(req);
        if (!n) co_return tandem::http::response(400, "n must be a number between 0 and 2000000000\n");
        co_return tandem::http::response::json(example::result_json(example::sum_sqrt(*n)));
    });
    routes.get("/cluster", [&w](tandem::http::request&) -> tandem::task<tandem::http::response> {
        co_return tandem::http::response::json(cluster_json(w.cluster_stats()));
    });
    routes.get("/healthz", [&w](tandem::http::request&) -> tandem::task<tandem::http::response> {
        if (w.stopping()) co_return tandem::http::response(503, "draining\n");
        co_return tandem::http::response::text("ok");
    });
    routes.get("/metrics", tandem::http::metrics_handler()); // this worker's loop and server
    tandem::http::server server(std::move(routes));
    w.count_requests([&server] { return server.requests_served(); });
    std::stop_callback on_stop(w.stop_token(), [&server] { server.shutdown(); });
    co_await server.serve(w.listener());
}

/// A whole decimal number in [low, high], or a usage error: `--workers -1` must not become
/// SIZE_MAX workers, nor `--workers abc` the default.
long long number_option(const std::string& name, const std::string& text, long long low, long long high) {
    errno = 0;
    char* end = nullptr;
    const long long n = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE || n < low || n > high) {
        std::fprintf(stderr, "%s: a whole number from %lld to %lld, not '%s'\n", name.c_str(), low, high, text.c_str());
        std::exit(2);
    }
    return n;
}

} // namespace

int main(int argc, char** argv) {
    if (argc == 2 && std::strcmp(argv[1], "--available-parallelism") == 0) {
        std::printf("%zu\n", tandem::cluster::available_parallelism());
        return 0;
    }
    const example::options o =
        example::parse(argc, argv, {"--workers", "--balance", "--stall-timeout-ms", "--drain-timeout-ms", "--bind"});
    tandem::cluster::options opts;
    std::string bind = "127.0.0.1";
    for (const auto& [k, v] : o.extra)
        if (k == "--bind") bind = v;
    opts.listen = {tandem::address(bind, static_cast<std::uint16_t>(o.port))};
    for (const auto& [k, v] : o.extra) {
        constexpr long long day_ms = 86'400'000;
        if (k == "--workers") opts.workers = static_cast<std::size_t>(number_option(k, v, 0, 4096));
        if (k == "--stall-timeout-ms") opts.stall_timeout = std::chrono::milliseconds(number_option(k, v, 0, day_ms));
        if (k == "--drain-timeout-ms") opts.drain_timeout = std::chrono::milliseconds(number_option(k, v, 0, day_ms));
        if (k == "--balance") {
            if (v == "shared") {
                opts.balancing = tandem::cluster::balance::shared;
            } else if (v == "reuseport") {
                opts.balancing = tandem::cluster::balance::reuseport;
            } else {
                std::fprintf(stderr, "--balance: shared or reuseport, not '%s'\n", v.c_str());
                return 2;
            }
        }
    }
    opts.on_ready = [](std::span<const tandem::address> bound) {
        std::printf("listening on http://127.0.0.1:%u\n", static_cast<unsigned>(bound.front().port()));
        std::fflush(stdout);
    };
    try {
        return tandem::cluster::run(opts, serve);
    } catch (const std::exception& e) { // a port in use, options out of range: one line, exit 1
        std::fprintf(stderr, "cluster: %s\n", e.what());
        return 1;
    }
}
