// An attacker's and a hurried handler author's view of the server: what a handler puts in a
// response must never let one response bleed into the next (header injection, framing headers
// of its own, interim statuses), and a client that never reads its answers costs bounded memory.
#include "tandem/http.hpp"

#include "catch.hpp"
#include "http_harness.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <system_error>
#include <vector>
#include <stdexcept>
#include <string>

using namespace std::chrono_literals;
namespace http = tandem::http;
using http_harness::raw_exchange;
using http_harness::with_server;

namespace {

std::size_t count(const std::string& haystack, std::string_view needle) {
    std::size_t n = 0;
    for (std::size_t pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + 1)) ++n;
    return n;
}

http::router attack_routes() {
    http::router r;
    r.get("/ok", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    // A redirect built from the query: %0d%0a in it must not become a header of its own.
    r.get("/go", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(302);
        resp.headers.emplace_back("Location", req.query_param("to").value_or("/"));
        co_return resp;
    });
    r.get("/set", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-Echo", req.query_param("v").value_or(""));
        co_return resp;
    });
    r.get("/badname", [](http::request&) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.headers.emplace_back("X Bad", "1");
        co_return resp;
    });
    // A header set (and checked) through set_header, then overwritten in place: the server
    // checks what is sent, not what was once set.
    r.get("/overwrite", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-Echo", "fine");
        resp.headers.back().second = req.query_param("v").value_or("");
        co_return resp;
    });
    r.get("/inserted", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.headers.insert(resp.headers.begin(), {"X-Echo", req.query_param("v").value_or("")});
        co_return resp;
    });
    r.get("/overwrite-name", [](http::request&) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.headers.front().first = "Content Type";
        co_return resp;
    });
    // Framing headers of the handler's own: the server frames, so they cannot disagree.
    r.get("/own-length", [](http::request&) -> tandem::task<http::response> {
        http::response resp(200, "four");
        resp.set_header("Content-Length", "100");
        resp.set_header("Transfer-Encoding", "chunked");
        co_return resp;
    });
    r.get("/status/:code", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response(std::stoi(std::string(req.param("code"))), "x");
    });
    return r;
}

} // namespace

TEST_CASE("response headers cannot be split: CR LF or NUL in a value a bad name answer 500", "[http][attack]") {
    CHECK_THROWS_AS(http::response(200).set_header("Location", "/a\r\nSet-Cookie: x=1"), std::invalid_argument);
    CHECK_THROWS_AS(http::response(200).set_header("X", std::string("a\0b", 3)), std::invalid_argument);
    CHECK_THROWS_AS(http::response(200).set_header("X Y", "1"), std::invalid_argument);
    CHECK_NOTHROW(http::response(200).set_header("X", "a\tb \xe9"));
    with_server(attack_routes(), {}, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        for (const char* target : {"/go?to=/x%0d%0aSet-Cookie:%20evil=1", "/go?to=/x%0aSet-Cookie:%20evil=1",
                                   "/go?to=/x%0dSet-Cookie:%20evil=1", "/go?to=/x%00", "/set?v=a%0d%0a%0d%0aHTTP/1.1%20200",
                                   "/badname", "/overwrite?v=a%0d%0aSet-Cookie:%20evil=1", "/overwrite-name",
                                   "/inserted?v=a%0aSet-Cookie:%20evil=1"}) {
            INFO(target);
            // Pipelined behind a request that is fine: the next answer must be intact.
            const std::string reply = co_await raw_exchange(
                port, "GET " + std::string(target) + " HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            CHECK(reply.rfind("HTTP/1.1 500 ", 0) == 0);
            CHECK(reply.find("evil") == std::string::npos);
            CHECK(count(reply, "HTTP/1.1 ") == 2);
            CHECK(reply.find("HTTP/1.1 200 OK") != std::string::npos);
            CHECK(reply.substr(reply.size() - 4) == "\r\nok");
        }
        CHECK(server.stats().handler_errors == 9);
        const std::string fine = co_await raw_exchange(port, "GET /go?to=/x%09y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        CHECK(fine.rfind("HTTP/1.1 302 ", 0) == 0);
        CHECK(fine.find("Location: /x\ty\r\n") != std::string::npos);
    });
}

TEST_CASE("a handler's own Content-Length or Transfer-Encoding cannot disagree with the body sent", "[http][attack]") {
    with_server(attack_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        const std::string reply = co_await raw_exchange(
            port, "GET /own-length HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        INFO(reply);
        CHECK(count(reply, "Content-Length:") == 2);
        CHECK(reply.find("Content-Length: 4\r\n") != std::string::npos);
        CHECK(reply.find("Transfer-Encoding") == std::string::npos);
        CHECK(count(reply, "HTTP/1.1 200 OK") == 2);
        CHECK(reply.substr(reply.size() - 4) == "\r\nok");
    });
}

TEST_CASE("a handler's status that is not a final 3-digit status answers 500 not an interim response", "[http][attack]") {
    with_server(attack_routes(), {}, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        for (const char* code : {"100", "101", "199", "0", "99", "1000", "-200"}) {
            INFO(code);
            const std::string reply = co_await raw_exchange(
                port, "GET /status/" + std::string(code) +
                          " HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            CHECK(reply.rfind("HTTP/1.1 500 ", 0) == 0);
            CHECK(count(reply, "HTTP/1.1 ") == 2);
            CHECK(reply.substr(reply.size() - 4) == "\r\nok");
        }
        CHECK(server.stats().handler_errors == 7);
        const std::string fine = co_await raw_exchange(port, "GET /status/599 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        CHECK(fine.rfind("HTTP/1.1 599 ", 0) == 0);
    });
}

TEST_CASE("a client that pipelines thousands of requests and never reads costs bounded memory and is cut", "[http][attack][memory]") {
    http::server_options o;
    o.io_timeout = 300ms;
    with_server(attack_routes(), o, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        auto flood = co_await tandem::tcp_stream::connect(http_harness::local(port));
        flood.set_receive_buffer_size(16 * 1024);
        std::string batch;
        for (int i = 0; i < 100'000; ++i) batch += "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"; // 3 MB
        bool cut = false;
        auto writing = tandem::spawn([](tandem::tcp_stream& s, const std::string& b, bool& cut_out) -> tandem::task<> {
            try {
                co_await s.write_all(b);
            } catch (const std::system_error&) {
                cut_out = true; // the server shut the connection
            }
        }(flood, batch, cut), "flood");
        // Meanwhile another client is served (how promptly is the I/O budget's business: the
        // fairness test in test_http_delivery), and the server holds no body memory.
        for (int i = 0; i < 5; ++i) {
            const std::string reply = co_await tandem::with_timeout(
                20s, raw_exchange(port, "GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
            CHECK(reply.rfind("HTTP/1.1 200 ", 0) == 0);
            CHECK(server.stats().body_bytes_held == 0);
            co_await tandem::sleep_for(50ms);
        }
        // The server stops reading while its answers back up, and cuts the connection one
        // io_timeout after the client stopped taking them (the kernel may have swallowed the
        // whole batch by then, so the writer may or may not see the cut).
        co_await tandem::with_timeout(20s, [](tandem::join_handle<void>& h) -> tandem::task<> { co_await h; }(writing));
        co_await tandem::with_timeout(20s, [](http::server& sv) -> tandem::task<> {
            while (sv.stats().timeouts == 0) co_await tandem::sleep_for(10ms);
        }(server));
        INFO("writer saw the cut: " << cut);
        CHECK(server.stats().timeouts == 1);
        CHECK(server.stats().requests < 100'000);
    });
}

TEST_CASE("HEAD to a streamed route: no body the connection stays usable", "[http][attack][head]") {
    http::router r;
    r.get("/stream", [](http::request&) -> tandem::task<http::response> {
        co_return http::response::stream("text/plain", [](http::body_writer& w) -> tandem::task<void> {
            co_await w.write("never sent to HEAD");
        });
    });
    r.get("/ok", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    r.get("/nocontent", [](http::request&) -> tandem::task<http::response> { co_return http::response(204, "dropped"); });
    with_server(std::move(r), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        const std::string reply = co_await raw_exchange(
            port, "HEAD /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /nocontent HTTP/1.1\r\nHost: a\r\n\r\n"
                  "GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        INFO(reply);
        CHECK(count(reply, "HTTP/1.1 ") == 3);
        CHECK(reply.find("never sent") == std::string::npos);
        CHECK(reply.find("dropped") == std::string::npos);
        CHECK(reply.find("Transfer-Encoding") == std::string::npos);
        CHECK(reply.find("HTTP/1.1 204 No Content\r\n") != std::string::npos);
        CHECK(reply.substr(reply.size() - 4) == "\r\nok");
    });
}

TEST_CASE("shutdown with a connection stuck in each phase returns within the drain", "[http][attack][shutdown]") {
    auto main = []() -> tandem::task<> {
        tandem::event entered;
        http::router r;
        r.get("/forever", [&entered](http::request&) -> tandem::task<http::response> {
            entered.set();
            co_await tandem::sleep_for(std::chrono::hours(1));
            co_return http::response::text("never");
        });
        r.get("/big", [](http::request&) -> tandem::task<http::response> {
            co_return http::response::text(std::string(8 << 20, 'b'));
        });
        r.post("/echo", [](http::request& req) -> tandem::task<http::response> {
            co_return http::response::text(std::string(req.body()));
        });
        http::server_options o;
        o.drain_timeout = 300ms;
        o.header_timeout = o.io_timeout = o.idle_timeout = 30s;
        auto listener = tandem::tcp_listener::bind(tandem::address("127.0.0.1", 0));
        const std::uint16_t port = listener.local_address().port();
        http::server server(std::move(r), o);
        auto serving = tandem::spawn(server.serve(listener), "server");
        std::vector<tandem::tcp_stream> clients;
        for (const char* sent : {"GET /forever HTTP/1.1\r\nHo",                                   // head
                                 "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123", // body
                                 "GET /forever HTTP/1.1\r\nHost: a\r\n\r\n",                      // handler
                                 "GET /big HTTP/1.1\r\nHost: a\r\n\r\n",                          // write, never read
                                 ""}) {                                                            // idle
            clients.push_back(co_await tandem::tcp_stream::connect(http_harness::local(port)));
            clients.back().set_receive_buffer_size(16 * 1024);
            if (*sent) co_await clients.back().write_all(std::string_view(sent));
        }
        co_await entered.wait();
        while (server.connection_count() < 5) co_await tandem::sleep_for(5ms);
        const auto start = std::chrono::steady_clock::now();
        server.shutdown();
        co_await tandem::with_timeout(5s, [](tandem::join_handle<void>& h) -> tandem::task<> { co_await h; }(serving));
        const auto took = std::chrono::steady_clock::now() - start;
        CHECK(took < 3s);
        CHECK(server.connection_count() == 0);
        CHECK(server.stats().body_bytes_held == 0);
    };
    tandem::sync_wait(main());
}

TEST_CASE("a NUL bare CR or bare LF put anywhere in a head or a chunk line is refused", "[http][attack][parser]") {
    const std::string requests[] = {
        "GET /a?b=c HTTP/1.1\r\nHost: a\r\nX-Long: " + std::string(300, 'v') + "\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://a/p HTTP/1.0\r\n\r\n",
    };
    std::array<http::header, 100> storage;
    for (const std::string& valid : requests) {
        http::request_head head;
        REQUIRE(http::parse_request(valid, head, storage).state == http::parse_state::complete);
        for (const char bad : {'\0', '\r', '\n'}) {
            for (std::size_t i = 0; i < valid.size(); ++i) {
                if (valid[i] == bad) continue;
                // Replaced (a CR before its LF, an LF after its CR, stay valid line ends).
                if ((bad == '\r' && valid[i] == '\n') || (bad == '\n' && valid[i] == '\r')) continue;
                std::string mutated = valid;
                mutated[i] = bad;
                INFO("byte " << i << " of " << valid << " became " << int(bad));
                CHECK(http::parse_request(mutated, head, storage).state != http::parse_state::complete);
            }
        }
    }
    const std::string chunked = "5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n";
    for (std::size_t i = 0; i < chunked.size(); ++i) {
        if (i >= 7 && i < 12) continue; // chunk data may hold any byte
        std::string mutated = chunked;
        mutated[i] = '\0';
        http::chunked_decoder d;
        INFO("chunk byte " << i);
        CHECK(d.decode(mutated, [](std::string_view) {}).state == http::parse_state::error);
    }
}

TEST_CASE("the client refuses a target or header that would smuggle a second request", "[http][attack][client]") {
    with_server(attack_routes(), {}, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        http::client c(http_harness::local(port));
        std::vector<std::string> targets;
        targets.emplace_back("/ok HTTP/1.1\r\nHost: a\r\n\r\nGET /ok");
        targets.emplace_back("/ok\n");
        targets.emplace_back("/o k");
        targets.emplace_back("/ok\0", 4);
        targets.emplace_back();
        for (const std::string& target : targets) {
            INFO(target);
            bool refused = false;
            try {
                (void)co_await c.get(target);
            } catch (const std::invalid_argument&) {
                refused = true;
            }
            CHECK(refused);
        }
        bool refused = false;
        try {
            std::vector<std::pair<std::string, std::string>> headers;
            headers.emplace_back("X", "1\r\nContent-Length: 9");
            (void)co_await c.request("GET", "/ok", {}, std::move(headers));
        } catch (const std::invalid_argument&) {
            refused = true;
        }
        CHECK(refused);
        refused = false;
        try {
            (void)co_await c.request("GE T", "/ok");
        } catch (const std::invalid_argument&) {
            refused = true;
        }
        CHECK(refused);
        CHECK(server.stats().requests == 0);
        CHECK(c.connections_opened() == 0);
        const auto fine = co_await c.get("/ok");
        CHECK(fine.status == 200);
    });
}

TEST_CASE("a response that closes the connection arrives whole though the client pipelined more", "[http][attack][close]") {
    http::router r;
    r.get("/big", [](http::request&) -> tandem::task<http::response> {
        co_return http::response::text(std::string(4 << 20, 'b'));
    });
    r.get("/ok", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    with_server(std::move(r), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        auto s = co_await tandem::tcp_stream::connect(http_harness::local(port));
        s.set_receive_buffer_size(16 * 1024);
        std::string sent = "GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        for (int i = 0; i < 3000; ++i) sent += "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"; // 90 KB more, never answered
        co_await s.write_all(sent);
        co_await tandem::sleep_for(300ms); // let the server finish writing into its buffer and close
        const http_harness::drained got = co_await http_harness::read_until_close(s);
        const std::string& reply = got.data;
        CHECK_FALSE(got.reset);
        const std::size_t head_end = reply.find("\r\n\r\n");
        REQUIRE(head_end != std::string::npos);
        CHECK(reply.size() - head_end - 4 == (4u << 20));
        CHECK(count(reply, "HTTP/1.1 ") == 1);
    });
}

TEST_CASE("absolute-form targets: the query survives without a path an empty authority is refused", "[http][attack][parser]") {
    std::array<http::header, 100> storage;
    http::request_head head;
    REQUIRE(http::parse_request("GET http://a?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", head, storage).state ==
            http::parse_state::complete);
    CHECK(head.path == "/");
    CHECK(head.query == "x=1");
    REQUIRE(http::parse_request("GET HTTP://a/p/q?y HTTP/1.1\r\nHost: a\r\n\r\n", head, storage).state ==
            http::parse_state::complete);
    CHECK(head.path == "/p/q");
    CHECK(head.query == "y");
    REQUIRE(http::parse_request("GET http://a HTTP/1.1\r\nHost: a\r\n\r\n", head, storage).state == http::parse_state::complete);
    CHECK(head.path == "/");
    CHECK(head.query.empty());
    for (const char* bad : {"GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", "GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n",
                            "GET http://?q HTTP/1.1\r\nHost: a\r\n\r\n"}) {
        INFO(bad);
        const auto r = http::parse_request(bad, head, storage);
        CHECK(r.state == http::parse_state::error);
        CHECK(r.status == 400);
    }
}

// The decision, pinned: FIN while a handler runs means "gone" (a closed and a half-closed
// client look the same on the wire; Go and nginx decide the same). A client that half-closes
// after sending and still wants its answers turns cancel_on_disconnect off.
TEST_CASE("a half-close while a handler runs cancels it unless cancel_on_disconnect is off", "[http][attack][cancel]") {
    for (const bool cancel : {true, false}) {
        http::router r;
        r.get("/slow", [](http::request&) -> tandem::task<http::response> {
            co_await tandem::sleep_for(100ms);
            co_return http::response::text("slow");
        });
        http::server_options o;
        o.cancel_on_disconnect = cancel;
        with_server(std::move(r), o, [cancel](std::uint16_t port, http::server& server) -> tandem::task<> {
            const std::string reply = co_await tandem::with_timeout(
                3s, raw_exchange(port, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHost: a\r\n\r\n", true));
            INFO("cancel_on_disconnect " << cancel);
            if (cancel) {
                CHECK(reply.empty());
                CHECK(server.stats().clients_gone == 1);
            } else {
                CHECK(count(reply, "HTTP/1.1 200 OK") == 2);
                CHECK(server.stats().clients_gone == 0);
            }
        });
    }
}

TEST_CASE("a streamed body whose handler throws is cut short visibly and reported", "[http][attack][observe]") {
    http::router r;
    r.get("/stream", [](http::request&) -> tandem::task<http::response> {
        co_return http::response::stream("text/plain", [](http::body_writer& w) -> tandem::task<void> {
            co_await w.write("first ");
            throw std::runtime_error("stream bug");
        });
    });
    r.get("/ok", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    auto heard = std::make_shared<std::string>();
    http::server_options o;
    o.on_error = [heard](const http::handler_error& e) { *heard = e.describe(); };
    with_server(std::move(r), o, [heard](std::uint16_t port, http::server& server) -> tandem::task<> {
        const std::string reply = co_await raw_exchange(
            port, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n");
        INFO(reply);
        CHECK(reply.find("6\r\nfirst \r\n") != std::string::npos);
        CHECK(reply.find("0\r\n\r\n") == std::string::npos); // no last chunk: the client knows it is cut
        CHECK(count(reply, "HTTP/1.1 ") == 1);
        CHECK(server.stats().handler_errors == 1);
        CHECK(heard->find("GET /stream") != std::string::npos);
        CHECK(heard->find("stream bug") != std::string::npos);
    });
}

TEST_CASE("after a large body the connection gives its memory back though more requests are buffered", "[http][attack][memory]") {
    http::router r;
    r.post("/size", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text(std::to_string(req.body().size()));
    });
    r.get("/ok", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    with_server(std::move(r), {}, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        auto s = co_await tandem::tcp_stream::connect(http_harness::local(port));
        const std::size_t size = 4u << 20;
        std::string sent = "POST /size HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n";
        sent += std::string(size, 'x');
        sent += "GET /ok HTTP/1.1\r\nHo"; // a slow next request, pipelined behind the upload
        co_await s.write_all(sent);
        std::string reply;
        char buf[4096];
        while (reply.find("\r\n\r\n4194304") == std::string::npos) {
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            REQUIRE(n != 0);
            reply.append(buf, n);
        }
        CHECK(server.stats().body_bytes_held == 0);
        co_await s.write_all(std::string_view("st: a\r\nConnection: close\r\n\r\n"));
        const http_harness::drained rest = co_await http_harness::read_until_close(s);
        CHECK(rest.data.substr(rest.data.size() - 4) == "\r\nok");
    });
}

namespace {

/// Handlers that first set a header through set_header (so it is checked and remembered as
/// checked), then change the list through another path, with the query's `v` (decoded: it
/// may carry CR LF) or a name that is not a token. The server must look again.
std::string query_v(http::request& req) { return req.query_param("v").value_or(""); }

http::router rewrite_routes() {
    http::router r;
    r.get("/ok", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    // A checked value moved into the name's slot: fine as a value, not a token.
    r.get("/value-as-name", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", req.query_param("v").value_or(""));
        auto& [name, value] = resp.headers.back();
        name = value;
        co_return resp;
    });
    r.get("/swap-texts", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", req.query_param("v").value_or(""));
        std::swap(resp.headers.back().first, resp.headers.back().second);
        co_return resp;
    });
    r.get("/index", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", "fine");
        resp.headers[1] = {"X-A", query_v(req)};
        co_return resp;
    });
    r.get("/iterator", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", "fine");
        (resp.headers.begin() + 1)->second = query_v(req);
        co_return resp;
    });
    r.get("/push-spilled", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        for (int i = 0; i < 7; ++i) resp.set_header("X-" + std::to_string(i), "fine");
        resp.headers.push_back({"X-Last", query_v(req)});
        co_return resp;
    });
    r.get("/insert-spilled", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        for (int i = 0; i < 7; ++i) resp.set_header("X-" + std::to_string(i), "fine");
        resp.headers.insert(resp.headers.begin() + 3, {"X-Mid", query_v(req)});
        co_return resp;
    });
    // Erasing shifts an unchecked header into a slot a checked one held.
    r.get("/erase-shift", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", "fine");
        resp.headers.emplace_back("X-B", query_v(req));
        resp.headers.erase(resp.headers.begin() + 1);
        co_return resp;
    });
    r.get("/sorted", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        for (int i = 0; i < 6; ++i) resp.set_header("X-" + std::to_string(9 - i), "fine");
        resp.headers.emplace_back("X-0", query_v(req));
        std::sort(resp.headers.begin(), resp.headers.end());
        co_return resp;
    });
    r.get("/swap-lists", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        http::header_list other{{"X-Other", query_v(req)}};
        resp.headers.swap(other);
        co_return resp;
    });
    r.get("/swap-spilled", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        http::header_list other;
        for (int i = 0; i < 9; ++i) other.emplace_back("X-" + std::to_string(i), i == 8 ? query_v(req) : "fine");
        swap(resp.headers, other);
        co_return resp;
    });
    r.get("/from-vector", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", "fine");
        resp.headers = std::vector<std::pair<std::string, std::string>>{{"Content-Type", "text/plain"}, {"X-A", query_v(req)}};
        co_return resp;
    });
    r.get("/copy-response", [](http::request& req) -> tandem::task<http::response> {
        http::response other(200, "other");
        other.headers.emplace_back("X-A", query_v(req));
        http::response resp = http::response::text("body");
        resp = other;
        co_return resp;
    });
    r.get("/emplace-at", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", "fine");
        resp.headers.emplace(resp.headers.begin() + 1, "X-B", query_v(req));
        co_return resp;
    });
    r.get("/range-insert", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", "fine");
        const std::vector<std::pair<std::string, std::string>> more = {{"X-B", "fine"}, {"X-C", query_v(req)}};
        resp.headers.insert(resp.headers.begin(), more.begin(), more.end());
        resp.headers.insert(resp.headers.end(), resp.headers.begin(), resp.headers.begin() + 2); // its own, checked and not
        co_return resp;
    });
    r.get("/moved-text", [](http::request& req) -> tandem::task<http::response> {
        http::response resp(200, "body");
        resp.set_header("X-A", "fine");
        http::header_list other{{"X-B", query_v(req)}};
        resp.headers.back().second = std::move(other.back().second);
        co_return resp;
    });
    return r;
}

} // namespace

TEST_CASE("a checked header changed through any path of the list is checked again by the server", "[http][attack][header_list]") {
    http::server_options o;
    o.on_error = [](const http::handler_error&) {}; // counted in handler_errors below
    with_server(rewrite_routes(), o, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        const std::vector<std::string> paths = {"/index", "/iterator", "/push-spilled", "/insert-spilled", "/erase-shift",
                                                "/sorted", "/swap-lists", "/swap-spilled", "/from-vector", "/copy-response",
                                                "/moved-text", "/emplace-at", "/range-insert"};
        const std::vector<std::string> values = {"a%0d%0aSet-Cookie:%20evil=1", "%0aevil", "evil%00",
                                                 std::string(30, 'x') + "%0d%0aevil"};
        std::uint64_t errors = 0;
        // Each value at the sizes that change a text's form: in place (up to 23), on the heap.
        for (const std::string& path : paths) {
            for (const std::string& v : values) {
                const std::string target = path + "?v=" + v;
                INFO(target);
                const std::string reply = co_await raw_exchange(
                    port, "GET " + target + " HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
                ++errors;
                CHECK(reply.rfind("HTTP/1.1 500 ", 0) == 0);
                CHECK(reply.find("evil") == std::string::npos);
                CHECK(count(reply, "HTTP/1.1 ") == 2);
                CHECK(reply.substr(reply.size() - 4) == "\r\nok");
            }
            // The same path with a harmless value is served as the handler built it.
            const std::string reply = co_await raw_exchange(port, "GET " + path + "?v=fine%20too HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            INFO(path << ": " << reply);
            CHECK(reply.rfind("HTTP/1.1 200 ", 0) == 0);
            CHECK(reply.find("fine too\r\n") != std::string::npos);
        }
        // A valid value is no valid name, however it got into the name's slot.
        for (const char* path : {"/value-as-name", "/swap-texts"}) {
            INFO(path);
            const std::string reply = co_await raw_exchange(
                port, std::string("GET ") + path + "?v=a%20b HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            ++errors;
            CHECK(reply.rfind("HTTP/1.1 500 ", 0) == 0);
            CHECK(reply.find("a b") == std::string::npos);
            CHECK(reply.substr(reply.size() - 4) == "\r\nok");
        }
        CHECK(server.stats().handler_errors == errors);
    });
}

namespace {

http::router reuse_routes() {
    http::router r;
    r.get("/ok", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    // Headers in place and spilled, one heap text, and a body the next answers must not carry.
    r.get("/many", [](http::request&) -> tandem::task<http::response> {
        http::response resp(200, "secret-body-" + std::string(100, 's'));
        for (int i = 0; i < 10; ++i) resp.set_header("X-Leak-" + std::to_string(i), std::string(i * 5, 'L'));
        co_return resp;
    });
    r.get("/throws", [](http::request&) -> tandem::task<http::response> {
        http::response resp(200, "thrown-body");
        for (int i = 0; i < 6; ++i) resp.set_header("X-Thrown-" + std::to_string(i), "t");
        if (!resp.headers.empty()) throw std::runtime_error("after setting headers");
        co_return resp;
    });
    r.get("/nocontent", [](http::request&) -> tandem::task<http::response> {
        http::response resp(204, "dropped-204");
        resp.set_header("X-Own", "204");
        co_return resp;
    });
    r.get("/notmodified", [](http::request&) -> tandem::task<http::response> {
        http::response resp(304, "dropped-304");
        resp.set_header("X-Own", "304");
        co_return resp;
    });
    r.get("/stream", [](http::request&) -> tandem::task<http::response> {
        http::response resp = http::response::stream("text/event-stream", [](http::body_writer& w) -> tandem::task<void> {
            co_await w.write("streamed-part");
        });
        for (int i = 0; i < 5; ++i) resp.set_header("X-Stream-" + std::to_string(i), "s");
        co_return resp;
    });
    r.get("/stream-fails", [](http::request&) -> tandem::task<http::response> {
        http::response resp = http::response::stream("text/plain", [](http::body_writer& w) -> tandem::task<void> {
            co_await w.write("half");
            throw std::runtime_error("mid-body");
        });
        for (int i = 0; i < 5; ++i) resp.set_header("X-Cut-" + std::to_string(i), "c");
        co_return resp;
    });
    return r;
}

/// The answers in a pipelined reply, split at each status line.
std::vector<std::string> split_answers(const std::string& reply) {
    std::vector<std::string> out;
    std::size_t at = reply.find("HTTP/1.1 ");
    while (at != std::string::npos) {
        const std::size_t next = reply.find("HTTP/1.1 ", at + 1);
        out.push_back(reply.substr(at, next == std::string::npos ? std::string::npos : next - at));
        at = next;
    }
    return out;
}

} // namespace

TEST_CASE("a response reused from the workspace carries no header or body into the next answer", "[http][attack][header_list]") {
    http::server_options o;
    o.on_error = [](const http::handler_error&) {}; // the throwing handlers are expected
    with_server(reuse_routes(), o, [](std::uint16_t port, http::server&) -> tandem::task<> {
        const std::string get = " HTTP/1.1\r\nHost: a\r\n\r\n";
        const std::string reply = co_await raw_exchange(
            port, "GET /many" + get + "GET /throws" + get + "HEAD /many" + get + "GET /nocontent" + get + "GET /many" + get +
                      "GET /notmodified" + get + "GET /stream" + get + "GET /missing" + get + "OPTIONS /many" + get +
                      "DELETE /many" + get + "GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        const std::vector<std::string> answers = split_answers(reply);
        INFO(reply);
        REQUIRE(answers.size() == 11);
        CHECK(count(reply, "secret-body") == 2); // the two GETs of /many, not HEAD's
        CHECK(reply.find("thrown") == std::string::npos);
        CHECK(reply.find("X-Thrown") == std::string::npos);
        CHECK(reply.find("dropped") == std::string::npos);
        CHECK(count(reply, "X-Own") == 2);
        CHECK(count(reply, "X-Stream-") == 5);
        for (std::size_t i : {0, 2, 4}) {
            INFO("answer " << i);
            for (int h = 0; h < 10; ++h)
                CHECK(count(answers[i], "X-Leak-" + std::to_string(h) + ": " + std::string(h * 5, 'L') + "\r\n") == 1);
        }
        for (std::size_t i : {1, 3, 5, 6, 7, 8, 9, 10}) {
            INFO("answer " << i);
            CHECK(answers[i].find("X-Leak") == std::string::npos);
            CHECK(answers[i].find("secret") == std::string::npos);
            CHECK(count(answers[i], "Content-Type") <= 1);
            CHECK(count(answers[i], "Date:") == 1);
        }
        CHECK(answers[1].rfind("HTTP/1.1 500 ", 0) == 0);
        CHECK(answers[3].rfind("HTTP/1.1 204 ", 0) == 0);
        CHECK(answers[5].rfind("HTTP/1.1 304 ", 0) == 0);
        CHECK(answers[6].find("streamed-part") != std::string::npos);
        CHECK(answers[7].rfind("HTTP/1.1 404 ", 0) == 0);
        CHECK(answers[8].rfind("HTTP/1.1 405 ", 0) == 0); // no OPTIONS route
        CHECK(count(answers[8], "Allow: ") == 1);
        CHECK(answers[9].rfind("HTTP/1.1 405 ", 0) == 0);
        CHECK(count(answers[9], "Allow: ") == 1);
        CHECK(answers[10].rfind("HTTP/1.1 200 ", 0) == 0);
        CHECK(answers[10].substr(answers[10].size() - 4) == "\r\nok");
        // A workspace given back by a connection cut short (a stream that failed mid-body, a
        // client gone) serves the next connection clean.
        for (int round = 0; round < 3; ++round) {
            const std::string cut = co_await raw_exchange(port, "GET /stream-fails" + get);
            CHECK(cut.find("X-Cut-4: c\r\n") != std::string::npos);
            CHECK(cut.find("0\r\n\r\n") == std::string::npos); // no last chunk: cut short
            {
                auto gone = co_await tandem::tcp_stream::connect(http_harness::local(port));
                co_await gone.write_all("GET /many" + get);
            }
            const std::string next = co_await raw_exchange(port, "GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            INFO(next);
            CHECK(next.find("X-") == std::string::npos);
            CHECK(next.substr(next.size() - 4) == "\r\nok");
        }
    });
}

TEST_CASE("a response with thousands of headers and a megabyte value is sent whole and leaves nothing behind", "[http][attack][header_list]") {
    http::router r;
    r.get("/ok", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    r.get("/huge", [](http::request&) -> tandem::task<http::response> {
        http::response resp(200, "huge");
        for (int i = 0; i < 5000; ++i) resp.headers.emplace_back("X-H" + std::to_string(i), std::to_string(i)); // unchecked
        resp.set_header("X-Mega", std::string(1 << 20, 'm'));
        co_return resp;
    });
    r.get("/huge-bad", [](http::request&) -> tandem::task<http::response> {
        http::response resp(200, "huge");
        for (int i = 0; i < 5000; ++i) resp.set_header(i % 2 ? "X-A" : "X-B", std::to_string(i));
        resp.headers.emplace_back("X-Mega", std::string(1 << 20, 'm') + "\n" + "evil");
        co_return resp;
    });
    http::server_options o;
    o.on_error = [](const http::handler_error&) {};
    with_server(std::move(r), o, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        const std::string get = " HTTP/1.1\r\nHost: a\r\n\r\n";
        const std::string reply = co_await raw_exchange(
            port, "GET /huge" + get + "GET /huge-bad" + get + "GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        const std::vector<std::string> answers = split_answers(reply);
        REQUIRE(answers.size() == 3);
        CHECK(count(answers[0], "\r\nX-H") == 5000);
        CHECK(answers[0].find("\r\nX-H4999: 4999\r\n") != std::string::npos);
        CHECK(answers[0].find("X-Mega: " + std::string(1 << 20, 'm') + "\r\n") != std::string::npos);
        CHECK(answers[1].rfind("HTTP/1.1 500 ", 0) == 0);
        CHECK(answers[1].find("evil") == std::string::npos);
        CHECK(answers[1].size() < 1000);
        CHECK(answers[2].size() < 1000);
        CHECK(answers[2].substr(answers[2].size() - 4) == "\r\nok");
        CHECK(server.stats().handler_errors == 1);
    });
}
