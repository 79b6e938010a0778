// Peer for bench/run_echo.py: a plain hand-written epoll TCP echo server — the floor a
// library is measured against. Edge-triggered, one buffer per connection for bytes the
// socket could not take yet. Same contract as the other servers. Built only in bench/.
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <unordered_map>

namespace {
struct connection {
    std::string pending; // echoed bytes the socket did not accept yet
};

void close_connection(int ep, int fd, std::unordered_map<int, connection>& conns) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    conns.erase(fd);
}

bool flush(int fd, connection& c) {
    while (!c.pending.empty()) {
        const ssize_t n = send(fd, c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN;
        c.pending.erase(0, static_cast<std::size_t>(n));
    }
    return true;
}
} // namespace

int main(int argc, char** argv) {
    int port = 0;
    if (argc == 3 && std::strcmp(argv[1], "--port") == 0) port = std::atoi(argv[2]);
    const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(lfd, 4096) != 0) return 1;
    socklen_t len = sizeof addr;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
    std::printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    std::fflush(stdout);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    const int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

    const int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = sfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);

    std::unordered_map<int, connection> conns;
    epoll_event events[256];
    char buf[16384];
    for (;;) {
        const int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; ++i) {
            const int fd = events[i].data.fd;
            if (fd == sfd) return 0;
            if (fd == lfd) {
                for (int c; (c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    epoll_event cev{};
                    cev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
                    cev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                    conns.emplace(c, connection{});
                }
                continue;
            }
            auto it = conns.find(fd);
            if (it == conns.end()) continue;
            connection& c = it->second;
            bool alive = flush(fd, c);
            while (alive && c.pending.empty()) {
                const ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r > 0) {
                    c.pending.assign(buf, static_cast<std::size_t>(r));
                    alive = flush(fd, c);
                } else {
                    alive = r < 0 && errno == EAGAIN;
                    break;
                }
            }
            if (!alive) close_connection(ep, fd, conns);
        }
    }
}
