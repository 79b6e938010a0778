// The server never loses, stalls or starves a request, holds memory in proportion to what
// arrived, shuts down in bounded time, and cancels the handler of a client that left.
// Real sockets on 127.0.0.1; client and server share one loop.
#include "tandem/http.hpp"

#include "catch.hpp"
#include "http_harness.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"
#include "tandem/thread_pool.hpp"
#include "tandem/when.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <poll.h>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <system_error>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace http = tandem::http;
using http_harness::local;
using http_harness::with_server;

namespace {

using clock_type = std::chrono::steady_clock;

/// GET /<id>: answers the id, so a client can check the order of pipelined answers.
http::router echo_id_routes() {
    http::router r;
    r.get("/:id", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text(std::string(req.param("id")));
    });
    return r;
}

/// A request for /<id> of exactly `size` bytes (size >= 32), padded in its query string.
std::string sized_request(int id, std::size_t size) {
    char digits[8];
    std::snprintf(digits, sizeof digits, "%06d", id);
    const std::string tail = " HTTP/1.1\r\nHost:a\r\n\r\n";
    std::string r = std::string("GET /") + digits;
    if (size > r.size() + tail.size()) {
        const std::size_t pad = size - r.size() - tail.size();
        r += '?';
        r.append(pad - 1, 'p');
    }
    r += tail;
    REQUIRE(r.size() == size);
    return r;
}

/// Reads responses until `expected` arrived (or end of stream); returns their bodies in order.
tandem::task<std::vector<std::string>> read_answers(tandem::tcp_stream& s, std::size_t expected, bool until_eof) {
    std::vector<std::string> bodies;
    std::string buf;
    char chunk[65536];
    std::array<http::header, 32> storage;
    for (;;) {
        for (;;) { // take every complete response out of buf
            http::response_head head;
            const auto r = http::parse_response(buf, head, storage);
            REQUIRE(r.state != http::parse_state::error);
            if (r.state != http::parse_state::complete) break;
            const std::size_t total = r.head_size + static_cast<std::size_t>(head.content_length);
            if (buf.size() < total) break;
            bodies.push_back(buf.substr(r.head_size, static_cast<std::size_t>(head.content_length)));
            buf.erase(0, total);
        }
        if (!until_eof && bodies.size() >= expected) break;
        const std::size_t n = co_await s.read_some(std::span<char>(chunk));
        if (n == 0) break;
        buf.append(chunk, n);
    }
    co_return bodies;
}

/// Writes `data` in the given split sizes, letting the loop turn between some of them.
tandem::task<> write_split(tandem::tcp_stream& s, std::string_view data, std::mt19937& rng) {
    std::size_t at = 0;
    while (at < data.size()) {
        const int mode = static_cast<int>(rng() % 4);
        std::size_t n = data.size() - at; // mode 0: all the rest at once
        if (mode == 1) n = std::min<std::size_t>(n, 1 + rng() % 7);
        if (mode >= 2) n = std::min<std::size_t>(n, 1 + rng() % 20'000);
        co_await s.write_all(data.substr(at, n));
        at += n;
        if (rng() % 2) co_await tandem::yield();
    }
}

std::vector<std::string> ids(int from, int count) {
    std::vector<std::string> out;
    for (int i = 0; i < count; ++i) {
        char digits[8];
        std::snprintf(digits, sizeof digits, "%06d", from + i);
        out.emplace_back(digits);
    }
    return out;
}

/// A handler that waits until it is cancelled: it sets `entered` when it starts, counts its
/// cancellations and sets `cancelled_event` when cancelled.
http::handler until_cancelled(tandem::event& entered, int& cancellations, tandem::event& cancelled_event) {
    return [&](http::request&) -> tandem::task<http::response> {
        entered.set();
        try {
            co_await tandem::sleep_for(1h);
        } catch (const tandem::cancelled&) {
            ++cancellations;
            cancelled_event.set();
            throw;
        }
        co_return http::response::text("never");
    };
}

/// Sends `data` on a socket from a thread of its own, in random splits with random pauses
/// (pacing, so bytes land at every point of the server's turn), then half-closes if asked.
void send_paced(int sock, const std::string& data, std::uint32_t seed, bool close) {
    std::mt19937 wr(seed);
    std::size_t at = 0;
    while (at < data.size()) {
        const std::size_t n = std::min<std::size_t>(data.size() - at, 1 + wr() % (wr() % 2 ? 9 : 5000));
        pollfd p{sock, POLLOUT, 0};
        ::poll(&p, 1, 10'000);
        const ssize_t sent = ::send(sock, data.data() + at, n, MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN) throw std::system_error(errno, std::generic_category(), "send");
        if (sent > 0) at += static_cast<std::size_t>(sent);
        const auto pause = wr() % 8;
        if (pause == 0) std::this_thread::sleep_for(std::chrono::microseconds(wr() % 300));
        if (pause == 1) std::this_thread::yield();
    }
    if (close) ::shutdown(sock, SHUT_WR);
}

} // namespace

TEST_CASE("pipelined requests that end exactly on the read buffer's edge are all answered", "[http][delivery]") {
    http::server_options o;
    o.idle_timeout = 30s; // a stall would show as a with_timeout failure, not as a close
    with_server(echo_id_routes(), o, [](std::uint16_t port, http::server&) -> tandem::task<> {
        for (std::size_t size : {32u, 64u, 128u, 256u, 512u, 1024u, 2048u, 4096u, 8192u}) {
            const int count = static_cast<int>(3 * 16384 / size + 1);
            std::string batch;
            for (int i = 0; i < count; ++i) batch += sized_request(i, size);
            auto s = co_await tandem::tcp_stream::connect(local(port));
            co_await s.write_all(batch); // one write: the server's reads fill 16 KiB exactly
            auto answers = co_await tandem::with_timeout(5s, read_answers(s, static_cast<std::size_t>(count), false));
            INFO("request size " << size);
            CHECK(answers == ids(0, count));
        }
    });
}

TEST_CASE("a request followed by a half-close is answered and closed at once", "[http][delivery]") {
    http::server_options o;
    o.idle_timeout = 30s;
    with_server(echo_id_routes(), o, [](std::uint16_t port, http::server&) -> tandem::task<> {
        for (int i = 0; i < 40; ++i) {
            auto s = co_await tandem::tcp_stream::connect(local(port));
            co_await s.write_all(sized_request(i, 64));
            s.shutdown_write();
            const auto start = clock_type::now();
            auto answers = co_await tandem::with_timeout(5s, read_answers(s, 1, true)); // to end of stream
            CHECK(answers == ids(i, 1));
            CHECK(clock_type::now() - start < 2s);
        }
    });
}

TEST_CASE("property: random pipelined batches in random splits are all answered in order", "[http][delivery][property]") {
    const auto seed = static_cast<std::uint32_t>(std::random_device{}());
    INFO("seed " << seed);
    std::printf("http delivery property seed: %u\n", seed);
    http::server_options o;
    o.idle_timeout = 30s;
    with_server(echo_id_routes(), o, [seed](std::uint16_t port, http::server&) -> tandem::task<> {
        std::mt19937 rng(seed);
        const std::size_t divisors[] = {32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
        for (int round = 0; round < 60; ++round) {
            const bool uniform = rng() % 2 == 0;
            const std::size_t fixed = divisors[rng() % std::size(divisors)];
            std::string batch;
            int count = 0;
            const std::size_t budget = 1 + rng() % 200'000;
            while (batch.size() < budget || count == 0) {
                const std::size_t size = uniform ? fixed : 32 + rng() % (8192 - 32 + 1);
                batch += sized_request(count++, size);
            }
            const bool half_close = rng() % 3 == 0;
            INFO("round " << round << ": " << count << " requests, " << batch.size() << " bytes, "
                          << (uniform ? "uniform" : "mixed") << (half_close ? ", half-closed" : ""));
            auto s = co_await tandem::tcp_stream::connect(local(port));
            // Write and read at once: a big batch fills both directions' socket buffers.
            auto writer = [](tandem::tcp_stream& st, std::string data, std::mt19937 r, bool close) -> tandem::task<> {
                co_await write_split(st, data, r);
                if (close) st.shutdown_write();
            };
            auto results = co_await tandem::with_timeout(
                10s, tandem::when_all(writer(s, batch, std::mt19937(rng()), half_close),
                                      read_answers(s, static_cast<std::size_t>(count), half_close)));
            CHECK(std::get<1>(results) == ids(0, count));
        }
    });
}

TEST_CASE("a body announced but not sent costs nothing: memory follows bytes received", "[http][delivery][memory]") {
    http::router r;
    r.post("/upload", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text(std::to_string(req.body().size()));
    });
    with_server(std::move(r), {}, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        constexpr int connections = 50;
        constexpr std::size_t sent = 100'000;
        std::vector<tandem::tcp_stream> streams;
        const std::string head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 8388608\r\n\r\n";
        for (int i = 0; i < connections; ++i) {
            streams.push_back(co_await tandem::tcp_stream::connect(local(port)));
            co_await streams.back().write_all(head + std::string(sent, 'b'));
        }
        const std::uint64_t expected = connections * (head.size() + sent);
        const auto deadline = clock_type::now() + 5s;
        while (server.stats().bytes_received < expected && clock_type::now() < deadline) co_await tandem::yield();
        CHECK(server.stats().bytes_received == expected);
        // Each connection holds at most about twice what it received, never the 8 MiB announced.
        const std::uint64_t held = server.stats().body_bytes_held;
        INFO("held " << held);
        CHECK(held <= connections * 2 * (sent + 16384));
        streams.clear();
        const auto gone = clock_type::now() + 5s;
        while (server.connection_count() > 0 && clock_type::now() < gone) co_await tandem::yield();
        CHECK(server.stats().body_bytes_held == 0);
    });
}

TEST_CASE("the server-wide body memory bound answers 503 and is never passed", "[http][delivery][memory]") {
    http::router r;
    r.post("/upload", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text(std::to_string(req.body().size()));
    });
    http::server_options o;
    o.max_body_memory = 1 << 20;
    with_server(std::move(r), o, [](std::uint16_t port, http::server& server) -> tandem::task<> {
        const std::string head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 400000\r\n\r\n";
        tandem::event go;
        // Each upload sends most of its body and waits, so the server holds all of them at once.
        auto upload = [](std::uint16_t p, std::string h, tandem::event& rest) -> tandem::task<std::string> {
            auto s = co_await tandem::tcp_stream::connect(local(p));
            std::string reply;
            try {
                co_await s.write_all(h + std::string(300'000, 'b'));
                co_await rest.wait();
                co_await s.write_all(std::string(100'000, 'b'));
            } catch (const std::system_error&) { // a refused upload may be reset mid-write
            }
            try {
                char buf[4096];
                for (;;) {
                    const std::size_t n = co_await s.read_some(std::span<char>(buf));
                    if (n == 0) break;
                    reply.append(buf, n);
                    if (reply.find("\r\n\r\n") != std::string::npos) break;
                }
            } catch (const std::system_error&) {
            }
            co_return reply;
        };
        std::vector<tandem::join_handle<std::string>> uploads;
        for (int i = 0; i < 8; ++i) uploads.push_back(tandem::spawn(upload(port, head, go)));
        std::uint64_t peak = 0;
        const auto until = clock_type::now() + 500ms;
        while (clock_type::now() < until) { // watch the server take in what was sent
            peak = std::max(peak, server.stats().body_bytes_held);
            co_await tandem::yield();
        }
        go.set();
        int ok = 0, busy = 0;
        for (auto& h : uploads) {
            const std::string reply = co_await h;
            if (reply.rfind("HTTP/1.1 200 ", 0) == 0) ++ok;
            if (reply.rfind("HTTP/1.1 503 ", 0) == 0) ++busy;
        }
        INFO("ok " << ok << ", busy " << busy << ", peak " << peak);
        CHECK(ok >= 1);
        CHECK(busy >= 1);
        CHECK(peak > 0);
        CHECK(peak <= (1u << 20));
        CHECK(server.stats().responses[5] >= 1);
    });
}

TEST_CASE("drain_timeout bounds shutdown: stuck handlers are cancelled and serve() returns", "[http][delivery][shutdown]") {
    auto main = []() -> tandem::task<> {
        tandem::event entered, cancelled_event;
        int cancelled = 0;
        http::router r;
        r.get("/stuck", until_cancelled(entered, cancelled, cancelled_event));
        http::server_options o;
        o.drain_timeout = 200ms;
        auto listener = tandem::tcp_listener::bind(tandem::address("127.0.0.1", 0));
        const std::uint16_t port = listener.local_address().port();
        http::server server(std::move(r), o);
        auto serving = tandem::spawn(server.serve(listener), "server");
        std::vector<tandem::tcp_stream> clients;
        for (int i = 0; i < 3; ++i) {
            clients.push_back(co_await tandem::tcp_stream::connect(local(port)));
            co_await clients.back().write_all(std::string_view("GET /stuck HTTP/1.1\r\nHost: a\r\n\r\n"));
        }
        co_await entered.wait();
        const auto start = clock_type::now();
        server.shutdown();
        co_await tandem::with_timeout(5s, [](tandem::join_handle<void>& h) -> tandem::task<> { co_await h; }(serving));
        const auto took = clock_type::now() - start;
        CHECK(took >= 150ms);
        CHECK(took < 3s);
        CHECK(server.connection_count() == 0);
        CHECK(cancelled >= 1);
    };
    tandem::sync_wait(main());
}

TEST_CASE("a client that closes or resets its connection cancels its running handler", "[http][delivery][cancel]") {
    auto main = [](bool reset) -> tandem::task<> {
        tandem::event entered, cancelled_event;
        int cancellations = 0;
        http::router r;
        r.get("/wait", until_cancelled(entered, cancellations, cancelled_event));
        auto listener = tandem::tcp_listener::bind(tandem::address("127.0.0.1", 0));
        const std::uint16_t port = listener.local_address().port();
        http::server server(std::move(r));
        auto serving = tandem::spawn(server.serve(listener), "server");
        {
            auto s = co_await tandem::tcp_stream::connect(local(port));
            co_await s.write_all(std::string_view("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n"));
            co_await entered.wait();
            if (reset) {
                const ::linger l{1, 0}; // close with RST
                ::setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
            }
        } // closed here
        const auto start = clock_type::now();
        co_await tandem::with_timeout(5s, [](tandem::event& e) -> tandem::task<> { co_await e.wait(); }(cancelled_event));
        CHECK(clock_type::now() - start < 2s);
        const auto gone = clock_type::now() + 5s;
        while (server.stats().clients_gone == 0 && clock_type::now() < gone) co_await tandem::yield();
        CHECK(server.stats().clients_gone == 1);
        server.shutdown();
        co_await serving;
    };
    SECTION("close") { tandem::sync_wait(main(false)); }
    SECTION("reset") { tandem::sync_wait(main(true)); }
}

TEST_CASE("io_timeout cuts no progress not a slow but steady download", "[http][delivery][timeout]") {
    http::router r;
    r.get("/big", [](http::request&) -> tandem::task<http::response> {
        co_return http::response::text(std::string(4 << 20, 'd'));
    });
    http::server_options o;
    o.io_timeout = 300ms;
    with_server(std::move(r), o, [](std::uint16_t port, http::server&) -> tandem::task<> {
        { // steady: 4 MiB at about 4 MiB/s, well past io_timeout in total
            auto s = co_await tandem::tcp_stream::connect(local(port));
            s.set_receive_buffer_size(64 * 1024);
            co_await s.write_all(std::string_view("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"));
            std::size_t total = 0;
            char buf[65536];
            const auto start = clock_type::now();
            while (total < (4u << 20)) {
                const std::size_t n = co_await s.read_some(std::span<char>(buf));
                if (n == 0) break;
                total += n;
                co_await tandem::sleep_for(15ms); // throttle: about 64 KiB per 16 ms
            }
            CHECK(total > (4u << 20));
            CHECK(clock_type::now() - start > 600ms); // it really was slower than the timeout
        }
        { // stuck: never reads; the server gives up
            auto s = co_await tandem::tcp_stream::connect(local(port));
            s.set_receive_buffer_size(16 * 1024);
            co_await s.write_all(std::string_view("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"));
            co_await tandem::sleep_for(1500ms); // ≥ 2 io_timeouts and sweeps without reading
            const http_harness::drained got = co_await http_harness::read_until_close(s);
            CHECK((got.reset || got.data.size() < (4u << 20)));
        }
    });
}

// The cooperative I/O budget (net.hpp) makes the flooding connection's task yield to the loop
// every few dozen operations; without it /ping waited seconds (p99 1.5 s measured).
TEST_CASE("a pipelining flood on one connection does not starve /ping on another", "[http][delivery][fairness]") {
    with_server(echo_id_routes(), {}, [](std::uint16_t port, http::server&) -> tandem::task<> {
        bool stop = false;
        auto flood = [](std::uint16_t p, bool& halt) -> tandem::task<> {
            auto s = co_await tandem::tcp_stream::connect(local(p));
            std::string batch;
            for (int i = 0; i < 2000; ++i) batch += sized_request(i, 64);
            auto drain = [](tandem::tcp_stream& st) -> tandem::task<> {
                char buf[65536];
                while (co_await st.read_some(std::span<char>(buf)) != 0) {
                }
            };
            auto reader = tandem::spawn(drain(s));
            while (!halt) co_await s.write_all(batch);
            s.shutdown_write();
            co_await reader;
        };
        auto flooder = tandem::spawn(flood(port, stop));
        co_await tandem::sleep_for(100ms); // the flood is running
        http::client c(local(port));
        std::vector<std::chrono::nanoseconds> took;
        const auto give_up = clock_type::now() + 10s; // starved pings must not hang the suite
        for (int i = 0; i < 50 && clock_type::now() < give_up; ++i) {
            const auto start = clock_type::now();
            auto reply = co_await c.get("/ping");
            took.push_back(clock_type::now() - start);
            CHECK(reply.status == 200);
        }
        stop = true;
        co_await flooder;
        std::sort(took.begin(), took.end());
        const auto p99 = took[took.size() * 99 / 100];
        INFO("p99 " << std::chrono::duration_cast<std::chrono::microseconds>(p99).count() << " us");
        CHECK(p99 < 250ms); // generous for a loaded CI machine; starvation is seconds
    });
}

TEST_CASE("a client that leaves takes its queued offload job out of the pool's queue", "[http][delivery][cancel]") {
    tandem::thread_pool pool(tandem::thread_pool_options{.threads = 1});
    std::atomic<int> ran{0};
    http::router r;
    r.get("/job", [&](http::request&) -> tandem::task<http::response> {
        co_await pool.run([&] {
            std::this_thread::sleep_for(300ms); // stands in for CPU work on the worker
            ++ran;
        });
        co_return http::response::text("done");
    });
    with_server(std::move(r), {}, [&](std::uint16_t port, http::server& server) -> tandem::task<> {
        auto first = tandem::spawn([](std::uint16_t p) -> tandem::task<int> {
            http::client c(local(p));
            co_return (co_await c.get("/job")).status;
        }(port));
        while (pool.running() == 0) co_await tandem::yield();
        {
            auto s = co_await tandem::tcp_stream::connect(local(port));
            co_await s.write_all(std::string_view("GET /job HTTP/1.1\r\nHost: a\r\n\r\n"));
            while (pool.queued() == 0) co_await tandem::yield();
        } // the second client leaves while its job waits for the worker
        const auto gone = clock_type::now() + 5s;
        while (pool.queued() != 0 && clock_type::now() < gone) co_await tandem::yield();
        CHECK(pool.queued() == 0);
        const int status = co_await first;
        CHECK(status == 200);
        CHECK(ran == 1);
        CHECK(server.stats().clients_gone == 1);
    });
}

TEST_CASE("TCP urgent data between pipelined requests does not stall the connection", "[http][delivery]") {
    // recv stops short at an urgent byte's mark with the next request still queued: a short
    // read must not be taken as "the socket is empty" then (the reactor remembers EPOLLPRI).
    http::server_options o;
    o.idle_timeout = 30s; // a stall would show as the with_timeout failure
    with_server(echo_id_routes(), o, [](std::uint16_t port, http::server&) -> tandem::task<> {
        for (int i = 0; i < 20; ++i) {
            auto s = co_await tandem::tcp_stream::connect(local(port));
            // First a plain exchange, so the server waits on a registered socket for its edge.
            co_await s.write_all(sized_request(0, 64));
            auto first = co_await tandem::with_timeout(5s, read_answers(s, 1, false));
            CHECK(first == ids(0, 1));
            co_await s.write_all(sized_request(1, 64 + static_cast<std::size_t>(i)));
            REQUIRE(::send(s.native_handle(), "!", 1, MSG_OOB) == 1);
            const bool half_close = i % 2 == 1;
            co_await s.write_all(sized_request(2, 64));
            if (half_close) s.shutdown_write();
            auto answers = co_await tandem::with_timeout(5s, read_answers(s, 2, half_close));
            CHECK(answers == ids(1, 2));
        }
    });
}

TEST_CASE("property: a client on its own thread with random splits and pauses gets every answer in order", "[http][delivery][property]") {
    // The client runs on another thread, so bytes land at any moment of the server's turn:
    // between a short read and the wait that follows it, during a handler's peer watch, with
    // a half-close right behind them.
    const auto seed = static_cast<std::uint32_t>(std::random_device{}());
    INFO("seed " << seed);
    std::printf("http delivery thread property seed: %u\n", seed);
    http::router r = echo_id_routes();
    r.get("/yield/:id", [](http::request& req) -> tandem::task<http::response> {
        co_await tandem::yield(); // a handler that suspends: the peer watch is armed meanwhile
        co_return http::response::text(std::string(req.param("id")));
    });
    http::server_options o;
    o.idle_timeout = 30s;
    tandem::thread_pool pool(tandem::thread_pool_options{.threads = 2});
    with_server(std::move(r), o, [seed, &pool](std::uint16_t port, http::server&) -> tandem::task<> {
        std::mt19937 rng(seed);
        for (int round = 0; round < 30; ++round) {
            // A half-close during a suspended handler cancels it (cancel_on_disconnect, as
            // documented): rounds that half-close send only handlers that finish at once.
            const bool half_close = rng() % 2 == 0;
            std::string batch;
            int count = 0;
            const std::size_t budget = 1 + rng() % 60'000;
            while (batch.size() < budget || count == 0) {
                std::string one = sized_request(count, 32 + rng() % 3000);
                if (!half_close && rng() % 3 == 0) one.insert(5, "yield/"); // GET /yield/<id>
                batch += one;
                ++count;
            }
            const std::uint32_t client_seed = rng();
            INFO("round " << round << ": " << count << " requests, " << batch.size() << " bytes"
                          << (half_close ? ", half-closed" : ""));
            auto s = co_await tandem::tcp_stream::connect(local(port));
            const int fd = s.native_handle();
            auto writer = [](tandem::thread_pool& p, int sock, const std::string& data, std::uint32_t wseed,
                             bool close) -> tandem::task<> { co_await p.run(send_paced, sock, std::cref(data), wseed, close); };
            auto results = co_await tandem::with_timeout(
                20s, tandem::when_all(writer(pool, fd, batch, client_seed, half_close),
                                      read_answers(s, static_cast<std::size_t>(count), half_close)));
            CHECK(std::get<1>(results) == ids(0, count));
        }
    });
}

namespace {

/// n bytes that differ with n and with their offset, so a lost, doubled or moved byte shows.
std::string pattern_body(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + n) % 26);
    return s;
}

/// One response taken off the front of `in`: status and body (Content-Length or chunked);
/// nullopt while it is incomplete.
struct parsed_response {
    int status = 0;
    std::string body;
    std::size_t content_length = 0;
    bool has_length = false;
};
std::optional<parsed_response> take_response(std::string& in, bool head_request) {
    const std::size_t end = in.find("\r\n\r\n");
    if (end == std::string::npos) return std::nullopt;
    parsed_response r;
    r.status = std::stoi(in.substr(9, 3));
    const std::string head = in.substr(0, end + 2);
    bool chunked = false;
    for (std::size_t pos = head.find("\r\n") + 2; pos < head.size();) {
        const std::size_t eol = head.find("\r\n", pos);
        const std::string line = head.substr(pos, eol - pos);
        pos = eol + 2;
        if (line.rfind("Content-Length: ", 0) == 0) {
            r.content_length = std::stoull(line.substr(16));
            r.has_length = true;
        }
        if (line == "Transfer-Encoding: chunked") chunked = true;
    }
    std::size_t at = end + 4;
    if (head_request) {
        in.erase(0, at);
        return r;
    }
    if (chunked) {
        for (;;) {
            const std::size_t eol = in.find("\r\n", at);
            if (eol == std::string::npos) return std::nullopt;
            const std::size_t size = std::stoull(in.substr(at, eol - at), nullptr, 16);
            if (in.size() < eol + 2 + size + 2) return std::nullopt;
            r.body.append(in, eol + 2, size);
            REQUIRE(in.substr(eol + 2 + size, 2) == "\r\n");
            at = eol + 2 + size + 2;
            if (size == 0) break;
        }
    } else {
        if (in.size() < at + r.content_length) return std::nullopt;
        r.body = in.substr(at, r.content_length);
        at += r.content_length;
    }
    in.erase(0, at);
    return r;
}

std::size_t count_of(const std::string& haystack, std::string_view needle) {
    std::size_t n = 0;
    for (std::size_t pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + 1)) ++n;
    return n;
}

http::router sized_routes() {
    http::router r;
    r.get("/size/:n", [](http::request& req) -> tandem::task<http::response> {
        co_return http::response::text(pattern_body(std::stoull(std::string(req.param("n")))));
    });
    r.get("/stream/:n", [](http::request& req) -> tandem::task<http::response> {
        const std::size_t n = std::stoull(std::string(req.param("n")));
        co_return http::response::stream("text/plain", [n](http::body_writer& w) -> tandem::task<void> {
            const std::string all = pattern_body(n);
            for (std::size_t at = 0; at < n; at += 3000) co_await w.write(std::string_view(all).substr(at, 3000));
        });
    });
    r.get("/throw", [](http::request&) -> tandem::task<http::response> {
        http::response partial = http::response::text(pattern_body(5000));
        partial.set_header("X-Half", "built");
        if (!partial.body.empty()) throw std::runtime_error("handler failed after building half a response");
        co_return partial;
    });
    return r;
}

} // namespace

TEST_CASE("a slow reader gets every response byte-exact and in order: every body size and HEAD", "[http][delivery][redteam]") {
    struct item {
        std::string method;
        std::string target;
        int status;
        std::string body;          // what a GET gets
        std::size_t announced = 0; // Content-Length a HEAD sees
    };
    std::vector<item> items;
    const std::size_t sizes[] = {0, 1, 2, 2047, 2048, 2049, 4096, 16383, 16384, 16385, 65536, std::size_t{1} << 20};
    for (std::size_t n : sizes) {
        items.push_back({"GET", "/size/" + std::to_string(n), 200, pattern_body(n), n});
        items.push_back({"HEAD", "/size/" + std::to_string(n), 200, "", n});
        items.push_back({"GET", "/stream/" + std::to_string(n), 200, pattern_body(n), 0});
        if (n == 2048) {
            items.push_back({"GET", "/throw", 500, "internal server error\n", 0});
            items.push_back({"GET", "/nothing/here", 404, "", 0});
            items.push_back({"HEAD", "/throw", 500, "", 22});
        }
    }
    std::vector<std::pair<int, std::uint64_t>> logged;
    http::server_options options;
    options.access_log = [&](const http::access_record& r) { logged.emplace_back(r.status, r.bytes); };
    options.on_error = [](const http::handler_error&) {};
    with_server(sized_routes(), options, [&](std::uint16_t port, http::server& server) -> tandem::task<> {
        auto s = co_await tandem::tcp_stream::connect(local(port));
        s.set_receive_buffer_size(16384);
        std::string batch;
        for (const item& it : items) batch += it.method + " " + it.target + " HTTP/1.1\r\nHost: x\r\n\r\n";
        co_await s.write_all(batch);
        std::string in;
        char buf[1500];
        std::size_t next = 0;
        std::uint64_t received = 0;
        const auto deadline = clock_type::now() + 60s;
        while (next < items.size()) {
            INFO("next " << next << " received " << received << " buffered " << in.size());
            REQUIRE(clock_type::now() < deadline);
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            REQUIRE(n > 0);
            received += n;
            in.append(buf, n);
            for (int i = 0; i < 3; ++i) co_await tandem::yield(); // read slowly: the server's sends come out partial
            while (next < items.size()) {
                const item& it = items[next];
                auto r = take_response(in, it.method == "HEAD");
                if (!r) break;
                INFO(it.method << " " << it.target);
                CHECK(r->status == it.status);
                if (it.status == 404) {
                    CHECK_FALSE(r->body.empty());
                } else {
                    CHECK(r->body == it.body);
                }
                if (it.method == "HEAD") {
                    CHECK(r->has_length);
                    CHECK(r->content_length == it.announced);
                }
                ++next;
            }
        }
        CHECK(in.empty());
        // The access log saw each response with the body bytes that went out.
        REQUIRE(logged.size() == items.size());
        for (std::size_t i = 0; i < items.size(); ++i) {
            INFO(items[i].method << " " << items[i].target);
            CHECK(logged[i].first == items[i].status);
            if (items[i].status != 404) CHECK(logged[i].second == items[i].body.size());
        }
        CHECK(server.stats().responses[2] == 3 * std::size(sizes));
        CHECK(server.stats().responses[5] == 2);
        CHECK(server.stats().responses[4] == 1);
    });
}

TEST_CASE("refusals in the middle of pipelines hand the workspace back while other connections reuse it", "[http][delivery][redteam]") {
    // Each refusal gives its workspace back before its answer is written; the next connection
    // takes that workspace at once. Under ASan a use of the old one after that shows.
    http::server_options options;
    options.limits.max_head = 4096;
    options.max_body_memory = 64 * 1024;
    options.limits.max_body = 1 << 20;
    options.on_error = [](const http::handler_error&) {};
    std::vector<std::pair<std::string, int>> logged; // target, status
    options.access_log = [&](const http::access_record& r) { logged.emplace_back(std::string(r.target), r.status); };
    with_server(sized_routes(), options, [&](std::uint16_t port, http::server& server) -> tandem::task<> {
        const std::string ok = "GET /size/2049 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /size/10 HTTP/1.1\r\nHost: x\r\n\r\n";
        const std::string bad[] = {
            "GET /size/1 HTTP/1.1\r\nHost: x\r\n bad: fold\r\n\r\n",                         // 400
            "GET /size/1 HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(8000, 'b') + "\r\n\r\n", // 431
            "POST /size/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",             // 413
            "POST /size/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2 junk\r\nab\r\n0\r\n\r\n", // 400
            "GET /size/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",                  // 400
        };
        std::vector<tandem::task<http_harness::drained>> readers;
        std::vector<tandem::tcp_stream> streams;
        for (int round = 0; round < 4; ++round) {
            for (const std::string& b : bad) {
                auto s = co_await tandem::tcp_stream::connect(local(port));
                const std::string all = ok + b + ok; // the second ok is never answered
                co_await s.write_all(all);
                streams.push_back(std::move(s));
            }
        }
        for (std::size_t i = 0; i < streams.size(); ++i) {
            auto d = co_await http_harness::read_until_close(streams[i]);
            INFO("connection " << i);
            std::string in = d.data;
            auto r1 = take_response(in, false);
            REQUIRE(r1);
            CHECK(r1->body == pattern_body(2049));
            auto r2 = take_response(in, true);
            REQUIRE(r2);
            CHECK(r2->content_length == 10);
            auto r3 = take_response(in, false);
            REQUIRE(r3);
            CHECK(r3->status >= 400);
            CHECK(in.empty());
        }
        CHECK(server.stats().responses[2] == 2 * streams.size());
        CHECK(server.stats().responses[4] == streams.size());
        // Every response is in the access log, refusals included, with the target when the
        // head got that far.
        REQUIRE(logged.size() == 3 * streams.size());
        std::size_t refused = 0;
        for (const auto& [target, status] : logged) {
            if (status < 400) continue;
            ++refused;
            CHECK((target.empty() || target == "/size/1"));
        }
        CHECK(refused == streams.size());
    });
}

TEST_CASE("a client that resets in the middle of a large response leaves the server serving others", "[http][delivery][redteam]") {
    with_server(sized_routes(), {}, [&](std::uint16_t port, http::server& server) -> tandem::task<> {
        for (const char* target : {"/size/1048576", "/stream/1048576", "/size/2048"}) {
            for (int i = 0; i < 3; ++i) {
                auto s = co_await tandem::tcp_stream::connect(local(port));
                s.set_receive_buffer_size(4096);
                const std::string req = std::string("GET ") + target + " HTTP/1.1\r\nHost: x\r\n\r\nGET /size/5 HTTP/1.1\r\nHost: x\r\n\r\n";
                co_await s.write_all(req);
                char buf[100];
                const std::size_t n = co_await s.read_some(std::span<char>(buf));
                REQUIRE(n > 0);
                const ::linger lg{1, 0};
                ::setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                s.close();
            }
        }
        const std::string reply = co_await http_harness::raw_exchange(port, "GET /size/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        std::string in = reply;
        auto r = take_response(in, false);
        REQUIRE(r);
        CHECK(r->body == pattern_body(3));
        const auto gone = clock_type::now() + 10s;
        while (server.connection_count() > 0 && clock_type::now() < gone) co_await tandem::yield();
        CHECK(server.connection_count() == 0);
    });
}

TEST_CASE("response heads larger than the workspace go out whole and their memory is not kept", "[http][delivery][redteam]") {
    http::router r;
    r.get("/big/:n", [](http::request& req) -> tandem::task<http::response> {
        const std::size_t n = std::stoull(std::string(req.param("n")));
        http::response resp = http::response::text("ok");
        resp.set_header("X-Big", std::string(n, 'v'));
        for (int i = 0; i < 200; ++i) resp.set_header("X-Many-" + std::to_string(i), std::to_string(i));
        co_return resp;
    });
    r.get("/date", [](http::request&) -> tandem::task<http::response> {
        http::response resp = http::response::text("dated");
        resp.set_header("date", "Thu, 01 Jan 1970 00:00:00 GMT");
        resp.set_header("Content-Length", "999");
        co_return resp;
    });
    r.get("/split", [](http::request&) -> tandem::task<http::response> {
        co_return http::response(200, "x", "text/plain\r\nX-Injected: 1");
    });
    http::server_options options;
    options.on_error = [](const http::handler_error&) {};
    with_server(std::move(r), options, [&](std::uint16_t port, http::server&) -> tandem::task<> {
        for (std::size_t n : {std::size_t{100}, std::size_t{20000}, std::size_t{1} << 20}) {
            std::string in = co_await http_harness::raw_exchange(
                port, "GET /big/" + std::to_string(n) + " HTTP/1.1\r\nHost: x\r\n\r\nGET /split HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            INFO("header of " << n);
            CHECK(in.find("X-Big: " + std::string(n, 'v') + "\r\n") != std::string::npos);
            CHECK(in.find("X-Many-199: 199\r\n") != std::string::npos);
            auto r1 = take_response(in, false);
            REQUIRE(r1);
            CHECK(r1->body == "ok");
            auto r2 = take_response(in, false);
            REQUIRE(r2);
            CHECK(r2->status == 500);
            CHECK(in.find("X-Injected") == std::string::npos);
        }
        // Date, like the framing headers, is the server's: one, never the handler's second.
        std::string in = co_await http_harness::raw_exchange(port, "GET /date HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        CHECK(count_of(in, "Date: ") + count_of(in, "date: ") == 1);
        CHECK(in.find("1970") == std::string::npos);
        CHECK(count_of(in, "Content-Length: ") == 1);
        auto r = take_response(in, false);
        REQUIRE(r);
        CHECK(r->body == "dated");
    });
}

TEST_CASE("bytes_sent counts every byte the client reads: copied, gathered, streamed and refused", "[http][delivery][redteam][metrics]") {
    with_server(sized_routes(), {}, [&](std::uint16_t port, http::server& server) -> tandem::task<> {
        std::uint64_t read_total = 0;
        for (const char* target : {"/size/0", "/size/2048", "/size/2049", "/size/70000", "/stream/0", "/stream/7000", "/nope"}) {
            for (const char* method : {"GET", "HEAD"}) {
                const std::string reply = co_await http_harness::raw_exchange(
                    port, std::string(method) + " " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                read_total += reply.size();
            }
        }
        const std::string refused = co_await http_harness::raw_exchange(port, "GET / HTTP/9.9\r\n\r\n");
        read_total += refused.size();
        {
            // 100 Continue is on the wire too.
            auto s = co_await tandem::tcp_stream::connect(local(port));
            co_await s.write_all(std::string_view("POST /size/4 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"));
            std::string got;
            char buf[4096];
            while (got.find("\r\n\r\n") == std::string::npos) {
                const std::size_t n = co_await s.read_some(std::span<char>(buf));
                REQUIRE(n > 0);
                got.append(buf, n);
            }
            CHECK(got.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0) == 0);
            co_await s.write_all(std::string_view("abc"));
            got += (co_await http_harness::read_until_close(s)).data;
            CHECK(got.find("405") != std::string::npos);
            read_total += got.size();
        }
        CHECK(server.stats().bytes_sent == read_total);
    });
}

TEST_CASE("a handler that throws cancelled without being cancelled answers 500 and is reported", "[http][delivery][redteam]") {
    http::router r;
    r.get("/thrown", [](http::request&) -> tandem::task<http::response> {
        throw tandem::cancelled{};
        co_return http::response::text("unreachable");
    });
    r.get("/awaited", [](http::request&) -> tandem::task<http::response> {
        // A task cancelled elsewhere: awaiting it throws cancelled into this handler.
        auto job = tandem::spawn([]() -> tandem::task<void> { co_await tandem::sleep_for(1h); }());
        job.cancel();
        co_await job;
        co_return http::response::text("unreachable");
    });
    int reported = 0;
    http::server_options options;
    options.on_error = [&](const http::handler_error&) { ++reported; };
    with_server(std::move(r), options, [&](std::uint16_t port, http::server&) -> tandem::task<> {
        std::string in = co_await http_harness::raw_exchange(
            port, "GET /thrown HTTP/1.1\r\nHost: x\r\n\r\nGET /awaited HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        auto a = take_response(in, false);
        REQUIRE(a);
        CHECK(a->status == 500);
        auto b = take_response(in, false);
        REQUIRE(b);
        CHECK(b->status == 500);
        CHECK(reported == 2);
    });
}

TEST_CASE("property: every header of pipelined heads that straddle the buffer's end reaches the handler intact", "[http][delivery][property][redteam]") {
    // The head is parsed as its bytes pass and its views rebased when the buffer compacts or
    // grows between reads: each answer echoes every header the handler saw, so a view left
    // behind in moved bytes shows as a wrong answer (or, under ASan, a use after free).
    const char* fixed = std::getenv("TANDEM_SEED"); // replays a failure
    const auto seed = fixed ? static_cast<std::uint32_t>(std::strtoul(fixed, nullptr, 10))
                            : static_cast<std::uint32_t>(std::random_device{}());
    INFO("seed " << seed);
    std::printf("http header-rebase property seed: %u\n", seed);
    http::router r;
    r.get("/h/:id", [](http::request& req) -> tandem::task<http::response> {
        std::string out(req.param("id"));
        for (const http::header& h : req.headers()) {
            out += '|';
            out.append(h.name);
            out += '=';
            out.append(h.value);
        }
        co_return http::response::text(std::move(out));
    });
    http::server_options o;
    o.idle_timeout = 30s;
    o.limits.max_head = 65536; // heads up to most of the 16 KiB buffer, and some that grow it
    with_server(std::move(r), o, [seed](std::uint16_t port, http::server&) -> tandem::task<> {
        std::mt19937 rng(seed);
        for (int round = 0; round < 30; ++round) {
            std::string batch;
            std::vector<std::string> expected;
            const std::size_t budget = 1 + rng() % 100'000;
            for (int id = 0; batch.size() < budget || id == 0; ++id) {
                char digits[8];
                std::snprintf(digits, sizeof digits, "%06d", id);
                std::string head = std::string("GET /h/") + digits + " HTTP/1.1\r\n";
                std::string answer = digits;
                const int fields = 1 + static_cast<int>(rng() % 40);
                const std::size_t value_max = 1 + rng() % (rng() % 4 == 0 ? 1500 : 400);
                for (int f = 0; f < fields; ++f) {
                    const std::string name = f == 0 ? "Host" : "X-F" + std::to_string(f);
                    std::string value;
                    const std::size_t len = rng() % value_max;
                    for (std::size_t k = 0; k < len; ++k) value += static_cast<char>(rng() % 4 ? 'a' + rng() % 26 : 0x80 + rng() % 0x80);
                    if (!value.empty()) value.front() = 'v'; // no OWS to trim
                    if (!value.empty()) value.back() = 'w';
                    head += name + ":" + std::string(rng() % 3, ' ') + value + std::string(rng() % 2, '\t') + "\r\n";
                    answer += "|" + name + "=" + value;
                }
                head += "\r\n";
                batch += head;
                expected.push_back(answer);
            }
            INFO("round " << round << ": " << expected.size() << " requests, " << batch.size() << " bytes");
            auto s = co_await tandem::tcp_stream::connect(local(port));
            auto writer = [](tandem::tcp_stream& st, std::string data, std::mt19937 wr) -> tandem::task<> {
                co_await write_split(st, data, wr);
            };
            auto results = co_await tandem::with_timeout(
                20s, tandem::when_all(writer(s, batch, std::mt19937(rng())), read_answers(s, expected.size(), false)));
            const std::vector<std::string>& got = std::get<1>(results);
            REQUIRE(got.size() == expected.size());
            for (std::size_t i = 0; i < got.size(); ++i) {
                INFO("request " << i);
                CHECK(got[i] == expected[i]);
            }
        }
    });
}
