// echo_client — the load generator for bench/run_echo.py, written with tandem (the client is
// the same for every server measured, so its own cost cancels out in the comparison).
//
//   echo_client --port P [--connections 64] [--size 64] [--seconds 5]   ping-pong load
//   echo_client --port P --idle 8000                                     hold idle connections
//
// Ping-pong: each connection writes a message, waits for its echo, repeats; prints
// "messages N seconds S". Idle: opens N connections, each echoes one byte once (so the server
// has really accepted it), prints "ready", then holds them until stdin closes.
#include <tandem/tandem.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

namespace {
struct options {
    std::uint16_t port = 0;
    int connections = 64;
    std::size_t size = 64;
    double seconds = 5;
    int idle = 0;
};

tandem::task<> ping_pong(tandem::address to, std::size_t size, std::chrono::steady_clock::time_point until, long& count) {
    auto s = co_await tandem::tcp_stream::connect(to);
    s.set_nodelay(true);
    std::string message(size, 'm'), reply(size, '\0');
    while (std::chrono::steady_clock::now() < until) {
        co_await s.write_all(message);
        co_await s.read_exact(reply);
        ++count;
    }
}

tandem::task<> hold(tandem::address to, std::vector<tandem::tcp_stream>& held) {
    auto s = co_await tandem::tcp_stream::connect(to);
    co_await s.write_all("x");
    char c;
    (void)co_await s.read_some(std::span<char>(&c, 1));
    held.push_back(std::move(s));
}
} // namespace

int main(int argc, char** argv) {
    options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        const char* v = argv[i + 1];
        if (k == "--port") o.port = static_cast<std::uint16_t>(std::atoi(v));
        else if (k == "--connections") o.connections = std::atoi(v);
        else if (k == "--size") o.size = static_cast<std::size_t>(std::atol(v));
        else if (k == "--seconds") o.seconds = std::atof(v);
        else if (k == "--idle") o.idle = std::atoi(v);
    }
    const tandem::address to("127.0.0.1", o.port);
    tandem::event_loop loop;
    if (o.idle > 0) {
        loop.run([](tandem::address at, int n) -> tandem::task<> {
            std::vector<tandem::tcp_stream> held;
            held.reserve(static_cast<std::size_t>(n));
            for (int done = 0; done < n; done += 500) { // in batches: the listen backlog is finite
                std::vector<tandem::task<>> batch;
                for (int i = done; i < std::min(n, done + 500); ++i) batch.push_back(hold(at, held));
                co_await tandem::when_all(std::move(batch));
            }
            std::printf("ready %zu\n", held.size());
            std::fflush(stdout);
            co_await tandem::wait_readable(STDIN_FILENO); // until the driver closes our stdin
        }(to, o.idle));
        return 0;
    }
    long count = 0;
    const auto start = std::chrono::steady_clock::now();
    const auto until = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(o.seconds));
    loop.run([](tandem::address at, options opt, std::chrono::steady_clock::time_point end, long& c) -> tandem::task<> {
        std::vector<tandem::task<>> conns;
        for (int i = 0; i < opt.connections; ++i) conns.push_back(ping_pong(at, opt.size, end, c));
        co_await tandem::when_all(std::move(conns));
    }(to, o, until, count));
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("messages %ld seconds %.3f\n", count, elapsed);
    return 0;
}
