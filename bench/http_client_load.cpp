// HTTP client load: N concurrent tasks share one http::client (max_connections = N) and GET
// a URL in a loop for a fixed time. Prints one JSON line: requests, seconds, req/s, and this
// process's CPU (user + system) per request. Peers: peers/http_client_node.mjs,
// peers/http_client_aiohttp.py; run all with bench/run_http_client.py.
//
//     http_client_load --url http://127.0.0.1:8080/ [--concurrency 64] [--seconds 5]
#include "tandem/http/client.hpp"
#include "tandem/when.hpp"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace http = tandem::http;
using clock_type = std::chrono::steady_clock;

namespace {

double cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
    return s(u.ru_utime) + s(u.ru_stime);
}

struct counts {
    long ok = 0;
    long failed = 0;
};

tandem::task<> worker(http::client& c, std::string target, clock_type::time_point until, counts& n) {
    while (clock_type::now() < until) {
        try {
            const auto r = co_await c.get(target);
            if (r.status == 200) ++n.ok;
            else ++n.failed;
        } catch (const std::exception& e) {
            ++n.failed;
            std::fprintf(stderr, "request failed: %s\n", e.what());
        }
    }
}

tandem::task<> run(std::string url, int concurrency, double seconds) {
    const http::origin o = http::origin::parse(url);
    http::client_options options;
    options.max_connections = static_cast<std::size_t>(concurrency);
    options.host = o.host_header();
    http::client c("http://" + o.host_header(), options);
    (void)co_await c.get(o.target); // resolve and connect once before timing
    counts n;
    const double cpu0 = cpu_seconds();
    const auto start = clock_type::now();
    const auto until = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
    std::vector<tandem::task<>> workers;
    for (int i = 0; i < concurrency; ++i) workers.push_back(worker(c, o.target, until, n));
    co_await tandem::when_all(std::move(workers));
    const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
    const double cpu = cpu_seconds() - cpu0;
    std::printf("{\"client\": \"tandem\", \"requests\": %ld, \"failed\": %ld, \"seconds\": %.3f, \"req_s\": %.0f, "
                "\"cpu_s\": %.3f, \"cpu_us_per_req\": %.2f, \"connections\": %zu}\n",
                n.ok, n.failed, elapsed, static_cast<double>(n.ok) / elapsed, cpu,
                n.ok ? cpu * 1e6 / static_cast<double>(n.ok) : 0.0, c.connections_opened());
}

} // namespace

int main(int argc, char** argv) {
    std::string url = "http://127.0.0.1:8080/";
    int concurrency = 64;
    double seconds = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--url")) url = argv[i + 1];
        else if (!std::strcmp(argv[i], "--concurrency")) concurrency = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
        else {
            std::fprintf(stderr, "usage: %s --url URL [--concurrency N] [--seconds S]\n", argv[0]);
            return 2;
        }
    }
    tandem::sync_wait(run(url, concurrency, seconds));
}
