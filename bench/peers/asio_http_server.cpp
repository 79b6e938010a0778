// HTTP peer: standalone asio with C++20 coroutines, one io_context thread, a minimal hand
// parser (finds the end of each head, answers the hello JSON; pipelining works).
//   asio_http_server --port 0
#include "asio_http_peer.hpp"

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

using asio::ip::tcp;

namespace {
constexpr std::string_view response =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n{\"message\":\"Hello from tandem\"}";

asio::awaitable<void> session(tcp::socket s) {
    std::string in, out;
    char buf[16384];
    try {
        for (;;) {
            const std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
            in.append(buf, n);
            out.clear();
            for (std::size_t end; (end = in.find("\r\n\r\n")) != std::string::npos;) {
                in.erase(0, end + 4);
                out += response;
            }
            if (!out.empty()) co_await asio::async_write(s, asio::buffer(out), asio::use_awaitable);
        }
    } catch (...) {
    }
}

} // namespace

int main(int argc, char** argv) { return peer::run(argc, argv, session); }
