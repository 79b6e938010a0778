// Peer for bench/run_echo.py: a standalone-asio C++20-coroutine TCP echo server, written the
// way asio's own coroutine examples are. Same contract as tandem's examples: --port N, prints
// "listening on 127.0.0.1:PORT", exits 0 on SIGINT/SIGTERM. Built only in bench/.
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

using asio::ip::tcp;

static asio::awaitable<void> echo(tcp::socket socket) {
    char data[16384];
    try {
        for (;;) {
            const std::size_t n = co_await socket.async_read_some(asio::buffer(data), asio::use_awaitable);
            co_await asio::async_write(socket, asio::buffer(data, n), asio::use_awaitable);
        }
    } catch (const std::exception&) {
    }
}

static asio::awaitable<void> listen(tcp::acceptor& acceptor) {
    for (;;) {
        tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
        s.set_option(tcp::no_delay(true));
        asio::co_spawn(acceptor.get_executor(), echo(std::move(s)), asio::detached);
    }
}

int main(int argc, char** argv) {
    unsigned short port = 0;
    if (argc == 3 && std::strcmp(argv[1], "--port") == 0) port = static_cast<unsigned short>(std::atoi(argv[2]));
    asio::io_context io(1);
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    std::printf("listening on 127.0.0.1:%u\n", acceptor.local_endpoint().port());
    std::fflush(stdout);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](auto, auto) { io.stop(); });
    asio::co_spawn(io, listen(acceptor), asio::detached);
    io.run();
    return 0;
}
