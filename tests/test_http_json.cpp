#include "tandem/http/json.hpp"

#include "catch.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <limits>
#include <stdexcept>
#include <string>

namespace http = tandem::http;

TEST_CASE("json: nested objects and arrays get their commas", "[http][json]") {
    http::json j;
    j.object().field("message", "Hello").field("n", 42).field("ok", true).key("none").value(nullptr);
    j.key("tags").array().value("a").value(1.5).object().field("x", -1).end().array().end().end();
    j.end();
    CHECK(j.str() == R"({"message":"Hello","n":42,"ok":true,"none":null,"tags":["a",1.5,{"x":-1},[]]})");
}

TEST_CASE("json: strings are escaped so any input stays valid JSON", "[http][json]") {
    const struct {
        std::string in;
        std::string out;
    } cases[] = {
        {"plain", R"("plain")"},
        {"quote \" and backslash \\", R"("quote \" and backslash \\")"},
        {"line\nfeed\ttab\rret", R"("line\nfeed\ttab\rret")"},
        {std::string("nul\0byte", 8), R"("nul\u0000byte")"},
        {"\x01\x1f\x7f", R"("\u0001\u001f\u007f")"},
        {"J\xc3\xbcrgen", "\"J\xc3\xbcrgen\""}, // UTF-8 passes through
        {"</script>", R"("</script>")"},
        // Not UTF-8 (a percent-decoded %ff, a lone continuation, an overlong '/', a surrogate,
        // past U+10FFFF, a sequence cut short): each bad byte becomes U+FFFD.
        {"a\xff", "\"a\xef\xbf\xbd\""},
        {"\x80", "\"\xef\xbf\xbd\""},
        {"\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xf4\x90\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xe2\x82", "\"\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xf0\x9f\x98\x80 \xe2\x82\xac", "\"\xf0\x9f\x98\x80 \xe2\x82\xac\""}, // 4- and 3-byte pass
    };
    for (const auto& c : cases) {
        std::string out;
        http::append_json_string(out, c.in);
        CHECK(out == c.out);
    }
}

TEST_CASE("json: numbers that JSON cannot say become null misuse throws", "[http][json]") {
    http::json j;
    j.array().value(std::numeric_limits<double>::quiet_NaN()).value(std::numeric_limits<double>::infinity()).end();
    CHECK(j.str() == "[null,null]");

    http::json bad;
    bad.object();
    CHECK_THROWS_AS(bad.value(1), std::logic_error); // a value where a key is due
    CHECK_THROWS_AS(bad.str(), std::logic_error);    // unfinished
    bad.end();
    CHECK_THROWS_AS(bad.end(), std::logic_error);
    CHECK_THROWS_AS(bad.value(2), std::logic_error); // a second top-level value
    http::json loose;
    CHECK_THROWS_AS(loose.key("k"), std::logic_error);
}

TEST_CASE("json: property: any bytes give a string of well-formed UTF-8 with no raw control", "[http][json][property]") {
    const auto seed = static_cast<std::uint32_t>(std::random_device{}());
    INFO("seed " << seed);
    std::printf("json property seed: %u\n", seed);
    std::uint64_t state = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (int round = 0; round < 2000; ++round) {
        std::string in;
        for (int i = 0; i < 12; ++i) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            in.push_back(static_cast<char>(state >> 56));
        }
        std::string out;
        http::append_json_string(out, in);
        for (std::size_t i = 0; i < out.size();) {
            const std::size_t n = http::detail::utf8_sequence(std::string_view(out).substr(i));
            REQUIRE(n != 0);
            REQUIRE(static_cast<unsigned char>(out[i]) >= 0x20);
            i += n;
        }
    }
}
