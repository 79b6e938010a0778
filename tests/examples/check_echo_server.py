#!/usr/bin/env python3
"""Drives examples/echo_server as a user would: start on port 0, read the 'listening on'
line, echo through real sockets (many clients at once), then SIGTERM → exit status 0."""
import re, signal, socket, subprocess, sys, threading

server = subprocess.Popen([sys.argv[1], "--port", "0"], stdout=subprocess.PIPE, text=True)
try:
    line = server.stdout.readline()
    match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
    assert match, f"unexpected first line: {line!r}"
    port = int(match.group(1))

    def client(i, results):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            payload = (f"client {i} " * 1000).encode()
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            results[i] = got == payload

    results = {}
    threads = [threading.Thread(target=client, args=(i, results)) for i in range(50)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert all(results.values()) and len(results) == 50, "an echo came back wrong"

    idle = socket.create_connection(("127.0.0.1", port), timeout=10)  # still open at shutdown
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=10)
    idle.close()
    assert code == 0, f"exit status {code} after SIGTERM"
    print("echo_server: 50 clients echoed, SIGTERM → exit 0")
finally:
    if server.poll() is None:
        server.kill()
