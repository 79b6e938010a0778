#include "tandem/http/parser.hpp"

#include "catch.hpp"

#include <array>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

using tandem::http::body_framing;
using tandem::http::parse_state;

namespace {

/// Copies `text` so that it ends exactly where an unreadable page begins: a parser that
/// reads one byte too far crashes instead of passing by luck.
class guarded_input {
public:
    explicit guarded_input(std::string_view text) {
        const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
        m_pages = (text.size() + page - 1) / page + 1;
        m_size = m_pages * page;
        void* p = ::mmap(nullptr, m_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(p != MAP_FAILED);
        m_base = static_cast<char*>(p);
        REQUIRE(::mprotect(m_base + m_size - page, page, PROT_NONE) == 0);
        char* start = m_base + m_size - page - text.size();
        std::memcpy(start, text.data(), text.size());
        m_view = std::string_view(start, text.size());
    }
    guarded_input(const guarded_input&) = delete;
    guarded_input& operator=(const guarded_input&) = delete;
    ~guarded_input() { ::munmap(m_base, m_size); }
    std::string_view view() const { return m_view; }

private:
    char* m_base = nullptr;
    std::size_t m_pages = 0;
    std::size_t m_size = 0;
    std::string_view m_view;
};

struct parsed {
    tandem::http::parse_result result;
    tandem::http::request_head head;
    std::array<tandem::http::header, 100> storage;
};

/// Parses `text` against a guard page, and every proper prefix of it too: each prefix of a
/// valid request must be "incomplete" (or the same error), never a crash or a different answer.
parse_state parse_all_prefixes(std::string_view text, parsed& out, const tandem::http::limits& lim = {}) {
    for (std::size_t n = 0; n < text.size(); ++n) {
        guarded_input in(text.substr(0, n));
        parsed p;
        p.result = tandem::http::parse_request(in.view(), p.head, p.storage, lim);
        if (p.result.state == parse_state::complete) {
            FAIL("a prefix of " << n << " bytes parsed as complete");
        }
    }
    guarded_input in(text);
    out.result = tandem::http::parse_request(in.view(), out.head, out.storage, lim);
    // Views point into the guarded copy, which dies here: copy what the checks need.
    return out.result.state;
}

struct error_case {
    const char* what;
    std::string request;
    int status;
};

} // namespace

TEST_CASE("a simple GET parses into views of the buffer", "[http][parser]") {
    const std::string text = "GET /users/7?sort=asc&x=1 HTTP/1.1\r\nHost: example.com\r\nAccept:  */* \r\n\r\nrest";
    std::array<tandem::http::header, 100> storage;
    tandem::http::request_head head;
    const auto r = tandem::http::parse_request(text, head, storage);
    REQUIRE(r.state == parse_state::complete);
    CHECK(r.head_size == text.size() - 4);
    CHECK(head.method == "GET");
    CHECK(head.target == "/users/7?sort=asc&x=1");
    CHECK(head.path == "/users/7");
    CHECK(head.query == "sort=asc&x=1");
    CHECK(head.version == 11);
    CHECK(head.keep_alive);
    CHECK(head.framing == body_framing::none);
    REQUIRE(head.headers.size() == 2);
    CHECK(head.find("accept") == "*/*"); // OWS trimmed, name case-insensitive
    CHECK(head.find("HOST") == "example.com");
    CHECK(head.find("missing").empty());
}

TEST_CASE("every prefix of valid requests is incomplete the whole is complete", "[http][parser]") {
    const std::vector<std::string> valid = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /old HTTP/1.0\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://example.com/abs?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "\r\nGET /after-empty-line HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
    };
    for (const std::string& text : valid) {
        INFO(text);
        parsed p;
        CHECK(parse_all_prefixes(text, p) == parse_state::complete);
    }
}

TEST_CASE("an absolute-form OPTIONS with an empty path asks about the server as asterisk-form does", "[http][parser]") {
    std::array<tandem::http::header, 8> storage;
    tandem::http::request_head head;
    REQUIRE(tandem::http::parse_request("OPTIONS http://example.com:8001 HTTP/1.1\r\nHost: example.com\r\n\r\n", head, storage)
                .state == parse_state::complete);
    CHECK(head.path == "*");
    REQUIRE(tandem::http::parse_request("OPTIONS http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", head, storage)
                .state == parse_state::complete);
    CHECK(head.path == "/");
    REQUIRE(tandem::http::parse_request("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", head, storage)
                .state == parse_state::complete);
    CHECK(head.path == "/");
}

TEST_CASE("framing and keep-alive rules", "[http][parser]") {
    std::array<tandem::http::header, 100> storage;
    tandem::http::request_head head;
    auto parse = [&](std::string_view text) { return tandem::http::parse_request(text, head, storage); };

    REQUIRE(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").state == parse_state::complete);
    CHECK(head.framing == body_framing::content_length);
    CHECK(head.content_length == 12);

    REQUIRE(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n").state ==
            parse_state::complete); // identical duplicates are allowed
    CHECK(head.content_length == 3);

    REQUIRE(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").state == parse_state::complete);
    CHECK(head.framing == body_framing::chunked);

    REQUIRE(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").state == parse_state::complete);
    CHECK_FALSE(head.keep_alive);
    REQUIRE(parse("GET / HTTP/1.0\r\n\r\n").state == parse_state::complete);
    CHECK_FALSE(head.keep_alive);
    CHECK(head.version == 10);
    REQUIRE(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").state == parse_state::complete);
    CHECK(head.keep_alive);
    REQUIRE(parse("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n").state ==
            parse_state::complete);
    CHECK(head.expect_continue);
    REQUIRE(parse("GET http://h/x/y?z HTTP/1.1\r\nHost: h\r\n\r\n").state == parse_state::complete);
    CHECK(head.path == "/x/y");
    CHECK(head.query == "z");
}

TEST_CASE("malformed and smuggling-prone requests get the right 4xx/5xx", "[http][parser][smuggling]") {
    const std::string long_target(9000, 'a');
    const std::vector<error_case> cases = {
        {"CL and TE together", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"TE and CL together", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
        {"conflicting Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"conflicting list Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400},
        {"signed Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400},
        {"hex Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400},
        {"empty Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400},
        {"overflowing Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
        {"obsolete line folding", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400},
        {"whitespace before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400},
        {"tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", 400},
        {"invalid header name", "GET / HTTP/1.1\r\nHost: a\r\nX@A: b\r\n\r\n", 400},
        {"empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400},
        {"no colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400},
        {"control character in value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01\r\n\r\n"), 400},
        {"NUL in value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX-A: b", 32) + std::string(1, '\0') + "\r\n\r\n", 400},
        {"bare LF line end", "GET / HTTP/1.1\nHost: a\n\n", 400},
        {"bare CR in a header", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400},
        {"invalid method token", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"relative target", "GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"absolute-form with a bogus scheme", "GET #x://h/p HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"absolute-form without authority", "GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
        {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
        {"HTTP/0.9 style", "GET / HTTP/0.9\r\n\r\n", 505},
        {"unknown transfer coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"chunked not last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
        {"chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400},
        {"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
        {"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"asterisk outside OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 501},
        {"request line too long", "GET /" + long_target + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
        {"body over the limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n", 413},
    };
    for (const error_case& c : cases) {
        INFO(c.what);
        parsed p;
        guarded_input in(c.request);
        p.result = tandem::http::parse_request(in.view(), p.head, p.storage);
        CHECK(p.result.state == parse_state::error);
        CHECK(p.result.status == c.status);
        CHECK_FALSE(p.result.reason.empty());
    }
}

TEST_CASE("head and header-count limits give 431", "[http][parser]") {
    std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < 101; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
    many += "\r\n";
    parsed p;
    guarded_input in(many);
    p.result = tandem::http::parse_request(in.view(), p.head, p.storage);
    CHECK(p.result.status == 431);

    std::string big = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(9000, 'v') + "\r\n\r\n";
    guarded_input in2(big);
    p.result = tandem::http::parse_request(in2.view(), p.head, p.storage);
    CHECK(p.result.status == 431);

    // An unterminated head is refused as soon as it passes the limit, not at the end.
    std::string unterminated = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(9000, 'v');
    guarded_input in3(unterminated);
    p.result = tandem::http::parse_request(in3.view(), p.head, p.storage);
    CHECK(p.result.status == 431);

    tandem::http::limits small;
    small.max_headers = 2;
    guarded_input in4("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n");
    p.result = tandem::http::parse_request(in4.view(), p.head, p.storage, small);
    CHECK(p.result.status == 431);
}

TEST_CASE("pipelined requests parse one after another", "[http][parser]") {
    const std::string text = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\n";
    std::array<tandem::http::header, 100> storage;
    tandem::http::request_head head;
    std::string_view rest = text;
    std::vector<std::string> paths;
    for (;;) {
        const auto r = tandem::http::parse_request(rest, head, storage);
        if (r.state != parse_state::complete) {
            CHECK(r.state == parse_state::incomplete);
            break;
        }
        paths.emplace_back(head.path);
        rest.remove_prefix(r.head_size);
    }
    CHECK(paths == std::vector<std::string>{"/a", "/b"});
    CHECK(rest == "GET /c HTTP/1.1\r\n");
}

TEST_CASE("chunked bodies decode across any split with extensions and trailers", "[http][parser][chunked]") {
    const std::string body = "4;name=value\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
    for (std::size_t split = 0; split <= body.size(); ++split) {
        INFO("split at " << split);
        tandem::http::chunked_decoder d;
        std::string out;
        auto sink = [&](std::string_view s) { out.append(s); };
        const auto r1 = d.decode(std::string_view(body).substr(0, split), sink);
        REQUIRE(r1.state != parse_state::error);
        std::size_t used = r1.consumed;
        if (r1.state == parse_state::incomplete) {
            // The caller keeps unconsumed bytes and feeds them again with what follows.
            const auto r2 = d.decode(std::string_view(body).substr(used), sink);
            REQUIRE(r2.state == parse_state::complete);
            used += r2.consumed;
        }
        CHECK(out == "Wikipedia in\r\n\r\nchunks.");
        CHECK(body.substr(used) == "NEXT");
        CHECK(d.body_size() == out.size());
    }
}

TEST_CASE("bad chunked bodies are errors with a status", "[http][parser][chunked]") {
    const std::vector<error_case> cases = {
        {"not hex", "zz\r\n", 400},
        {"no size", "\r\n", 400},
        {"data longer than size", "2\r\nabc\r\n0\r\n\r\n", 400},
        {"bare LF after size", "2\nab\r\n", 400},
        {"too many digits", "11111111111111111\r\n", 400},
        {"folded trailer", "0\r\n folded\r\n\r\n", 400},
        {"trailer without colon", "0\r\nX\r\n\r\n", 400},
        {"control in extension", std::string("1;a\x01\r\nx\r\n"), 400},
    };
    for (const error_case& c : cases) {
        INFO(c.what);
        tandem::http::chunked_decoder d;
        guarded_input in(c.request);
        const auto r = d.decode(in.view(), [](std::string_view) {});
        CHECK(r.state == parse_state::error);
        CHECK(r.status == c.status);
    }
    tandem::http::chunked_decoder limited(10);
    const auto r = limited.decode("8\r\n12345678\r\n8\r\n", [](std::string_view) {});
    CHECK(r.status == 413);
}

TEST_CASE("responses: status line framing and bodiless statuses", "[http][parser][response]") {
    std::array<tandem::http::header, 100> storage;
    tandem::http::response_head head;
    auto parse = [&](std::string_view text, bool head_request = false) {
        return tandem::http::parse_response(text, head, storage, head_request);
    };
    REQUIRE(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").state == parse_state::complete);
    CHECK(head.status == 200);
    CHECK(head.reason == "OK");
    CHECK(head.framing == body_framing::content_length);
    CHECK(head.content_length == 5);
    REQUIRE(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").state == parse_state::complete);
    CHECK(head.framing == body_framing::chunked);
    REQUIRE(parse("HTTP/1.1 200 OK\r\n\r\n").state == parse_state::complete);
    CHECK(head.framing == body_framing::until_close);
    CHECK_FALSE(head.keep_alive);
    REQUIRE(parse("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n").state == parse_state::complete);
    CHECK(head.framing == body_framing::none);
    REQUIRE(parse("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true).state == parse_state::complete);
    CHECK(head.framing == body_framing::none);
    REQUIRE(parse("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n").state == parse_state::complete);
    CHECK(head.status == 404);
    CHECK(parse("HTTP/1.1 20 OK\r\n\r\n").state == parse_state::error);
    CHECK(parse("HTTP/1.1 200OK\r\n\r\n").state == parse_state::error);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").state == parse_state::error);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n").state == parse_state::incomplete);
}

TEST_CASE("head_scanner: fed a byte at a time it answers as fed all at once looking at each byte once", "[http][parser][scanner]") {
    const std::string inputs[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\nPOST /x?y=1 HTTP/1.0\r\nContent-Length: 3, 3\r\nX:\r\nY: \t v \xe9\r\n\r\nabc",
        "HEAD /h HTTP/1.1\r\nHost: a\r\nHost : b\r\n\r\n", // refused at the space
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 12a\r\n\r\n",
        std::string("\x16\x03\x01\x02\x00", 5),
    };
    for (const std::string& in : inputs) {
        INFO(in);
        tandem::http::head_scanner whole;
        const auto all = whole.scan(in, {});
        tandem::http::head_scanner bytewise;
        tandem::http::parse_result step{};
        std::size_t fed = 0;
        for (fed = 1; fed <= in.size(); ++fed) {
            step = bytewise.scan(std::string_view(in).substr(0, fed), {});
            if (step.state != parse_state::incomplete) break;
        }
        CHECK(step.state == all.state);
        CHECK(step.status == all.status);
        CHECK(step.head_size == all.head_size);
        CHECK(bytewise.scanned() <= in.size());
    }
    tandem::http::head_scanner head;
    (void)head.scan("HEAD / HT", {});
    CHECK(head.head_method());
}

TEST_CASE("head_scanner: the request-line limit is exact at every split", "[http][parser][scanner]") {
    tandem::http::limits lim;
    lim.max_request_line = 20;
    for (std::size_t line = 16; line <= 24; ++line) {
        const std::string text = "GET /" + std::string(line - 14, 'p') + " HTTP/1.1\r\nHost: a\r\n\r\n";
        INFO("request line of " << line << " bytes");
        for (std::size_t split = 0; split <= text.size(); ++split) {
            tandem::http::head_scanner s;
            auto r = s.scan(std::string_view(text).substr(0, split), lim);
            if (r.state == parse_state::incomplete) r = s.scan(text, lim);
            if (line <= 20) {
                CHECK(r.state == parse_state::complete);
                CHECK(r.head_size == text.size());
            } else {
                CHECK(r.status == 414);
            }
        }
    }
}

TEST_CASE("head_scanner::parse in random splits with the bytes moved between reads answers as one parse of the whole", "[http][parser][scanner][property]") {
    using tandem::http::header;
    using tandem::http::request_head;
    const std::uint32_t seed = static_cast<std::uint32_t>(std::random_device{}());
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const std::vector<std::string> fixed = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\nPOST /x?y=1 HTTP/1.0\r\nContent-Length: 3, 3\r\nX:\r\nY: \t v \xe9\r\n\r\nabc",
        "PUT http://h/p?q=2 HTTP/1.1\r\nhost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",       // repeated Host: 400 at the end
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",                  // 505
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 12a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", // 501
        "GET / HTTP/1.1\r\nHost: a\r\nHost : b\r\n\r\n",
    };
    auto random_request = [&] {
        static constexpr const char* names[] = {"Host", "X-A", "content-length", "Connection", "Expect", "Accept", "host"};
        static constexpr const char* values[] = {"a", " 5 ", "", "close", "keep-alive", "100-continue", "text/html, */*"};
        std::string r = rng() % 4 == 0 ? "\r\n" : "";
        r += rng() % 2 ? "GET" : "POST";
        r += rng() % 3 ? " /p?q=" + std::to_string(rng() % 1000) : std::string(" http://h:1/z");
        r += rng() % 5 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n";
        for (std::uint32_t i = 0, n = rng() % 6; i < n; ++i) {
            r += names[rng() % std::size(names)];
            r += ':';
            r += values[rng() % std::size(values)];
            r += "\r\n";
        }
        r += "\r\n";
        return r;
    };
    auto same = [](const request_head& a, const request_head& b) {
        if (a.method != b.method || a.target != b.target || a.path != b.path || a.query != b.query ||
            a.version != b.version || a.framing != b.framing || a.content_length != b.content_length ||
            a.keep_alive != b.keep_alive || a.expect_continue != b.expect_continue ||
            a.headers.size() != b.headers.size())
            return false;
        for (std::size_t i = 0; i < a.headers.size(); ++i)
            if (a.headers[i].name != b.headers[i].name || a.headers[i].value != b.headers[i].value) return false;
        return true;
    };
    for (int round = 0; round < 2000; ++round) {
        const std::string text = round < static_cast<int>(fixed.size()) ? fixed[static_cast<std::size_t>(round)] : random_request();
        INFO(text);
        std::array<header, 100> whole_storage;
        request_head whole;
        const auto expected = tandem::http::parse_request(text, whole, whole_storage);

        tandem::http::head_scanner parser;
        std::array<header, 100> storage;
        request_head head;
        tandem::http::parse_result got{};
        auto buffer = std::make_unique<std::string>();
        for (std::size_t fed = 0; fed < text.size();) {
            fed = std::min(text.size(), fed + 1 + rng() % 12);
            // A new buffer for every read, the old one freed: what a compacting or growing
            // connection buffer does to the bytes under a half-parsed head.
            auto moved = std::make_unique<std::string>(text.substr(0, fed));
            buffer = std::move(moved);
            got = parser.parse(*buffer, head, storage, {});
            if (got.state != parse_state::incomplete) break;
        }
        REQUIRE(got.state == expected.state);
        CHECK(got.status == expected.status);
        CHECK(got.head_size == expected.head_size);
        if (got.state == parse_state::complete) {
            CHECK(same(head, whole));
            for (const header& h : head.headers) // views into the latest buffer, not a freed one
                CHECK((h.name.data() >= buffer->data() && h.value.data() + h.value.size() <= buffer->data() + buffer->size()));
        }
        // Asked again, it answers the same without looking at anything.
        const auto again = parser.parse(*buffer, head, storage, {});
        CHECK(again.state == got.state);
        CHECK(again.status == got.status);
    }
}

TEST_CASE("head_scanner: asked again after a complete head or a refusal it gives the same answer", "[http][parser][scanner][redteam]") {
    // A pipelined request's bytes after the head, and the same buffer offered twice, must not
    // turn a complete head into "incomplete" or a refusal of the next request's first byte.
    const std::string pipelined = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::size_t first = pipelined.find("GET /next");
    for (std::size_t split = 1; split <= pipelined.size(); ++split) {
        INFO("split " << split);
        tandem::http::head_scanner s;
        auto r = s.scan(std::string_view(pipelined).substr(0, split), {});
        if (r.state == parse_state::incomplete) r = s.scan(pipelined, {});
        REQUIRE(r.state == parse_state::complete);
        CHECK(r.head_size == first);
        for (int again = 0; again < 3; ++again) {
            const auto same = s.scan(pipelined, {});
            CHECK(same.state == parse_state::complete);
            CHECK(same.head_size == first);
        }
        tandem::http::head_scanner p;
        std::array<tandem::http::header, 100> storage;
        tandem::http::request_head head;
        auto q = p.parse(std::string_view(pipelined).substr(0, split), head, storage, {});
        if (q.state == parse_state::incomplete) q = p.parse(pipelined, head, storage, {});
        REQUIRE(q.state == parse_state::complete);
        const auto q2 = p.parse(pipelined, head, storage, {});
        CHECK(q2.state == parse_state::complete);
        CHECK(q2.head_size == first);
        CHECK(head.target == "/");
    }
    const std::string bad = "GET / HTTP/1.1\r\nHo st: a\r\n\r\n";
    tandem::http::head_scanner s;
    const auto r = s.scan(bad, {});
    REQUIRE(r.state == parse_state::error);
    const auto again = s.scan(bad + "more", {});
    CHECK(again.state == parse_state::error);
    CHECK(again.status == r.status);
}
