#!/usr/bin/env python3
"""TCP echo benchmark: tandem (examples/echo_server) against a standalone-asio coroutine server
and a plain epoll server, interleaved in one run (see ../shared/BENCHMARKING.md).

    python3 bench/run_echo.py build/release [--rounds 3] [--seconds 5] [--idle 8000]

Ping-pong: 64 connections, 64-byte messages, server pinned to CPU 1, client to CPU 0. The
client may be the bottleneck, so the figure that separates servers is server CPU per message
(user + system, from /proc/PID/stat), and its user part. Memory: server RSS growth with
--idle connections open, divided by their number.
"""
import argparse, os, re, signal, statistics, subprocess, sys, time

TICK = os.sysconf("SC_CLK_TCK")


def start(binary):
    binary = binary.split()  # a server may come with arguments
    proc = subprocess.Popen(["taskset", "-c", "1", *binary, "--port", "0"], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"{binary}: unexpected first line {line!r}")
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
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime in seconds


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def ping_pong(build, binary, seconds):
    proc, port = start(binary)
    try:
        u0, s0 = cpu(proc.pid)
        out = subprocess.run(["taskset", "-c", "0", f"{build}/bench/echo_client", "--port", str(port),
                              "--connections", "64", "--size", "64", "--seconds", str(seconds)],
                             capture_output=True, text=True, check=True).stdout
        u1, s1 = cpu(proc.pid)
    finally:
        stop(proc)
    m = re.search(r"messages (\d+) seconds ([\d.]+)", out)
    messages, elapsed = int(m.group(1)), float(m.group(2))
    return {"msgs_per_s": messages / elapsed,
            "cpu_us": (u1 - u0 + s1 - s0) * 1e6 / messages,
            "user_us": (u1 - u0) * 1e6 / messages}


def idle_memory(build, binary, connections):
    proc, port = start(binary)
    try:
        time.sleep(0.2)
        before = rss_kib(proc.pid)
        client = subprocess.Popen(["taskset", "-c", "0", f"{build}/bench/echo_client", "--port", str(port),
                                   "--idle", str(connections)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = client.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"idle client: {line!r}")
        time.sleep(0.5)
        after = rss_kib(proc.pid)
        client.stdin.close()
        client.wait(timeout=30)
    finally:
        stop(proc)
    return (after - before) / connections


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--idle", type=int, default=8000)
    ap.add_argument("--lag-overhead", action="store_true",
                    help="tandem with loop stats and a blocking watchdog against tandem built without either")
    args = ap.parse_args()
    if args.lag_overhead:
        servers = {"tandem": f"{args.build}/examples/echo_server --watch-blocking 100",
                   "bare": f"{args.build}/bench/echo_server_bare"}
    else:
        servers = {"tandem": f"{args.build}/examples/echo_server",
                   "asio": f"{args.build}/bench/asio_echo_server",
                   "epoll": f"{args.build}/bench/epoll_echo_server"}
    servers = {k: v for k, v in servers.items() if os.path.exists(v.split()[0])}
    names = list(servers)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}", file=sys.stderr)
    runs = {k: [] for k in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # A B C, B C A, ...
        for name in order:
            runs[name].append(ping_pong(args.build, servers[name], args.seconds))
            print(f"  round {r + 1} {name}: {runs[name][-1]}", file=sys.stderr)
    memory = {}
    for name in names:
        memory[name] = idle_memory(args.build, servers[name], args.idle)
        print(f"  idle {name}: {memory[name]:.2f} KiB/connection", file=sys.stderr)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}", file=sys.stderr)

    med = {k: {m: statistics.median(x[m] for x in runs[k]) for m in ("msgs_per_s", "cpu_us", "user_us")} for k in names}
    print(f"\nTCP echo, 64 connections x 64-byte ping-pong, medians of {args.rounds} x {args.seconds:g} s")
    print(f"{'server':8} {'msgs/s':>10} {'CPU us/msg':>11} {'user us/msg':>12} {'idle KiB/conn':>14}")
    for k in names:
        print(f"{k:8} {med[k]['msgs_per_s']:10.0f} {med[k]['cpu_us']:11.2f} {med[k]['user_us']:12.2f} {memory[k]:14.2f}")
    # Ratios are paired within each round (the machine's speed can shift between rounds),
    # then the median over rounds is reported.
    for peer in ("asio", "epoll", "bare"):
        if peer in med and "tandem" in med:
            def paired(metric):
                return statistics.median(t[metric] / p[metric] for t, p in zip(runs["tandem"], runs[peer]))
            print(f"tandem/{peer} (median of per-round ratios): CPU per message {paired('cpu_us'):.2f}x, "
                  f"user CPU {paired('user_us'):.2f}x, throughput {paired('msgs_per_s'):.2f}x, "
                  f"idle memory {memory['tandem'] / memory[peer]:.2f}x")


if __name__ == "__main__":
    main()
