// The example contract, shared by every HTTP example (see ../shared/DESIGN.md):
//   --port N (0 = any free port); prints "listening on http://127.0.0.1:PORT" once accepting;
//   SIGINT/SIGTERM → graceful shutdown (requests in flight finish), exit status 0.
// and the endpoints they all serve: /, /ping, /slow, /compute?n=N.
#pragma once

#include <tandem/tandem.hpp>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <time.h>
#include <utility>
#include <vector>

namespace example {

/// The articles' CPU-bound handler: sum of sqrt(i) for i < n.
inline double sum_sqrt(long n) {
    double sum = 0;
    for (long i = 0; i < n; ++i) sum += std::sqrt(static_cast<double>(i));
    return sum;
}

/// This thread's CPU time: what a CPU job really costs, however busy the machine is (a
/// neighbour on the core stretches wall time, not this).
inline std::chrono::nanoseconds thread_cpu_time() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

/// n from /compute?n=N (default 20,000,000); nullopt if malformed.
inline std::optional<long> compute_n(const tandem::http::request& req) {
    const auto text = req.query_param("n");
    if (!text) return 20'000'000L;
    char* end = nullptr;
    const long n = std::strtol(text->c_str(), &end, 10);
    if (end == text->c_str() || *end != '\0' || n < 0 || n > 2'000'000'000L) return std::nullopt;
    return n;
}

inline std::string result_json(double r) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "{\"result\": %.6f}", r);
    return buf;
}

/// /, /ping and /slow: the endpoints whose behaviour does not differ between examples.
inline void add_common_routes(tandem::http::router& r) {
    r.get("/", [](tandem::http::request&) -> tandem::task<tandem::http::response> {
        co_return tandem::http::response::json(R"({"message":"Hello from tandem"})");
    });
    r.get("/ping", [](tandem::http::request&) -> tandem::task<tandem::http::response> {
        co_return tandem::http::response::text("pong");
    });
    r.get("/slow", [](tandem::http::request&) -> tandem::task<tandem::http::response> {
        co_await tandem::sleep_for(std::chrono::milliseconds(200)); // waits without blocking anyone
        co_return tandem::http::response::text("slow");
    });
}

struct options {
    unsigned long port = 0;
    std::vector<std::pair<std::string, std::string>> extra; // --name value pairs for the example
};

inline options parse(int argc, char** argv, std::initializer_list<const char*> known = {}) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const bool has_value = i + 1 < argc;
        if (std::strcmp(argv[i], "--port") == 0 && has_value) {
            o.port = std::strtoul(argv[++i], nullptr, 10);
            continue;
        }
        bool ok = false;
        for (const char* k : known)
            if (std::strcmp(argv[i], k) == 0 && has_value) {
                o.extra.emplace_back(argv[i], argv[i + 1]);
                ++i;
                ok = true;
            }
        if (!ok || o.port > 65535) {
            std::fprintf(stderr, "usage: %s [--port N]", argv[0]);
            for (const char* k : known) std::fprintf(stderr, " [%s VALUE]", k);
            std::fprintf(stderr, "\n");
            std::exit(2);
        }
    }
    return o;
}

/// Serves `routes` on 127.0.0.1:port until SIGINT/SIGTERM, then shuts down gracefully
/// (tandem::http::serve). Every example also answers GET /metrics: the loop's, the server's
/// and `pools`' figures in Prometheus text format.
inline int serve(tandem::event_loop& loop, unsigned long port, tandem::http::router routes,
                 tandem::http::server_options server_options = {}, std::vector<tandem::http::pool_probe> pools = {}) {
    routes.get("/metrics", tandem::http::metrics_handler(std::move(pools)));
    return loop.run([](unsigned long p, tandem::http::router r, tandem::http::server_options so) -> tandem::task<int> {
        co_await tandem::http::serve(tandem::address("127.0.0.1", static_cast<std::uint16_t>(p)), std::move(r),
                                     std::move(so));
        co_return 0;
    }(port, std::move(routes), std::move(server_options)));
}

} // namespace example
