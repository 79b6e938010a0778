// HTTP peer: standalone asio with C++20 coroutines, one io_context thread, a minimal hand
// parser (finds the end of each head, answers the hello JSON; pipelining works).
//   asio_http_server --port 0
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>
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

asio::awaitable<void> listen(tcp::acceptor& a) {
    for (;;) {
        tcp::socket s = co_await a.async_accept(asio::use_awaitable);
        s.set_option(tcp::no_delay(true));
        asio::co_spawn(a.get_executor(), session(std::move(s)), asio::detached);
    }
}
} // namespace

int main(int argc, char** argv) {
    unsigned short port = 0;
    for (int i = 1; i + 1 < argc; ++i)
        if (!std::strcmp(argv[i], "--port")) port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
    asio::io_context io(1);
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    std::printf("listening on http://127.0.0.1:%u\n", a.local_endpoint().port());
    std::fflush(stdout);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](auto, auto) { io.stop(); });
    asio::co_spawn(io, listen(a), asio::detached);
    io.run();
    return 0;
}
