#!/usr/bin/env python3
"""Black-box check of an HTTP example binary: start it, wait for its listening line, hit
the shared endpoints with a real client, send a malformed request, stop it with SIGTERM
and expect exit status 0.

    check_http_example.py BINARY [--blocking]   (--blocking: /compute runs on the loop)
"""
import http.client, json, os, re, signal, socket, subprocess, sys, time


def session_members(sid):
    """Live (non-zombie) processes in session `sid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


def main():
    binary = sys.argv[1]
    proc = subprocess.Popen([binary, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)\n", line)
        assert m, f"unexpected first line {line!r}"
        port = int(m.group(1))

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        def get(path):
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode(), r
        status, body, _ = get("/")
        assert status == 200 and json.loads(body) == {"message": "Hello from tandem"}, body
        assert get("/ping")[:2] == (200, "pong")
        start = time.monotonic()
        assert get("/slow")[0] == 200
        took = time.monotonic() - start
        assert 0.19 <= took < 2.0, f"/slow took {took:.3f} s"
        status, body, _ = get("/compute?n=1000")
        assert status == 200 and abs(json.loads(body)["result"] - sum(i ** 0.5 for i in range(1000))) < 1e-6, body
        assert get("/compute?n=abc")[0] == 400
        status, body, _ = get("/crash")  # process_pool only: a job that abort()s
        if status != 404:
            assert status == 500 and "signal 6" in body and "carries on" in body, (status, body)
            status, body, _ = get("/compute?n=1000")
            assert status == 200, (status, body)
        status, _, r = get("/missing")
        assert status == 404
        status, body, r = get("/metrics")  # every example mounts the Prometheus handler
        assert status == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4"), status
        for family in ("tandem_http_requests_total", 'tandem_http_responses_total{class="4xx"}',
                       "tandem_loop_delay_seconds{quantile=\"0.99\"}", "tandem_loop_utilization"):
            assert family in body, (family, body)
        conn.request("POST", "/ping", body=b"x")
        r = conn.getresponse(); r.read()
        assert r.status == 405 and "GET" in r.getheader("Allow"), r.status

        # A malformed request gets its 4xx and a clean close; the server carries on.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 400 "), reply
        assert get("/ping")[:2] == (200, "pong")
        conn.close()

        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        rc = proc.wait(timeout=15)
        print(f"exit status {rc} after {time.monotonic() - start:.3f} s")
        assert rc == 0, f"exit status {rc}; stderr: {proc.stderr.read()}"
        # No child process left: anything the example started (a process pool's zygote and
        # workers move to their own process group, not their own session) is gone.
        deadline = time.monotonic() + 10
        while (left := session_members(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes left behind: {left}"
        print("ok")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
