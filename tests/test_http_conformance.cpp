// RFC 9110/9112 conformance: one table of requests, each with the status the parser must
// give and the status a live server must answer. A request that goes wrong at a byte
// (`first_bad`) must be refused with nothing after that byte: the parser on that prefix, and
// the server before its header timeout, with only that prefix sent.
#include "tandem/http.hpp"

#include "catch.hpp"
#include "http_harness.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"

#include <array>
#include <chrono>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace http = tandem::http;

namespace {

struct conformance_case {
    const char* rfc;     // where the rule is
    std::string request;
    int parser;          // 0: head (and chunked body) accepted, else the status
    int server;          // the status line the server answers
    int first_bad = -1;  // index of the first byte that cannot continue a valid request
};

std::string h11(std::string_view rest) { return "GET / HTTP/1.1\r\nHost: a\r\n" + std::string(rest) + "\r\n"; }
std::string post_chunked(std::string_view body) {
    return "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(body);
}

std::vector<conformance_case> table() {
    const std::string tls("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
    return {
        // ---- accepted ----------------------------------------------------------------------
        {"9112 3", h11(""), 0, 200},
        {"9112 2.2 empty lines before the request line", "\r\n" + h11(""), 0, 200},
        {"9112 3.2 HTTP/1.0 needs no Host", "GET / HTTP/1.0\r\n\r\n", 0, 200},
        {"9112 3.2.2 absolute-form", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 0, 200},
        {"9110 5.6.3 OWS around a value", "GET / HTTP/1.1\r\nHost: \t a \t\r\n\r\n", 0, 200},
        {"9110 5.5 HTAB and obs-text inside a value", h11("X: a\tb \xe9\r\n"), 0, 200},
        {"9110 5.5 empty value", h11("X:\r\n"), 0, 200},
        {"9110 8.6 identical Content-Length list", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 0, 200},
        {"9112 6.1 chunked (case-insensitive)", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 0, 200},
        {"9112 7.1 hex digits either case", post_chunked("A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"), 0, 200},
        {"9112 7.1.1 extensions: token and quoted values", post_chunked("3;a=b;c=\"x y\\\"z\";d\r\nabc\r\n0\r\n\r\n"), 0, 200},
        {"9112 7.1.1 BWS around ';' and '='", post_chunked("3 ; a = b\r\nabc\r\n0\r\n\r\n"), 0, 200},
        {"9112 7.1.2 trailer fields", post_chunked("3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), 0, 200},
        {"9110 9.3.2 HEAD", "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 200},
        // ---- answered by the router ------------------------------------------------------------
        {"9110 9.1 an unknown method: 501", "BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 501},
        {"9110 9.1 methods are case-sensitive", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 501},
        {"9110 15.5.6 a known method the path lacks: 405", "DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 405},
        {"9110 15.5.5 no such path: 404", "GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n", 0, 404},
        // ---- refused at the first bad byte -------------------------------------------------------
        {"9112 3 a TLS ClientHello on the plain port", tls, 400, 400, 0},
        {"9110 9.1 a method is a token", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, 400, 1},
        {"9112 3 one SP between parts", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, 400, 4},
        {"9112 3.2 no CTL in the target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400, 400, 5},
        {"9112 2.3 HTTP-version shape", "GET / HTTQ/1.1\r\nHost: a\r\n\r\n", 400, 400, 9},
        {"9112 2.3 a version digit", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400, 400, 13},
        {"9112 3 nothing after the version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, 400, 14},
        {"9112 2.2 a bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400, 400, 14},
        {"9112 2.2 a bare CR", "GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n", 400, 400, 24},
        {"9112 2.2 whitespace before the first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, 400, 16},
        {"9112 5.2 obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, 400, 31},
        {"9112 5.1 no whitespace before the colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, 400, 20},
        {"9110 5.1 a field name is a token", "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", 400, 400, 18},
        {"9110 5.1 an empty field name", "GET / HTTP/1.1\r\n: a\r\n\r\n", 400, 400, 16},
        {"9110 5.5 no CTL in a value", "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400, 400, 23},
        {"9110 8.6 Content-Length is digits", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\nab", 400, 400, 47},
        {"9110 8.6 no sign in Content-Length", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, 400, 46},
        // ---- refused once the head is complete ------------------------------------------------------
        {"9112 2.6 HTTP/2.0 on HTTP/1.1: 505", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, 505},
        {"9112 3.2 HTTP/1.1 needs Host", "GET / HTTP/1.1\r\n\r\n", 400, 400},
        {"9112 3.2 exactly one Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 400},
        {"9112 6.1 an empty Transfer-Encoding is not chunked", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n", 400, 400},
        {"9112 6.1 a Transfer-Encoding list of commas only", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n0\r\n\r\n", 400, 400},
        {"9110 8.6 a Content-Length of commas only", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: ,\r\n\r\n", 400, 400},
        {"9110 8.6 an empty Content-Length beside chunked", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: , \r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, 400},
        {"9110 8.6 a Content-Length past 64 bits", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551617\r\n\r\n", 400, 400},
        {"9110 8.6 conflicting Content-Length", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, 400},
        {"9112 6.1 Content-Length with Transfer-Encoding", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, 400},
        {"9112 6.1 chunked must be last", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, 400},
        {"9112 6.1 a coding we do not implement: 501", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, 501},
        {"9112 6.1 no Transfer-Encoding in HTTP/1.0", "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, 400},
        {"9110 15.5.14 a body over the limit: 413", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", 413, 413},
        {"9110 15.5.15 a request line over the limit: 414", "GET /" + std::string(9000, 'u') + " HTTP/1.1\r\nHost: a\r\n\r\n", 414, 414, 8192},
        {"6585 5 a head over the limit: 431", h11("X: " + std::string(9000, 'h') + "\r\n"), 431, 431, 8192},
        // ---- chunk lines exactly as RFC 9112 7.1 writes them ------------------------------------------
        {"9112 7.1 a size is 1*HEXDIG", post_chunked("x\r\n"), 400, 400},
        {"9112 7.1.1 text after the size", post_chunked("2 junk\r\nab\r\n0\r\n\r\n"), 400, 400},
        {"9112 7.1.1 ';' needs a name", post_chunked("2;\r\nab\r\n0\r\n\r\n"), 400, 400},
        {"9112 7.1.1 BWS must lead to ';'", post_chunked("2 \r\nab\r\n0\r\n\r\n"), 400, 400},
        {"9112 7.1.1 a quoted value ends", post_chunked("2;a=\"x\r\nab\r\n0\r\n\r\n"), 400, 400},
        {"9112 7.1.1 '=' needs a value", post_chunked("2;a=\r\nab\r\n0\r\n\r\n"), 400, 400},
        {"9112 7.1 data longer than its size", post_chunked("2\r\nabc\r\n0\r\n\r\n"), 400, 400},
        {"9112 7.1 a size that overflows", post_chunked("fffffffffffffffff\r\n"), 400, 400},
    };
}

int parser_status(std::string_view in) {
    std::array<http::header, 100> storage;
    http::request_head head;
    const auto r = http::parse_request(in, head, storage);
    if (r.state == http::parse_state::error) return r.status;
    if (r.state == http::parse_state::incomplete) return -1;
    if (head.framing == http::body_framing::chunked) {
        http::chunked_decoder d;
        const auto b = d.decode(in.substr(r.head_size), [](std::string_view) {});
        if (b.state == http::parse_state::error) return b.status;
        if (b.state == http::parse_state::incomplete) return -1;
    }
    return 0;
}

} // namespace

TEST_CASE("conformance table through the parser with refusal at the first bad byte", "[http][conformance][parser]") {
    for (const conformance_case& c : table()) {
        INFO(c.rfc);
        CHECK(parser_status(c.request) == c.parser);
        if (c.first_bad >= 0) {
            const auto bad = static_cast<std::size_t>(c.first_bad);
            CHECK(parser_status(std::string_view(c.request).substr(0, bad)) == -1); // still could be valid
            CHECK(parser_status(std::string_view(c.request).substr(0, bad + 1)) == c.parser);
        }
    }
}

namespace {

/// Sends each case to a live server (whole, or one byte per write with the loop turning
/// between them) and checks the status it answers.
void conformance_through_server(bool byte_at_a_time) {
    auto main = [byte_at_a_time]() -> tandem::task<> {
        http::router r;
        r.get("/", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
        r.post("/echo", [](http::request& req) -> tandem::task<http::response> {
            co_return http::response::text(std::string(req.body()));
        });
        auto listener = tandem::tcp_listener::bind(tandem::address("127.0.0.1", 0));
        const std::uint16_t port = listener.local_address().port();
        http::server server(std::move(r)); // header_timeout 10 s: a prompt answer is not a timeout
        auto serving = tandem::spawn(server.serve(listener), "server");
        for (const conformance_case& c : table()) {
            INFO(c.rfc);
            auto s = co_await tandem::tcp_stream::connect(tandem::address("127.0.0.1", port));
            const std::string_view sent =
                c.first_bad >= 0 ? std::string_view(c.request).substr(0, static_cast<std::size_t>(c.first_bad) + 1)
                                 : std::string_view(c.request);
            const std::size_t step = byte_at_a_time ? 1 : sent.size();
            for (std::size_t i = 0; i < sent.size(); i += step) {
                try {
                    co_await s.write_all(sent.substr(i, step));
                } catch (const std::system_error&) { // refused while we were still sending
                    break;
                }
                if (byte_at_a_time) {
                    co_await tandem::yield();
                    co_await tandem::yield();
                }
            }
            auto read_status = [](tandem::tcp_stream& st) -> tandem::task<std::string> {
                std::string reply;
                char buf[4096];
                try {
                    while (reply.find("\r\n") == std::string::npos) {
                        const std::size_t n = co_await st.read_some(std::span<char>(buf));
                        if (n == 0) break;
                        reply.append(buf, n);
                    }
                } catch (const std::system_error&) {
                }
                co_return reply;
            };
            const std::string reply = co_await tandem::with_timeout(3s, read_status(s));
            CHECK(reply.substr(0, 12) == "HTTP/1.1 " + std::to_string(c.server));
        }
        server.shutdown();
        co_await serving;
    };
    tandem::sync_wait(main());
}

} // namespace

TEST_CASE("conformance table through a live server", "[http][conformance][server]") {
    conformance_through_server(false);
}

TEST_CASE("conformance table through a live server a byte at a time", "[http][conformance][server][redteam]") {
    // The head is parsed as its bytes pass, across reads: one byte per write (the loop turning
    // between them) must give every case the answer it gets whole.
    conformance_through_server(true);
}

TEST_CASE("a response to HEAD never carries a body errors included", "[http][conformance][server]") {
    http::router r;
    r.get("/", [](http::request&) -> tandem::task<http::response> { co_return http::response::text("ok"); });
    http_harness::with_server(std::move(r), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        for (const char* request : {"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                                    "HEAD /nowhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                                    "HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
                                    "HEAD / HTTP/1.1\r\n\r\n"}) {
            INFO(request);
            const std::string reply = co_await http_harness::raw_exchange(port, request);
            const std::size_t end = reply.find("\r\n\r\n");
            REQUIRE(end != std::string::npos);
            CHECK(reply.size() == end + 4); // nothing after the head
            CHECK(reply.find("Content-Length: ") != std::string::npos);
        }
    });
}
