// The server says what happened: error and access hooks, counters, the Prometheus handler,
// the blocking watchdog naming the route, and http::serve's signal handling.
#include "tandem/http.hpp"

#include "catch.hpp"
#include "http_harness.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace http = tandem::http;
using http_harness::local;
using http_harness::with_server;

TEST_CASE("the error hook hears a handler's exception with its route the access log every response", "[http][observe]") {
    std::vector<std::string> errors;
    std::vector<std::string> access;
    http::router r;
    r.get("/items/:id", [](http::request& req) -> tandem::task<http::response> {
        if (req.param("id") == "bad") throw std::runtime_error("no such item");
        co_return http::response::text("item");
    });
    http::server_options o;
    o.on_error = [&](const http::handler_error& e) { errors.push_back(e.describe()); };
    o.access_log = [&](const http::access_record& a) {
        access.push_back(std::string(a.method) + " " + std::string(a.target) + " " + std::to_string(a.status) + " " +
                         std::to_string(a.bytes));
        CHECK(a.duration > 0ns);
    };
    with_server(std::move(r), o, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        http::client c(local(port));
        auto ok = co_await c.get("/items/1");
        CHECK(ok.status == 200);
        auto bad = co_await c.get("/items/bad?x=1");
        CHECK(bad.status == 500);
        auto missing = co_await c.get("/nowhere");
        CHECK(missing.status == 404);
        const http::server_stats& s = server.stats();
        CHECK(s.requests == 3);
        CHECK(s.responses[2] == 1);
        CHECK(s.responses[4] == 1);
        CHECK(s.responses[5] == 1);
        CHECK(s.handler_errors == 1);
        CHECK(s.connections_open == 1);
        CHECK(s.bytes_received > 0);
        CHECK(s.bytes_sent > 0);
    });
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == "tandem http: GET /items/bad?x=1 (route GET /items/:id) threw: no such item");
    CHECK(access == std::vector<std::string>{"GET /items/1 200 4", "GET /items/bad?x=1 500 22", "GET /nowhere 404 10"});
}

TEST_CASE("the blocking watchdog names the route and where the handler was registered", "[http][observe][lag]") {
    std::mutex lock;
    std::vector<tandem::blocking_report> reports;
    http::router r;
    const unsigned line = __LINE__ + 1;
    r.get("/compute", [](http::request&) -> tandem::task<http::response> {
        const auto until = std::chrono::steady_clock::now() + 300ms;
        while (std::chrono::steady_clock::now() < until) {
        } // the mistake: CPU work on the loop
        co_return http::response::text("done");
    });
    r.get("/later", [](http::request&) -> tandem::task<http::response> {
        co_await tandem::sleep_for(1ms); // blocks after its first suspension
        const auto until = std::chrono::steady_clock::now() + 300ms;
        while (std::chrono::steady_clock::now() < until) {
        }
        co_return http::response::text("done");
    });
    with_server(std::move(r), {}, [&](std::uint16_t port, http::server&) -> tandem::task<> {
        tandem::this_loop().watch_blocking(100ms, [&](const tandem::blocking_report& report) {
            std::lock_guard g(lock);
            if (!report.finished) reports.push_back(report); // the report made while it blocks
        });
        http::client c(local(port));
        auto a = co_await c.get("/compute");
        CHECK(a.status == 200);
        auto b = co_await c.get("/later");
        CHECK(b.status == 200);
        tandem::this_loop().unwatch_blocking();
    });
    std::lock_guard g(lock);
    REQUIRE(reports.size() == 2);
    CHECK(reports[0].task_name == "GET /compute");
    CHECK(reports[0].where.line() == line);
    CHECK(std::string(reports[0].where.file_name()).find("test_http_observe.cpp") != std::string::npos);
    CHECK(reports[1].task_name == "GET /later");
    CHECK(reports[0].describe().find("task 'GET /compute' (") != std::string::npos);
}

TEST_CASE("metrics_handler serves the figures in Prometheus text format", "[http][observe][metrics]") {
    struct fake_pool {
        std::size_t size() const { return 4; }
        std::size_t queued() const { return 2; }
        std::size_t running() const { return 3; }
    } pool;
    http::router r;
    r.get("/metrics", http::metrics_handler({http::pool_metrics("compute \"cpu\"", pool)}));
    with_server(std::move(r), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        http::client c(local(port));
        (void)co_await c.get("/nowhere");
        auto m = co_await c.get("/metrics");
        CHECK(m.status == 200);
        CHECK(m.header("content-type") == "text/plain; version=0.0.4; charset=utf-8");
        for (const char* line : {"# TYPE tandem_http_requests_total counter\ntandem_http_requests_total 2\n",
                                 "tandem_http_responses_total{class=\"4xx\"} 1\n",
                                 "tandem_http_connections_open 1\n",
                                 "# TYPE tandem_loop_delay_seconds summary\n",
                                 "tandem_loop_delay_seconds{quantile=\"0.99\"} ",
                                 "tandem_loop_delay_seconds_count ",
                                 "tandem_pool_workers{pool=\"compute \\\"cpu\\\"\"} 4\n",
                                 "tandem_pool_queued{pool=\"compute \\\"cpu\\\"\"} 2\n",
                                 "tandem_pool_running{pool=\"compute \\\"cpu\\\"\"} 3\n"}) {
            INFO(line);
            CHECK(m.body.find(line) != std::string::npos);
        }
        // Every sample line is `name{labels} value`, every family has HELP and TYPE once.
        std::size_t types = 0, helps = 0;
        for (std::size_t at = 0; at < m.body.size();) {
            const std::size_t end = m.body.find('\n', at);
            const std::string line = m.body.substr(at, end - at);
            if (line.rfind("# TYPE ", 0) == 0) ++types;
            if (line.rfind("# HELP ", 0) == 0) ++helps;
            if (line[0] != '#') CHECK(line.find(' ') != std::string::npos);
            at = end + 1;
        }
        CHECK(types == helps);
    });
}

TEST_CASE("http::serve binds announces and drains on SIGTERM", "[http][observe][serve]") {
    tandem::event_loop loop;
    std::uint16_t port = 0;
    int served = 0;
    tandem::event entered;
    http::router r;
    r.get("/slow", [&](http::request&) -> tandem::task<http::response> {
        entered.set();
        co_await tandem::sleep_for(100ms);
        ++served;
        co_return http::response::text("slow");
    });
    http::serve_options how;
    how.on_listening = [&](const tandem::address& a) { port = a.port(); };
    auto client = [](std::uint16_t& p, tandem::event& started) -> tandem::task<> {
        while (p == 0) co_await tandem::yield();
        auto request = [](std::uint16_t at) -> tandem::task<int> {
            http::client c(local(at));
            co_return (co_await c.get("/slow")).status;
        };
        auto in_flight = tandem::spawn(request(p));
        co_await started.wait();
        std::raise(SIGTERM); // reaches serve()'s signal_set: a graceful stop
        const int status = co_await in_flight;
        CHECK(status == 200);
    };
    auto both = [](http::router routes, http::serve_options h, tandem::task<> cli) -> tandem::task<> {
        auto c = tandem::spawn(std::move(cli));
        co_await http::serve(tandem::address("127.0.0.1", 0), std::move(routes), {}, std::move(h));
        co_await c;
    };
    loop.run(both(std::move(r), how, client(port, entered)));
    CHECK(port != 0);
    CHECK(served == 1);
}
