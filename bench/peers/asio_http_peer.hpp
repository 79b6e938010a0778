// What the asio HTTP peers share: the accept loop and main (port, listening line, signals).
#pragma once

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace peer {

using asio::ip::tcp;

template <class Session>
asio::awaitable<void> accept_loop(tcp::acceptor& a, Session session) {
    for (;;) {
        tcp::socket s = co_await a.async_accept(asio::use_awaitable);
        s.set_option(tcp::no_delay(true));
        asio::co_spawn(a.get_executor(), session(std::move(s)), asio::detached);
    }
}

/// --port N; prints "listening on http://127.0.0.1:PORT"; SIGINT/SIGTERM stop the loop.
/// `before_teardown` runs after the loop stops and before it is destroyed (join helper
/// threads that may still post to it there).
template <class Session, class Teardown = void (*)()>
int run(int argc, char** argv, Session session, Teardown before_teardown = [] {}) {
    unsigned short port = 0;
    for (int i = 1; i + 1 < argc; ++i)
        if (!std::strcmp(argv[i], "--port")) port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
    asio::io_context io(1);
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    std::printf("listening on http://127.0.0.1:%u\n", a.local_endpoint().port());
    std::fflush(stdout);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](auto, auto) { io.stop(); });
    asio::co_spawn(io, accept_loop(a, session), asio::detached);
    io.run();
    before_teardown();
    return 0;
}

} // namespace peer
