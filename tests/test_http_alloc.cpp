// How many heap allocations a kept-alive HTTP request costs the server's thread in steady
// state. Its own executable: it replaces the global operator new to count, per thread, so the
// client (a thread of its own) is not counted.
#include "tandem/http.hpp"
#include "tandem/thread_pool.hpp"

#include "catch.hpp"
#include "replace_new.hpp"
#include "http_harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <string_view>

namespace {
thread_local std::size_t t_allocations = 0; // constant-initialised: safe inside operator new
} // namespace

bool test_new_allowed(std::size_t) noexcept {
    ++t_allocations;
    return true;
}

namespace http = tandem::http;

namespace {

/// `count` kept-alive GETs of `path`, one after the other on one connection, each answer read
/// whole before the next request goes: what a client thread does while the loop serves.
bool run_client(std::uint16_t port, std::string_view path, int count) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    const std::string request = "GET " + std::string(path) + " HTTP/1.1\r\nHost: a\r\n\r\n";
    std::string in;
    char buf[4096];
    for (int i = 0; ok && i < count; ++i) {
        ok = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size());
        // One response: its head, then Content-Length bytes (0 for 204).
        for (;;) {
            const std::size_t end = in.find("\r\n\r\n");
            if (end != std::string::npos) {
                std::size_t length = 0;
                if (const std::size_t cl = in.find("Content-Length: "); cl != std::string::npos && cl < end)
                    length = std::strtoul(in.c_str() + cl + 16, nullptr, 10);
                if (in.size() >= end + 4 + length) {
                    ok = ok && in.rfind("HTTP/1.1 2", 0) == 0;
                    in.erase(0, end + 4 + length);
                    break;
                }
            }
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) {
                ok = false;
                break;
            }
            in.append(buf, static_cast<std::size_t>(n));
        }
    }
    ::close(fd);
    return ok;
}

struct window {
    int requests = 0;
    std::size_t at_first = 0;
    std::size_t at_last = 0;
};

/// Allocations on the loop thread per request between the handler's `first` and `last` call:
/// whole cycles (read, parse, route, handler, response, wait for the next), warm-up excluded.
double allocations_per_request(const char* path, http::response (*make)()) {
    constexpr int warm_up = 300, measured = 2000;
    window w;
    http::router r;
    r.get(path, [&w, make](http::request&) -> tandem::task<http::response> {
        ++w.requests;
        if (w.requests == warm_up) w.at_first = t_allocations;
        if (w.requests == warm_up + measured) w.at_last = t_allocations;
        co_return make();
    });
    bool client_ok = false;
    http_harness::with_server(std::move(r), {}, [&](std::uint16_t port, http::server&) -> tandem::task<> {
        client_ok = co_await tandem::offload(run_client, port, std::string_view(path), warm_up + measured + 10);
    });
    REQUIRE(client_ok);
    REQUIRE(w.requests == warm_up + measured + 10);
    return static_cast<double>(w.at_last - w.at_first) / measured;
}

} // namespace

TEST_CASE("a kept-alive request allocates only its coroutine frames in steady state", "[http][server][alloc]") {
    // A handler whose response needs no heap (no body, no headers): what is left is the
    // server's. Today: serve_request's frame and the handler's own frame, nothing else (the
    // buffer, header storage, response head and request state are pooled and reused; a
    // bodiless response no longer builds its unused default Content-Type string).
    if (!TANDEM_TEST_REPLACES_NEW) {
        WARN("no operator new hook under ThreadSanitizer: nothing counted");
        return;
    }
    const double per_request = allocations_per_request("/empty", [] { return http::response(204); });
    std::printf("allocations per request, 204 handler: %.3f\n", per_request);
    // With the frame pool on, the two frames come from its slabs, not from operator new.
    CHECK(per_request <= (TANDEM_FRAME_POOL ? 0.01 : 2.01));
}

TEST_CASE("the hello response adds only the allocation of its body", "[http][server][alloc]") {
    // response::json: the body (31 bytes, past the short-string buffer) is the one allocation.
    // "application/json" is a content type the library knows, kept as a view of its constant,
    // and the header list holds Content-Type in place.
    if (!TANDEM_TEST_REPLACES_NEW) {
        WARN("no operator new hook under ThreadSanitizer: nothing counted");
        return;
    }
    const double empty = allocations_per_request("/empty", [] { return http::response(204); });
    const double hello = allocations_per_request("/", [] { return http::response::json(R"({"message":"Hello from tandem"})"); });
    std::printf("allocations per request, hello handler: %.3f\n", hello);
    CHECK(hello - empty <= 1.01);
}

TEST_CASE("a text response allocates nothing beyond its body", "[http][server][alloc]") {
    // The default content type (25 characters, "text/plain; charset=utf-8") costs nothing; a
    // body that fits the short-string buffer costs nothing either; a long one, itself only.
    if (!TANDEM_TEST_REPLACES_NEW) {
        WARN("no operator new hook under ThreadSanitizer: nothing counted");
        return;
    }
    const double empty = allocations_per_request("/empty", [] { return http::response(204); });
    const double short_text = allocations_per_request("/pong", [] { return http::response::text("pong"); });
    const double long_text =
        allocations_per_request("/long", [] { return http::response::text(std::string(1000, 'x')); });
    // Four headers in all, each name and value short or well known: still in place.
    const double with_headers = allocations_per_request("/headers", [] {
        http::response r = http::response::text("pong");
        r.set_header("Cache-Control", "no-store");
        r.set_header("X-Frame-Options", "DENY");
        r.set_header("Content-Type", "text/html; charset=utf-8"); // replaces, well known
        r.set_header("Vary", "Accept");
        return r;
    });
    std::printf("allocations per request beyond a 204: short text %.3f, long text %.3f, four headers %.3f\n",
                short_text - empty, long_text - empty, with_headers - empty);
    CHECK(short_text - empty <= 0.01);
    CHECK(long_text - empty <= 1.01);
    CHECK(with_headers - empty <= 0.01);
}
