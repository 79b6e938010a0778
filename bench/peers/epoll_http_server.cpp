// HTTP peer: a plain edge-triggered epoll server in C++, one thread, a minimal hand parser
// (finds the end of each head, answers the hello JSON, handles pipelining). The floor: what
// the kernel work of HTTP keep-alive costs with no library at all.
//   epoll_http_server --port 0
#include <arpa/inet.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace {
volatile std::sig_atomic_t stop = 0;
constexpr std::string_view response =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n{\"message\":\"Hello from tandem\"}";
struct conn {
    std::string in;
};
} // namespace

int main(int argc, char** argv) {
    int port = 0;
    for (int i = 1; i + 1 < argc; ++i)
        if (!std::strcmp(argv[i], "--port")) port = std::atoi(argv[i + 1]);
    std::signal(SIGINT, [](int) { stop = 1; });
    std::signal(SIGTERM, [](int) { stop = 1; });
    std::signal(SIGPIPE, SIG_IGN);
    const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 4096) != 0) return 1;
    socklen_t len = sizeof a;
    ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
    std::printf("listening on http://127.0.0.1:%d\n", ntohs(a.sin_port));
    std::fflush(stdout);
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{EPOLLIN, {.fd = lfd}};
    ::epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    std::vector<conn> conns(65536);
    epoll_event events[256];
    char buf[16384];
    std::string out;
    while (!stop) {
        const int n = ::epoll_wait(ep, events, 256, 200);
        for (int i = 0; i < n; ++i) {
            const int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    const int c = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    epoll_event cev{EPOLLIN | EPOLLET | EPOLLRDHUP, {.fd = c}};
                    ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            conn& c = conns[static_cast<std::size_t>(fd)];
            bool closed = false;
            for (;;) {
                const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
                if (r > 0) {
                    c.in.append(buf, static_cast<std::size_t>(r));
                    continue;
                }
                if (r == 0 || errno != EAGAIN) closed = true;
                break;
            }
            out.clear();
            for (std::size_t end; (end = c.in.find("\r\n\r\n")) != std::string::npos;) {
                c.in.erase(0, end + 4);
                out += response;
            }
            if (!out.empty() && ::send(fd, out.data(), out.size(), MSG_NOSIGNAL) < 0) closed = true;
            if (closed) {
                c.in.clear();
                ::close(fd);
            }
        }
    }
    return 0;
}
