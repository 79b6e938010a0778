#!/usr/bin/env python3
"""HTTP/1.1 keep-alive hello world: tandem (examples/hello_server) against Node http, Python
asyncio (stdlib Protocol), a standalone-asio coroutine server and a plain epoll server, all
in one run, interleaved (see ../shared/BENCHMARKING.md).

    python3 bench/run_http.py build/release [--rounds 3] [--seconds 5] [--connections 64 256]
        [--only asio main] [--also main=OTHER_BUILD/examples/hello_server]

Server pinned to CPU 1, `wrk -t1` to CPU 0. One wrk thread saturates near 140k req/s here,
so the figure that separates servers is server CPU per request (user + system from
/proc/PID/stat) and its user part, beside req/s and wrk's p99.
"""
import argparse, os, re, signal, statistics, subprocess, sys, time

TICK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))


def start(cmd):
    proc = subprocess.Popen(["taskset", "-c", "1", *cmd, "--port", "0"], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"{cmd}: unexpected first line {line!r}")
    return proc, int(m.group(1))


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def to_ms(text):
    v = float(re.match(r"[\d.]+", text).group())
    return v / 1000 if text.endswith("us") else v * 1000 if text.endswith("s") and not text.endswith("ms") else v


def run(cmd, connections, seconds):
    proc, port = start(cmd)
    try:
        time.sleep(0.3)
        u0, s0 = cpu(proc.pid)
        out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
                              f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
        u1, s1 = cpu(proc.pid)
    finally:
        stop(proc)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"req_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            # The distribution's line, not a "+/- Stdev" figure that ends in 99% (e.g. 70.99%).
            "p99_ms": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
            "cpu_us": (u1 - u0 + s1 - s0) * 1e6 / requests,
            "user_us": (u1 - u0) * 1e6 / requests,
            "errors": errors.group(0) if errors else ""}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--only", nargs="+", help="run only these servers (tandem always runs)")
    ap.add_argument("--also", nargs="+", default=[], metavar="NAME=BINARY",
                    help="more servers, e.g. a baseline build: main=/tmp/main/build/release/examples/hello_server")
    args = ap.parse_args()
    py = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True, text=True).stdout.strip()
    servers = {"tandem": [f"{args.build}/examples/hello_server"],
               "asio": [f"{args.build}/bench/asio_http_server"],
               "epoll": [f"{args.build}/bench/epoll_http_server"],
               "node": ["node", f"{HERE}/peers/http_node.js"],
               "python": [py, f"{HERE}/peers/http_asyncio.py"]}
    for extra in args.also:
        name, binary = extra.split("=", 1)
        servers[name] = [binary]
    if args.only:
        servers = {k: v for k, v in servers.items() if k == "tandem" or k in args.only}
    servers = {k: v for k, v in servers.items() if os.path.exists(v[-1]) or v[0] == "node"}
    names = list(servers)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}", file=sys.stderr)
    runs = {(k, c): [] for k in names for c in args.connections}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for c in args.connections:
            for name in order:
                runs[(name, c)].append(run(servers[name], c, args.seconds))
                print(f"  round {r + 1} c={c} {name}: {runs[(name, c)][-1]}", file=sys.stderr)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}", file=sys.stderr)
    for c in args.connections:
        print(f"\nwrk -t1 -c{c} GET /, medians of {args.rounds} x {args.seconds:g} s")
        print(f"{'server':8} {'req/s':>9} {'p99 ms':>8} {'CPU us/req':>11} {'user us/req':>12}")
        med = {k: {m: statistics.median(x[m] for x in runs[(k, c)]) for m in ("req_s", "p99_ms", "cpu_us", "user_us")}
               for k in names}
        for k in names:
            print(f"{k:8} {med[k]['req_s']:9.0f} {med[k]['p99_ms']:8.2f} {med[k]['cpu_us']:11.2f} {med[k]['user_us']:12.2f}")
        for peer in names[1:]:
            def paired(metric):
                # A round whose peer read 0 (user time comes in 10 ms ticks) has no ratio.
                ratios = [t[metric] / p[metric] for t, p in zip(runs[("tandem", c)], runs[(peer, c)]) if p[metric] > 0]
                return statistics.median(ratios) if ratios else float("nan")
            print(f"tandem/{peer}: CPU per request {paired('cpu_us'):.2f}x, user {paired('user_us'):.2f}x, "
                  f"req/s {paired('req_s'):.2f}x, p99 {paired('p99_ms'):.2f}x")


if __name__ == "__main__":
    main()
