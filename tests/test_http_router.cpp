// The router on its own: a table of (method, path) → expected route, params or status.

// First, as a user's header would, the HTTP wing's types named through fwd.hpp alone (they are
// aliases of class templates, so `class router;` conflicts; fwd.hpp declares them).
#include "tandem/fwd.hpp"

#include <cstddef>

namespace fwd_only {
struct app {
    tandem::http::server* server = nullptr;
    tandem::http::router* routes = nullptr;
    tandem::http::client* client = nullptr;
    tandem::http::connection_pool* pool = nullptr;
    tandem::http::connection_lease* lease = nullptr;
    tandem::http::json* json = nullptr;
};
bool has_route(const tandem::http::router& r, const char* method, const char* path);
} // namespace fwd_only

#include "tandem/http/router.hpp"

#include "catch.hpp"

#include <string>
#include <vector>

namespace http = tandem::http;

namespace {

http::handler none() {
    return [](http::request&) -> tandem::task<http::response> { co_return http::response::text(""); };
}

struct router_case {
    const char* method;
    const char* path;
    const char* route; // label of the expected route, or "" for none
    int status;        // when none: 404, 405, 501 (or 204 for OPTIONS *)
    const char* params_or_allow;
};

std::string joined(const http::route_params& p) {
    std::string out;
    for (const auto& [n, v] : p) {
        if (!out.empty()) out += ' ';
        out.append(n).append("=").append(v);
    }
    return out;
}

template <std::size_t N>
void check_table(const http::router& r, const router_case (&cases)[N]) {
    for (const router_case& c : cases) {
        INFO(c.method << " " << c.path);
        http::route_params params;
        const http::route_match m = r.find(c.method, c.path, params);
        if (*c.route) {
            REQUIRE(m.found != nullptr);
            CHECK(m.found->label == c.route);
            CHECK(joined(params) == c.params_or_allow);
        } else {
            CHECK(m.found == nullptr);
            CHECK(m.status == c.status);
            CHECK(m.allow == c.params_or_allow);
        }
    }
}

} // namespace

TEST_CASE("router table: exact params prefix trailing slash HEAD 404 405 and 501", "[http][router]") {
    http::router r;
    r.get("/", none());
    r.get("/users/:id", none());
    r.put("/users/:id", none());
    r.get("/users/:id/posts/:post", none());
    r.get("/files/*", none());
    r.get("/dir/", none());
    r.post("/echo", none());
    r.route("BREW", "/pot", none());

    const router_case cases[] = {
        {"GET", "/", "GET /", 0, ""},
        {"GET", "/users/42", "GET /users/:id", 0, "id=42"},
        {"PUT", "/users/42", "PUT /users/:id", 0, "id=42"},
        {"GET", "/users/7/posts/9", "GET /users/:id/posts/:post", 0, "id=7 post=9"},
        {"GET", "/users/", "", 404, ""},   // an empty :id matches nothing
        {"GET", "/users", "", 404, ""},
        {"GET", "/files/a/b.txt", "GET /files/*", 0, ""},
        {"GET", "/files/", "GET /files/*", 0, ""},
        {"GET", "/dir/", "GET /dir/", 0, ""},
        {"GET", "/dir", "", 404, ""},       // the trailing slash is significant
        {"HEAD", "/users/3", "GET /users/:id", 0, "id=3"}, // HEAD falls back to GET
        {"GET", "/nowhere", "", 404, ""},
        {"DELETE", "/users/1", "", 405, "GET, HEAD, PUT"},
        {"POST", "/", "", 405, "GET, HEAD"},
        {"GET", "/echo", "", 405, "POST"},
        {"OPTIONS", "/echo", "", 405, "POST"},    // known to HTTP: 405, not 501
        {"FROB", "/echo", "", 501, ""},           // no route uses it and HTTP does not define it
        {"FROB", "/nowhere", "", 501, ""},
        {"BREW", "/pot", "BREW /pot", 0, ""},     // an extension method a route uses is known
        {"BREW", "/", "", 405, "GET, HEAD"},
        {"get", "/", "", 501, ""},                // methods are case-sensitive (RFC 9110 9.1)
    };
    check_table(r, cases);
}

TEST_CASE("router table: Allow lists methods as exact tokens and OPTIONS * lists the server's", "[http][router]") {
    http::router r;
    r.get("/a", none());
    r.route("GE", "/a", none());     // a prefix of GET
    r.route("ETAG", "/a", none());   // contains GET's letters elsewhere
    r.route("G", "/b", none());
    r.route("GETX", "/b", none());   // GET is a prefix of it
    r.route("HEAD", "/c", none());   // HEAD before GET: listed once
    r.get("/c", none());

    const router_case cases[] = {
        {"POST", "/a", "", 405, "GET, HEAD, GE, ETAG"},
        {"GET", "/b", "", 405, "G, GETX"},
        {"POST", "/c", "", 405, "HEAD, GET"},
        {"GE", "/a", "GE /a", 0, ""},
        {"OPTIONS", "*", "", 204, "GET, HEAD, GE, ETAG, G, GETX, OPTIONS"},
        {"GET", "*", "", 404, ""},
    };
    check_table(r, cases);
    http::router empty;
    http::route_params params;
    const http::route_match m = empty.find("OPTIONS", "*", params);
    CHECK(m.status == 204);
    CHECK(m.allow == "OPTIONS");
}

TEST_CASE("routes remember where they were registered", "[http][router]") {
    http::router r;
    const int line = __LINE__ + 1;
    r.get("/here", none());
    http::route_params params;
    const auto m = r.find("GET", "/here", params);
    REQUIRE(m.found != nullptr);
    CHECK(m.found->where.line() == static_cast<unsigned>(line));
    CHECK(std::string(m.found->where.file_name()).find("test_http_router.cpp") != std::string::npos);
}

TEST_CASE("bad patterns are refused", "[http][router]") {
    http::router r;
    CHECK_THROWS_AS(r.get("nope", none()), std::invalid_argument);
    CHECK_THROWS_AS(r.get("/a/*/b", none()), std::invalid_argument);
}

bool fwd_only::has_route(const tandem::http::router& r, const char* method, const char* path) {
    http::route_params params;
    return r.find(method, path, params).found != nullptr;
}

TEST_CASE("a router named through fwd.hpp is the router the header defines") {
    http::router r;
    r.get("/x", none());
    fwd_only::app a;
    a.routes = &r;
    CHECK(fwd_only::has_route(*a.routes, "GET", "/x"));
    CHECK_FALSE(fwd_only::has_route(*a.routes, "GET", "/y"));
}
