// HTTP peer for the blocked-loop pair: standalone asio, one io_context thread, /compute?n=N
// offloaded to an asio::thread_pool (2 threads) and posted back; /ping answered inline.
// Minimal hand parsing (request line only).  asio_pool_http_server --port 0
#include "asio_http_peer.hpp"

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

using asio::ip::tcp;

namespace {
asio::thread_pool* g_pool;

double sum_sqrt(long n) {
    double s = 0;
    for (long i = 0; i < n; ++i) s += std::sqrt(static_cast<double>(i));
    return s;
}

std::string reply(std::string_view body, std::string_view type) {
    return "HTTP/1.1 200 OK\r\nContent-Type: " + std::string(type) + "\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

asio::awaitable<void> session(tcp::socket s) {
    std::string in;
    char buf[16384];
    auto ex = co_await asio::this_coro::executor;
    try {
        for (;;) {
            const std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
            in.append(buf, n);
            for (std::size_t end; (end = in.find("\r\n\r\n")) != std::string::npos;) {
                const std::string line = in.substr(0, in.find("\r\n"));
                in.erase(0, end + 4);
                std::string out;
                if (line.find(" /compute") != std::string::npos) {
                    long count = 20'000'000;
                    if (auto q = line.find("n="); q != std::string::npos) count = std::atol(line.c_str() + q + 2);
                    // Offload, then resume on the io_context with the result.
                    const double r = co_await asio::co_spawn(
                        *g_pool, [count]() -> asio::awaitable<double> { co_return sum_sqrt(count); }, asio::use_awaitable);
                    co_await asio::post(ex, asio::use_awaitable);
                    char json[64];
                    std::snprintf(json, sizeof json, "{\"result\": %.6f}", r);
                    out = reply(json, "application/json");
                } else {
                    out = reply("pong", "text/plain");
                }
                co_await asio::async_write(s, asio::buffer(out), asio::use_awaitable);
            }
        }
    } catch (...) {
    }
}

} // namespace

int main(int argc, char** argv) {
    asio::thread_pool pool(2);
    g_pool = &pool;
    return peer::run(argc, argv, session, [&pool] { pool.join(); });
}
