// echo_server — a TCP echo server: one thread, one loop, thousands of connections.
//
//   build/demo/examples/echo_server --port 9000
//   printf 'hello\n' | nc -q1 127.0.0.1 9000          # → hello
//   Ctrl-C (or SIGTERM): stops accepting, closes the connections, exits 0.
//
// Each connection is a coroutine that reads what arrives and writes it back. While the kernel
// buffer is full, write_all suspends the coroutine (backpressure), so a slow reader can never
// make the server buffer without bound. A connection's error ends that connection only.
// An idle connection holds no buffer: it waits for readability first and borrows a buffer
// from a per-thread pool only while a message is in flight (memory per idle connection is
// what decides how many connections a server can hold).
#include <tandem/tandem.hpp>

#include <memory>
#include <optional>
#include <span>
#include <vector>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace {

/// Buffers for connections that are moving data; idle ones give theirs back.
class buffer_pool {
public:
    static constexpr std::size_t buffer_size = 16384;
    class lease {
    public:
        explicit lease(buffer_pool& pool) : m_pool(pool), m_buffer(pool.take()) {}
        lease(const lease&) = delete;
        lease& operator=(const lease&) = delete;
        ~lease() { m_pool.give(std::move(m_buffer)); }
        std::span<char> span() noexcept { return {m_buffer.get(), buffer_size}; }

    private:
        buffer_pool& m_pool;
        std::unique_ptr<char[]> m_buffer;
    };

private:
    std::unique_ptr<char[]> take() {
        if (m_free.empty()) return std::make_unique_for_overwrite<char[]>(buffer_size);
        auto b = std::move(m_free.back());
        m_free.pop_back();
        return b;
    }
    void give(std::unique_ptr<char[]> b) {
        if (m_free.size() < 1024) m_free.push_back(std::move(b)); // keep a bounded reserve
    }
    std::vector<std::unique_ptr<char[]>> m_free;
};

tandem::task<> echo(tandem::tcp_stream s, buffer_pool& pool) {
    try {
        for (;;) {
            std::optional<std::size_t> n;
            {
                buffer_pool::lease buf(pool);
                n = s.try_read_some(buf.span());
                if (n && *n > 0) co_await s.write_all(std::string_view(buf.span().data(), *n));
            }
            if (n == std::size_t{0}) break;      // the client closed its side
            if (!n) co_await s.wait_readable(); // idle: no buffer held while waiting
        }
    } catch (const std::system_error&) {
        // reset by the peer, or closed under us at shutdown: this connection is done
    }
}

tandem::task<> accept_loop(tandem::tcp_listener& listener, tandem::task_group& connections, buffer_pool& pool) {
    for (;;) {
        tandem::tcp_stream s = co_await listener.accept();
        s.set_nodelay(true);
        connections.spawn(echo(std::move(s), pool), "echo");
    }
}

tandem::task<> wait_for(tandem::signal_set& signals) { (void)co_await signals.wait(); }

tandem::task<> serve(std::uint16_t port) {
    tandem::signal_set stop({SIGINT, SIGTERM});
    auto listener = tandem::tcp_listener::bind(tandem::address("127.0.0.1", port));
    std::printf("listening on %s\n", listener.local_address().to_string().c_str());
    std::fflush(stdout);
    buffer_pool pool;
    tandem::task_group connections;
    co_await tandem::when_any(accept_loop(listener, connections, pool), wait_for(stop)); // a signal ends accepting
    listener.close();
    connections.cancel();
    co_await connections.join();
}

} // namespace

int main(int argc, char** argv) {
    unsigned long port = 0;
    unsigned long watch_ms = 0;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = std::strtoul(argv[++i], nullptr, 10);
        } else if (std::strcmp(argv[i], "--watch-blocking") == 0 && i + 1 < argc) {
            watch_ms = std::strtoul(argv[++i], nullptr, 10);
        } else {
            std::fprintf(stderr, "usage: %s [--port N] [--watch-blocking MS]   (port 0 = any free port)\n", argv[0]);
            return 2;
        }
    }
    if (port > 65535) {
        std::fprintf(stderr, "port out of range\n");
        return 2;
    }
    tandem::event_loop loop;
    if (watch_ms != 0) loop.watch_blocking(std::chrono::milliseconds(watch_ms)); // reports to stderr
    loop.run(serve(static_cast<std::uint16_t>(port)));
    return 0;
}
