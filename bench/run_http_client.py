#!/usr/bin/env python3
"""HTTP client under load: tandem's http::client against Node 20's fetch (undici), Node's
http.get over a keep-alive Agent, and Python's aiohttp, each running N concurrent requests (default 64) for a fixed time against the same
tandem hello server (examples/hello_server), interleaved within one run (../shared/BENCHMARKING.md).

    python3 bench/run_http_client.py build/release [--rounds 3] [--seconds 5] [--concurrency 64]

Server pinned to CPU 1, the client to CPU 0. The figures: requests/s, and the client's own CPU
(user + system) per request; "per CPU-s" is requests per second of client CPU, the efficiency
that matters when the client shares a machine with the service that calls it.
"""
import argparse, json, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run_http import start, stop  # noqa: E402 - the same server start-up as the server benchmark


def start_server(build):
    return start([os.path.join(build, "examples", "hello_server")])


def python_exe():
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def clients(build):
    return {
        "tandem": [os.path.join(build, "bench", "http_client_load")],
        "node-fetch": ["node", os.path.join(HERE, "peers", "http_client_node.mjs")],
        "node-http": ["node", os.path.join(HERE, "peers", "http_client_node.mjs"), "--api", "http"],
        "aiohttp": [python_exe(), os.path.join(HERE, "peers", "http_client_aiohttp.py")],
    }


def run_client(cmd, url, concurrency, seconds):
    out = subprocess.run(["taskset", "-c", "0", *cmd, "--url", url, "--concurrency", str(concurrency),
                          "--seconds", str(seconds)], capture_output=True, text=True, timeout=seconds * 4 + 30)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--only", nargs="*", help="client names to run")
    a = p.parse_args()
    table = clients(a.build)
    if a.only:
        table = {k: v for k, v in table.items() if k in a.only}
    server, port = start_server(a.build)
    url = f"http://127.0.0.1:{port}/"
    results = {k: [] for k in table}
    try:
        for rnd in range(a.rounds):
            for name, cmd in table.items():
                r = run_client(cmd, url, a.concurrency, a.seconds)
                r["load"] = loadavg()
                results[name].append(r)
                print(f"round {rnd + 1} {name:11} {r['req_s']:>8} req/s  {r['cpu_us_per_req']:>7} µs CPU/req  "
                      f"failed {r['failed']}  load {r['load']}", flush=True)
    finally:
        stop(server)
    med = {k: {"req_s": statistics.median(x["req_s"] for x in v),
               "cpu_us": statistics.median(x["cpu_us_per_req"] for x in v)} for k, v in results.items()}
    print(f"\nmedians of {a.rounds} rounds, {a.concurrency} concurrent requests, {a.seconds:g} s each:")
    print(f"{'client':11} {'req/s':>9} {'CPU µs/req':>11} {'req per CPU-s':>14} {'vs tandem req/s':>16} {'vs tandem per CPU-s':>20}")
    base = med.get("tandem")
    for k, m in med.items():
        per_cpu = 1e6 / m["cpu_us"] if m["cpu_us"] else 0
        line = f"{k:11} {m['req_s']:>9.0f} {m['cpu_us']:>11.2f} {per_cpu:>14.0f}"
        if base:
            line += f" {m['req_s'] / base['req_s']:>16.2f} {base['cpu_us'] / m['cpu_us'] if m['cpu_us'] else 0:>20.2f}"
        print(line)
    if base:
        for k, m in med.items():
            if k != "tandem":
                print(f"tandem / {k}: {base['req_s'] / m['req_s']:.2f}x req/s, "
                      f"{m['cpu_us'] / base['cpu_us']:.2f}x requests per client CPU-second")


if __name__ == "__main__":
    main()
