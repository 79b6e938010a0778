#include "tandem/net.hpp"

#include "catch.hpp"
#include "tandem/spawn.hpp"
#include "tandem/task_group.hpp"
#include "tandem/when.hpp"

#include <chrono>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

tandem::address loopback() { return tandem::address("127.0.0.1", 0); }

/// Echoes one connection until the peer half-closes, then half-closes too.
tandem::task<> echo(tandem::tcp_stream s) {
    std::vector<char> buf(65536);
    for (;;) {
        const std::size_t n = co_await s.read_some(std::span<char>(buf));
        if (n == 0) break;
        co_await s.write_all(std::string_view(buf.data(), n));
    }
    s.shutdown_write();
}

tandem::task<> serve(tandem::tcp_listener& l, int connections) {
    tandem::task_group group;
    for (int i = 0; i < connections; ++i) group.spawn(echo(co_await l.accept()));
    co_await group.join();
}

std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
    return s;
}

} // namespace

TEST_CASE("address parses and formats IPv4 and IPv6", "[net]") {
    const auto a = tandem::address::parse("127.0.0.1:8080");
    CHECK(a.is_v4());
    CHECK(a.port() == 8080);
    CHECK(a.to_string() == "127.0.0.1:8080");
    const auto b = tandem::address::parse("[::1]:443");
    CHECK(b.is_v6());
    CHECK(b.to_string() == "[::1]:443");
    CHECK(tandem::address("::1", 443) == b);
    CHECK_THROWS_AS(tandem::address::parse("localhost:80"), std::invalid_argument);
    CHECK_THROWS_AS(tandem::address::parse("127.0.0.1"), std::invalid_argument);
    CHECK_THROWS_AS(tandem::address::parse("127.0.0.1:70000"), std::invalid_argument);
    CHECK_THROWS_AS(tandem::address::parse("::1:80"), std::invalid_argument);
}

TEST_CASE("a TCP echo round trip on an ephemeral port", "[net]") {
    auto body = []() -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(loopback());
        const auto at = listener.local_address();
        CHECK(at.port() != 0);
        auto server = tandem::spawn(serve(listener, 1));
        auto client = co_await tandem::tcp_stream::connect(at);
        CHECK(client.peer_address() == at);
        co_await client.write_all("hello, tandem");
        std::string got(13, '\0');
        co_await client.read_exact(got);
        CHECK(got == "hello, tandem");
        client.shutdown_write();
        char extra = 0;
        const std::size_t n = co_await client.read_some(std::span<char>(&extra, 1));
        CHECK(n == 0); // the server half-closed after our half-close
        co_await server;
    };
    tandem::sync_wait(body());
}

TEST_CASE("8 MiB echoed in both directions at once (backpressure both ways)", "[net]") {
    auto body = []() -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(loopback());
        auto server = tandem::spawn(serve(listener, 1));
        auto client = co_await tandem::tcp_stream::connect(listener.local_address());
        client.set_send_buffer_size(64 * 1024);
        client.set_receive_buffer_size(64 * 1024);
        const std::string data = pattern(8 << 20);
        std::string received(data.size(), '\0');
        auto writer = [](tandem::tcp_stream& c, const std::string& d) -> tandem::task<> {
            for (std::size_t off = 0; off < d.size(); off += 1 << 20)
                co_await c.write_all(std::string_view(d).substr(off, 1 << 20));
            c.shutdown_write();
        };
        co_await tandem::when_all(writer(client, data), client.read_exact(received));
        CHECK(received == data);
        co_await server;
    };
    tandem::sync_wait(body());
}

TEST_CASE("2000 concurrent clients each get their own echo", "[net]") {
    auto body = []() -> tandem::task<> {
        constexpr int clients = 2000;
        auto listener = tandem::tcp_listener::bind(loopback(), {.backlog = 4096});
        auto server = tandem::spawn(serve(listener, clients));
        const auto at = listener.local_address();
        int ok = 0;
        auto client = [](tandem::address to, int id, int& good) -> tandem::task<> {
            auto c = co_await tandem::tcp_stream::connect(to);
            const std::string msg = "client-" + std::to_string(id);
            co_await c.write_all(msg);
            std::string back(msg.size(), '\0');
            co_await c.read_exact(back);
            if (back == msg) ++good;
            c.shutdown_write();
        };
        std::vector<tandem::task<>> all;
        for (int i = 0; i < clients; ++i) all.push_back(client(at, i, ok));
        co_await tandem::when_all(std::move(all));
        CHECK(ok == clients);
        co_await server;
    };
    tandem::sync_wait(body());
}

TEST_CASE("connecting to a closed port fails with ECONNREFUSED", "[net]") {
    auto body = []() -> tandem::task<> {
        tandem::address closed;
        {
            auto l = tandem::tcp_listener::bind(loopback());
            closed = l.local_address();
        } // nobody listens there now
        try {
            (void)co_await tandem::tcp_stream::connect(closed);
            FAIL("connect succeeded");
        } catch (const std::system_error& e) {
            CHECK(e.code().value() == ECONNREFUSED);
        }
    };
    tandem::sync_wait(body());
}

TEST_CASE("a read with a timeout on an idle connection times out", "[net]") {
    auto body = []() -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(loopback());
        auto client = co_await tandem::tcp_stream::connect(listener.local_address());
        auto accepted = co_await listener.accept();
        auto read_one = [](tandem::tcp_stream& s) -> tandem::task<std::size_t> {
            char c;
            co_return co_await s.read_some(std::span<char>(&c, 1));
        };
        const auto start = std::chrono::steady_clock::now();
        CHECK_THROWS_AS(co_await tandem::with_timeout(30ms, read_one(accepted)), tandem::timed_out);
        CHECK(std::chrono::steady_clock::now() - start >= 30ms);
        // The connection is still usable afterwards.
        co_await client.write_all("x");
        auto n = co_await read_one(accepted);
        CHECK(n == 1);
    };
    tandem::sync_wait(body());
}

TEST_CASE("a peer reset surfaces as a system_error, never a crash or SIGPIPE", "[net]") {
    auto body = []() -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(loopback());
        auto client = co_await tandem::tcp_stream::connect(listener.local_address());
        {
            auto accepted = co_await listener.accept();
            linger lg{1, 0}; // close with RST
            ::setsockopt(accepted.native_handle(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        const std::string chunk(1 << 16, 'z');
        bool failed = false;
        try {
            for (int i = 0; i < 1000; ++i) co_await client.write_all(chunk);
        } catch (const std::system_error& e) {
            failed = true;
            CHECK((e.code().value() == ECONNRESET || e.code().value() == EPIPE));
        }
        CHECK(failed);
    };
    tandem::sync_wait(body());
}

TEST_CASE("closing a socket wakes its waiting reader with ECANCELED", "[net]") {
    auto body = []() -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(loopback());
        auto client = co_await tandem::tcp_stream::connect(listener.local_address());
        auto accepted = co_await listener.accept();
        auto reader = tandem::spawn([](tandem::tcp_stream& s) -> tandem::task<std::size_t> {
            char c;
            co_return co_await s.read_some(std::span<char>(&c, 1));
        }(accepted));
        co_await tandem::yield();
        accepted.close();
        try {
            (void)co_await reader;
            FAIL("read completed");
        } catch (const std::system_error& e) {
            CHECK(e.code().value() == ECANCELED);
        }
    };
    tandem::sync_wait(body());
}

TEST_CASE("gathered writes arrive in order", "[net]") {
    auto body = []() -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(loopback());
        auto client = co_await tandem::tcp_stream::connect(listener.local_address());
        auto accepted = co_await listener.accept();
        const std::string big = pattern(300000);
        co_await tandem::when_all(
            [](tandem::tcp_stream& c, const std::string& b) -> tandem::task<> {
                const std::string_view parts[] = {"head:", b, ":tail"};
                co_await c.write_all_gathered(parts);
            }(client, big),
            [](tandem::tcp_stream& a, const std::string& b) -> tandem::task<> {
                std::string got(b.size() + 10, '\0');
                co_await a.read_exact(got);
                CHECK(got == "head:" + b + ":tail");
            }(accepted, big));
    };
    tandem::sync_wait(body());
}

TEST_CASE("read_until stops at the delimiter and bounds the buffer", "[net]") {
    auto body = []() -> tandem::task<> {
        auto listener = tandem::tcp_listener::bind(loopback());
        auto client = co_await tandem::tcp_stream::connect(listener.local_address());
        auto accepted = co_await listener.accept();
        co_await client.write_all("GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY");
        std::string buffer;
        const std::size_t end = co_await accepted.read_until(buffer, "\r\n\r\n", 8192);
        CHECK(buffer.substr(0, end) == "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        co_await client.write_all(std::string(10000, 'a'));
        std::string flood;
        CHECK_THROWS_AS(co_await accepted.read_until(flood, "\n", 4096), std::length_error);
        CHECK(flood.size() <= 4096);
    };
    tandem::sync_wait(body());
}

TEST_CASE("IPv6 loopback works when the host has it", "[net]") {
    auto body = []() -> tandem::task<> {
        tandem::tcp_listener listener;
        try {
            listener = tandem::tcp_listener::bind(tandem::address("::1", 0));
        } catch (const std::system_error&) {
            WARN("no IPv6 loopback on this host");
            co_return;
        }
        auto server = tandem::spawn(serve(listener, 1));
        auto c = co_await tandem::tcp_stream::connect(listener.local_address());
        co_await c.write_all("six");
        std::string got(3, '\0');
        co_await c.read_exact(got);
        CHECK(got == "six");
        c.shutdown_write();
        co_await server;
    };
    tandem::sync_wait(body());
}
