#!/usr/bin/env python3
"""Idle keep-alive memory: server RSS growth after N connections have each made one
request (and keep the connection open), divided by N.
    python3 bench/http_idle.py build/release [--connections 8000]
"""
import argparse, os, re, resource, signal, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(cmd, n):
    proc = subprocess.Popen([*cmd, "--port", "0"], stdout=subprocess.PIPE, text=True, start_new_session=True)
    port = int(re.search(r":(\d+)", proc.stdout.readline()).group(1))
    try:
        warm = socket.create_connection(("127.0.0.1", port))
        warm.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        warm.recv(4096)
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            socks.append(s)
        for s in socks:
            s.recv(4096)
        time.sleep(0.5)
        after = rss_kib(proc.pid)
        for s in socks:
            s.close()
        warm.close()
        return (after - before) / n
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--connections", type=int, default=8000)
    args = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    servers = {"tandem": [f"{args.build}/examples/hello_server"],
               "asio": [f"{args.build}/bench/asio_http_server"],
               "epoll": [f"{args.build}/bench/epoll_http_server"],
               "node": ["node", f"{HERE}/peers/http_node.js"]}
    for name, cmd in servers.items():
        print(f"{name:8} {measure(cmd, args.connections):6.2f} KiB per idle keep-alive connection")


if __name__ == "__main__":
    main()
