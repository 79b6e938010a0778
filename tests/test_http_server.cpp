#include "tandem/http.hpp"

#include "catch.hpp"
#include "http_harness.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"
#include "tandem/when.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <clocale>
#include <ctime>
#include <optional>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace http = tandem::http;
using http_harness::local;
using http_harness::raw_exchange;
using http_harness::with_server;

namespace {

/// A blocking connect from a peer thread, for a peer the loop must not drive.
bool connect_loopback(int fd, std::uint16_t port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
}

http::router test_routes(tandem::event* slow_entered = nullptr) {
    http::router r;
    r.get("/", [](http::request&) -> tandem::task<http::response> { co_return http::response::json(R"({"ok":true})"); });
    r.get("/users/:id", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text("user " + std::string(req.param("id")));
    });
    r.get("/files/*", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text("file " + std::string(req.path()));
    });
    r.get("/query", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text(req.query_param("name").value_or("none"));
    });
    r.post("/echo", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text(std::string(req.body()));
    });
    r.get("/slow", [slow_entered](http::request&) -> tandem::task<http::response> {
        if (slow_entered) slow_entered->set();
        co_await tandem::sleep_for(200ms);
        co_return http::response::text("slow");
    });
    r.get("/throw", [](http::request&) -> tandem::task<http::response> {
        throw std::runtime_error("handler bug");
        co_return http::response::text("unreachable");
    });
    r.get("/stream", [](http::request&) -> tandem::task<http::response> {
        co_return http::response::stream("text/plain", [](http::body_writer& w) -> tandem::task<void> {
            for (int i = 0; i < 100; ++i) co_await w.write("line " + std::to_string(i) + "\n");
        });
    });
    return r;
}

std::size_t count(const std::string& haystack, std::string_view needle) {
    std::size_t n = 0;
    for (std::size_t pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + 1)) ++n;
    return n;
}

} // namespace

TEST_CASE("routes params queries HEAD 404 and 405 with the real client", "[http][server]") {
    with_server(test_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        http::client c(local(port));
        auto r = co_await c.get("/");
        CHECK(r.status == 200);
        CHECK(r.body == R"({"ok":true})");
        CHECK(r.header("content-type") == "application/json");
        CHECK_FALSE(r.header("date").empty());
        r = co_await c.get("/users/42");
        CHECK(r.body == "user 42");
        r = co_await c.get("/files/a/b/c.txt");
        CHECK(r.body == "file /files/a/b/c.txt");
        r = co_await c.get("/query?x=1&name=J%C3%BCrgen+K");
        CHECK(r.body == "J\xc3\xbcrgen K");
        r = co_await c.request("HEAD", "/users/7");
        CHECK(r.status == 200);
        CHECK(r.body.empty());
        CHECK(r.header("content-length") == "6"); // "user 7": what GET would send
        r = co_await c.get("/nowhere");
        CHECK(r.status == 404);
        r = co_await c.request("DELETE", "/users/1");
        CHECK(r.status == 405);
        CHECK(r.header("allow") == "GET, HEAD");
        r = co_await c.post("/echo", std::string(100'000, 'z'));
        CHECK(r.body.size() == 100'000);
        r = co_await c.get("/throw");
        CHECK(r.status == 500);
        r = co_await c.get("/");
        CHECK(r.status == 200); // the connection survived all of it
        CHECK(c.connections_opened() == 1);
    });
}

TEST_CASE("pipelined requests are answered in order on one connection", "[http][server]") {
    with_server(test_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        const std::string reply = co_await raw_exchange(
            port,
            "GET /users/1 HTTP/1.1\r\nHost: a\r\n\r\n"
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            "GET /users/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        CHECK(count(reply, "HTTP/1.1 200 OK") == 3);
        const auto a = reply.find("user 1"), b = reply.find("hello"), c = reply.find("user 3");
        CHECK(a < b);
        CHECK(b < c);
        CHECK(c != std::string::npos);
    });
}

TEST_CASE("a chunked upload is decoded and a streamed response arrives chunked", "[http][server][chunked]") {
    with_server(test_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        auto s = co_await tandem::tcp_stream::connect(local(port));
        co_await s.write_all(std::string_view("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"));
        co_await tandem::yield();
        co_await s.write_all(std::string_view("lo\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n"));
        std::string reply;
        char buf[1024];
        while (reply.find("hello world") == std::string::npos) {
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            REQUIRE(n > 0);
            reply.append(buf, n);
        }
        CHECK(reply.find("Content-Length: 11") != std::string::npos);

        http::client c(local(port));
        auto r = co_await c.get("/stream");
        CHECK(r.status == 200);
        CHECK(r.header("transfer-encoding") == "chunked");
        CHECK(count(r.body, "\n") == 100);
        CHECK(r.body.rfind("line 99\n") == r.body.size() - 8);

        // HTTP/1.0 has no chunked coding: the body ends with the connection.
        const std::string old = co_await raw_exchange(port, "GET /stream HTTP/1.0\r\n\r\n");
        CHECK(old.find("Transfer-Encoding") == std::string::npos);
        CHECK(old.find("Connection: close") != std::string::npos);
        CHECK(count(old, "line ") == 100);
    });
}

TEST_CASE("a chunked body of tiny chunks with long extensions does not grow the buffer", "[http][server][chunked]") {
    with_server(test_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        auto s = co_await tandem::tcp_stream::connect(local(port));
        co_await s.write_all(std::string_view("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
        const std::string chunk = "1;" + std::string(1000, 'e') + "\r\nx\r\n"; // 1 byte of body, 1 KiB of framing
        std::string batch;
        for (int i = 0; i < 100; ++i) batch += chunk;
        for (int i = 0; i < 40; ++i) co_await s.write_all(batch); // 4 MiB of framing, 4,000 bytes of body
        co_await s.write_all(std::string_view("0\r\n\r\n"));
        std::string reply;
        char buf[8192];
        while (reply.find(std::string(4000, 'x')) == std::string::npos) {
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            REQUIRE(n > 0);
            reply.append(buf, n);
        }
        CHECK(reply.find("Content-Length: 4000") != std::string::npos);
    });
}

TEST_CASE("Expect: 100-continue gets its interim response", "[http][server]") {
    with_server(test_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        auto s = co_await tandem::tcp_stream::connect(local(port));
        co_await s.write_all(std::string_view("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
        std::string reply;
        char buf[1024];
        while (reply.find("\r\n\r\n") == std::string::npos) {
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            REQUIRE(n > 0);
            reply.append(buf, n);
        }
        CHECK(reply.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0) == 0);
        co_await s.write_all(std::string_view("abc"));
        while (reply.find("abc") == std::string::npos) {
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            REQUIRE(n > 0);
            reply.append(buf, n);
        }
        CHECK(reply.find("HTTP/1.1 200 OK") != std::string::npos);
    });
}

TEST_CASE("malformed requests get their 4xx and a clean close others do not notice", "[http][server]") {
    with_server(test_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        http::client bystander(local(port));
        auto ok = co_await bystander.get("/");
        CHECK(ok.status == 200);

        const std::string smuggle = co_await raw_exchange(
            port, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        CHECK(smuggle.rfind("HTTP/1.1 400 ", 0) == 0);
        CHECK(smuggle.find("Connection: close") != std::string::npos);
        const std::string big_headers =
            co_await raw_exchange(port, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(10'000, 'b') + "\r\n\r\n");
        CHECK(big_headers.rfind("HTTP/1.1 431 ", 0) == 0);
        const std::string long_url = co_await raw_exchange(port, "GET /" + std::string(10'000, 'u') + " HTTP/1.1\r\n");
        CHECK(long_url.rfind("HTTP/1.1 414 ", 0) == 0);
        const std::string version = co_await raw_exchange(port, "GET / HTTP/2.0\r\nHost: a\r\n\r\n");
        CHECK(version.rfind("HTTP/1.1 505 ", 0) == 0);
        const std::string garbage = co_await raw_exchange(port, std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15));
        CHECK(garbage.rfind("HTTP/1.1 400 ", 0) == 0);

        ok = co_await bystander.get("/users/9");
        CHECK(ok.body == "user 9");
        CHECK(bystander.connections_opened() == 1);
    });
}

TEST_CASE("a slowloris client gets 408 after the header timeout idle keep-alive closes", "[http][server][timeout]") {
    http::server_options o;
    o.header_timeout = 200ms;
    o.idle_timeout = 200ms;
    with_server(test_routes(), o, [](std::uint16_t port, http::server&) -> tandem::task<> {
        const auto start = std::chrono::steady_clock::now();
        auto s = co_await tandem::tcp_stream::connect(local(port));
        co_await s.write_all(std::string_view("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "));
        std::string reply;
        char buf[1024];
        for (;;) { // the head never finishes: wait for the server to give up
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            if (n == 0) break;
            reply.append(buf, n);
        }
        const auto took = std::chrono::steady_clock::now() - start;
        CHECK(reply.rfind("HTTP/1.1 408 ", 0) == 0);
        CHECK(took >= 150ms);
        CHECK(took < 5s);

        http::client c(local(port));
        auto r = co_await c.get("/");
        CHECK(r.status == 200);
        co_await tandem::sleep_for(600ms); // past the idle timeout: the server closes
        r = co_await c.get("/");           // the client notices and reconnects
        CHECK(r.status == 200);
        CHECK(c.connections_opened() == 2);
    });
}

TEST_CASE("a head begun while a handler blocked the loop is not timed out for the loop's stall", "[http][server][timeout]") {
    // The peer began its request in time; the loop could not read it. Time the loop was stalled
    // does not count against the peer's deadlines, including deadlines set from the sweeper's
    // clock right after the stall.
    std::promise<void> blocking;
    std::promise<void> resumed;
    auto loop_blocked = blocking.get_future();
    auto loop_resumed = resumed.get_future();
    http::router r = test_routes();
    r.get("/block", [&blocking](http::request&) -> tandem::task<http::response> {
        blocking.set_value();
        std::this_thread::sleep_for(1500ms); // the defect under test: a handler that blocks the loop
        co_return http::response::text("blocked");
    });
    http::server_options o;
    o.idle_timeout = 500ms;
    o.header_timeout = 500ms;
    with_server(std::move(r), o, [&](std::uint16_t port, http::server& srv) -> tandem::task<> {
        std::string reply;
        std::atomic<bool> peer_done{false};
        std::thread peer([&] {
            const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
            if (connect_loopback(fd, port)) {
                loop_blocked.wait(); // the first half while the loop is stuck, the rest after it
                const std::string_view first = "GET / HTTP/1.1\r\n";
                (void)!::send(fd, first.data(), first.size(), MSG_NOSIGNAL);
                loop_resumed.wait();
                const std::string_view rest = "Host: a\r\nConnection: close\r\n\r\n";
                (void)!::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
                char buf[4096];
                for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) reply.append(buf, static_cast<std::size_t>(n));
            }
            ::close(fd);
            peer_done = true;
        });
        for (int i = 0; i < 5000 && srv.connection_count() == 0; ++i) co_await tandem::sleep_for(1ms);
        const bool accepted = srv.connection_count() == 1;
        http::client c(local(port));
        auto blocked = co_await c.get("/block");
        co_await tandem::sleep_for(100ms); // past two sweeps of the old clock, well within the timeout
        resumed.set_value();
        for (int i = 0; i < 10000 && !peer_done; ++i) co_await tandem::sleep_for(1ms); // the loop serves the peer meanwhile
        peer.join();
        CHECK(accepted);
        CHECK(blocked.status == 200);
        INFO(reply);
        CHECK(reply.rfind("HTTP/1.1 200 ", 0) == 0);
    });
}

TEST_CASE("a slowloris under a loop busy with short steps is still cut near its header timeout", "[http][server][timeout]") {
    // Nothing blocks the loop, but its turns are long (many ready tasks, each a few ms of work):
    // every sweep wakes late. Forgiving each late sweep's lateness again stretched the header
    // timeout by (period + lateness) / period (40 sweeps of 10 ms, each ~100 ms late: ~4 s).
    // A deadline is forgiven the longest stall it lived through, not their sum.
    http::server_options o;
    o.idle_timeout = 40ms; // a 10 ms sweep period
    o.header_timeout = 400ms;
    with_server(test_routes(), o, [](std::uint16_t port, http::server& srv) -> tandem::task<> {
        std::atomic<bool> peer_done{false};
        std::atomic<long long> cut_after_ms{-1};
        bool stop = false;
        auto busy = [&stop]() -> tandem::task<void> {
            while (!stop) {
                const auto until = std::chrono::steady_clock::now() + 4ms;
                while (std::chrono::steady_clock::now() < until) {
                }
                co_await tandem::yield();
            }
        };
        std::vector<tandem::join_handle<void>> load;
        for (int i = 0; i < 25; ++i) load.push_back(tandem::spawn(busy(), "busy"));
        std::thread peer([&] {
            const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
            if (connect_loopback(fd, port)) {
                const auto began = std::chrono::steady_clock::now();
                const std::string_view first = "GET / HTTP/1.1\r\nHost: a\r\n";
                (void)!::send(fd, first.data(), first.size(), MSG_NOSIGNAL);
                // Never finishes the head; wait (bounded by SO_RCVTIMEO) for the server to give up.
                timeval tv{10, 0};
                ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                char buf[4096];
                ssize_t n;
                while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
                }
                if (n == 0)
                    cut_after_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began).count();
            }
            ::close(fd);
            peer_done = true;
        });
        const auto limit = std::chrono::steady_clock::now() + 12s;
        while (!peer_done && std::chrono::steady_clock::now() < limit) co_await tandem::sleep_for(1ms);
        stop = true;
        for (auto& h : load) co_await h;
        peer.join();
        (void)srv;
        INFO("cut after " << cut_after_ms.load() << " ms");
        CHECK(cut_after_ms.load() >= 400);
        CHECK(cut_after_ms.load() < 2500); // 400 ms + one stall (~100-200 ms) + slack for a noisy box
    });
}

TEST_CASE("server timeouts at their extremes mean none", "[http][server][timeout][limits]") {
    http::server_options o;
    o.idle_timeout = std::chrono::milliseconds::max();
    o.header_timeout = std::chrono::milliseconds::max();
    o.io_timeout = std::chrono::milliseconds::max();
    o.body_rate_grace = std::chrono::milliseconds::max();
    with_server(test_routes(), o, [](std::uint16_t port, http::server& srv) -> tandem::task<> {
        http::client c(local(port));
        for (int i = 0; i < 3; ++i) {
            auto r = co_await c.get("/");
            CHECK(r.status == 200);
            auto e = co_await c.post("/echo", std::string(5000, 'x'));
            CHECK(e.status == 200);
            CHECK(e.body.size() == 5000);
            // Idle past a sweep (period 1 s): milliseconds::max() in ns used to wrap to -1 ms.
            if (i == 0) co_await tandem::sleep_for(1300ms);
        }
        CHECK(c.connections_opened() == 1);
        CHECK(srv.stats().timeouts == 0);
    });
}

TEST_CASE("1 000 concurrent keep-alive clients", "[http][server][load]") {
    with_server(test_routes(), {}, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        auto one = [](std::uint16_t p, int i) -> tandem::task<int> {
            http::client c(local(p));
            int ok = 0;
            for (int k = 0; k < 3; ++k) {
                auto r = co_await c.get("/users/" + std::to_string(i));
                if (r.status == 200 && r.body == "user " + std::to_string(i)) ++ok;
            }
            co_return ok;
        };
        std::vector<tandem::task<int>> clients;
        for (int i = 0; i < 1000; ++i) clients.push_back(one(port, i));
        int total = 0;
        for (int ok : co_await tandem::when_all(std::move(clients))) total += ok;
        CHECK(total == 3000);
        CHECK(server.requests_served() >= 3000);
    });
}

TEST_CASE("graceful shutdown finishes requests in flight then serve() returns", "[http][server][shutdown]") {
    tandem::event entered;
    auto main = [](tandem::event& slow_entered) -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(tandem::address("127.0.0.1", 0));
        const std::uint16_t port = listener.local_address().port();
        http::server server(test_routes(&slow_entered));
        auto serving = tandem::spawn(server.serve(listener), "server");
        auto request = [](std::uint16_t p) -> tandem::task<http::client_response> {
            http::client c(local(p));
            co_return co_await c.get("/slow");
        };
        std::vector<tandem::join_handle<http::client_response>> in_flight;
        for (int i = 0; i < 5; ++i) in_flight.push_back(tandem::spawn(request(port)));
        http::client idle(local(port));
        auto first = co_await idle.get("/");
        CHECK(first.status == 200); // an idle keep-alive connection is open
        co_await slow_entered.wait();
        server.shutdown();
        for (auto& h : in_flight) {
            auto r = co_await h;
            CHECK(r.status == 200);
            CHECK(r.body == "slow");
            CHECK(r.header("connection") == "close");
        }
        co_await serving; // returns once the in-flight requests are answered and the idle one closed
        CHECK(server.connection_count() == 0);
        CHECK(server.requests_served() == 6);
    };
    tandem::sync_wait(main(entered));
}

TEST_CASE("max_connections holds further connections in the accept queue", "[http][server]") {
    http::server_options o;
    o.max_connections = 1;
    with_server(test_routes(), o, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        auto first = std::make_unique<http::client>(local(port));
        auto r = co_await first->get("/");
        CHECK(r.status == 200);
        auto second = tandem::spawn([](std::uint16_t p) -> tandem::task<int> {
            http::client c(local(p));
            co_return (co_await c.get("/")).status;
        }(port));
        // Not served while the first connection holds the only slot.
        auto nap = []() -> tandem::task<> { co_await tandem::sleep_for(100ms); };
        auto early = co_await tandem::when_any(nap(), [](tandem::join_handle<int>& h) -> tandem::task<int> {
            co_return co_await h;
        }(second));
        CHECK(early.index() == 0);
        CHECK(server.connection_count() == 1);
        first->close();
        const int status = co_await second;
        CHECK(status == 200);
    });
}

TEST_CASE("a body trickled within io_timeout is cut at min_body_rate with 408 and a steady one passes", "[http][server][timeout]") {
    http::server_options o;
    o.io_timeout = 1s;         // each trickled byte comes well within it
    o.min_body_rate = 100;     // bytes per second
    o.body_rate_grace = 300ms;
    with_server(test_routes(), o, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        { // 10 bytes per second for a 1000-byte body: would take 100 s
            auto s = co_await tandem::tcp_stream::connect(local(port));
            co_await s.write_all(std::string_view("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n"));
            const auto start = std::chrono::steady_clock::now();
            bool answered = false;
            auto trickle = [](tandem::tcp_stream& st, const bool& stop) -> tandem::task<> {
                try {
                    for (int i = 0; i < 1000 && !stop; ++i) {
                        co_await st.write_all(std::string_view("x"));
                        co_await tandem::sleep_for(100ms);
                    }
                } catch (const std::system_error&) { // the server closed: EPIPE or a reset
                }
            };
            auto read_reply = [](tandem::tcp_stream& st, bool& done) -> tandem::task<std::string> {
                http_harness::drained d = co_await http_harness::read_until_close(st);
                done = true;
                co_return d.data;
            };
            auto [ignored, reply] = co_await tandem::with_timeout(20s, tandem::when_all(trickle(s, answered), read_reply(s, answered)));
            (void)ignored;
            const auto took = std::chrono::steady_clock::now() - start;
            INFO(reply);
            CHECK(reply.rfind("HTTP/1.1 408 ", 0) == 0);
            CHECK(took >= 250ms);
            CHECK(took < 5s);
            CHECK(server.stats().timeouts == 1);
        }
        { // 2000 bytes per second: above the minimum, answered
            auto s = co_await tandem::tcp_stream::connect(local(port));
            co_await s.write_all(std::string_view("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"));
            const std::string piece(100, 'y');
            for (int i = 0; i < 10; ++i) {
                co_await tandem::sleep_for(50ms);
                co_await s.write_all(piece);
            }
            const http_harness::drained d = co_await http_harness::read_until_close(s);
            const std::string& reply = d.data;
            CHECK(reply.rfind("HTTP/1.1 200 ", 0) == 0);
            CHECK(reply.ends_with(std::string(1000, 'y')));
        }
    });
}

TEST_CASE("min_body_rate counts the body bytes that came with the head", "[http][server][timeout]") {
    // 1500 bytes per second against a minimum of 1000, sent in one-second bursts, the first
    // with the head: above the rate, so answered (it was cut when the first burst went uncounted).
    http::server_options o;
    o.io_timeout = 5s;
    o.header_timeout = 400ms; // the sweeper looks every 100 ms (it would cut at 0.4 s then)
    o.min_body_rate = 1000;
    o.body_rate_grace = 300ms;
    with_server(test_routes(), o, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        auto s = co_await tandem::tcp_stream::connect(local(port));
        const std::string piece(1500, 'y');
        co_await s.write_all("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4500\r\nConnection: close\r\n\r\n" + piece);
        for (int i = 0; i < 2; ++i) {
            co_await tandem::sleep_for(1s); // the client's pace, not a wait for the server
            co_await s.write_all(piece);
        }
        const http_harness::drained d = co_await tandem::with_timeout(10s, http_harness::read_until_close(s));
        INFO(d.data.substr(0, 200));
        CHECK(d.data.rfind("HTTP/1.1 200 ", 0) == 0);
        CHECK(d.data.ends_with(std::string(4500, 'y')));
        CHECK(server.stats().timeouts == 0);
    });
}

TEST_CASE("OPTIONS * is answered with the server's methods and Allow names a custom method beside GET", "[http][server]") {
    http::router r = test_routes();
    r.route("GE", "/", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ge"); });
    with_server(std::move(r), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        const std::string options = co_await raw_exchange(port, "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        INFO(options);
        CHECK(options.rfind("HTTP/1.1 204 ", 0) == 0);
        CHECK(options.find("\r\nAllow: GET, HEAD, POST, GE, OPTIONS\r\n") != std::string::npos);
        CHECK(options.find("Content-Length") == std::string::npos); // 204: no body, no length
        const std::string absolute = co_await raw_exchange(port, "OPTIONS http://a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        CHECK(absolute.rfind("HTTP/1.1 204 ", 0) == 0); // a proxy's "OPTIONS http://a" is OPTIONS *
        const std::string post = co_await raw_exchange(port, "POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        INFO(post);
        CHECK(post.rfind("HTTP/1.1 405 ", 0) == 0);
        CHECK(post.find("\r\nAllow: GET, HEAD, GE\r\n") != std::string::npos);
        const std::string ge = co_await raw_exchange(port, "GE / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        CHECK(ge.rfind("HTTP/1.1 200 ", 0) == 0);
    });
}

TEST_CASE("the Date header is formatted from fixed English names whatever the locale", "[http][server]") {
    // strftime's %a and %b follow the program's locale; the Date must not (RFC 9110 §5.6.7).
    std::setlocale(LC_ALL, "");
    char out[32];
    CHECK(http::detail::format_http_date(784111777, out) == "Sun, 06 Nov 1994 08:49:37 GMT"); // RFC 9110's example
    CHECK(http::detail::format_http_date(0, out) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(http::detail::format_http_date(951782400, out) == "Tue, 29 Feb 2000 00:00:00 GMT");
    CHECK(http::detail::format_http_date(4102444799, out) == "Thu, 31 Dec 2099 23:59:59 GMT");
    std::setlocale(LC_ALL, "C");
}

TEST_CASE("the Date header is an IMF-fixdate of the current second and follows the clock", "[http][server][redteam]") {
    // Read from std::time (the kernel's coarse clock): it must agree with system_clock to the
    // second and move on each second; an empty, stale or malformed Date would pass a presence test.
    with_server(test_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        http::client c(local(port));
        auto parse = [](std::string_view date) -> std::optional<std::time_t> {
            if (date.size() != 29 || date.substr(25) != " GMT") return std::nullopt;
            std::tm tm{};
            const std::string text(date);
            const char* end = ::strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
            if (end == nullptr || *end != '\0') return std::nullopt;
            return ::timegm(&tm);
        };
        auto r = co_await c.get("/users/1");
        const std::string first(r.header("date"));
        INFO("Date: " << first);
        const auto when = parse(first);
        REQUIRE(when.has_value());
        const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
        CHECK(*when <= now);
        CHECK(*when >= now - 2);
        // Requests until the second turns (each one an event, bounded): the Date moves with it.
        const auto give_up = std::chrono::steady_clock::now() + 3s;
        std::string later = first;
        while (later == first && std::chrono::steady_clock::now() < give_up) {
            r = co_await c.get("/users/1");
            later = std::string(r.header("date"));
        }
        INFO("later Date: " << later);
        const auto moved = parse(later);
        REQUIRE(moved.has_value());
        CHECK(*moved > *when);
    });
}
