"""Runs `showdown --quick` and checks showdown.json: its shape, and the direction of the facts
the showdown exists to show, with generous margins (never absolute times: CI is a noisy
2-core machine).

    check_showdown.py SHOWDOWN_BINARY OUT_DIR [extra showdown args...]
"""
import json
import math
import os
import subprocess
import sys
import time


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main():
    exe, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for name in ("showdown.json", "showdown.html", "showdown-ping.svg"):
        try:
            os.remove(os.path.join(out, name))
        except FileNotFoundError:
            pass
    start = time.monotonic()
    run = subprocess.run([exe, "--quick", "--out", out] + sys.argv[3:], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=100)  # under ctest's TIMEOUT
    took = time.monotonic() - start
    print(run.stdout)
    print(f"showdown --quick took {took:.1f} s")
    if run.returncode != 0:
        fail(f"showdown exited with {run.returncode}")

    with open(os.path.join(out, "showdown.json")) as f:
        doc = json.load(f)
    models = doc.get("models")
    io = doc.get("io")
    if not isinstance(models, list) or not isinstance(io, list):
        fail("showdown.json needs lists 'models' and 'io'")
    by_name = {}
    for m in models:
        for key in ("name", "ping_p50_ms", "ping_p99_ms", "ping_max_ms", "compute_per_s", "errors"):
            if key not in m:
                fail(f"model {m.get('name')!r} lacks {key}")
        for key in ("ping_p50_ms", "ping_p99_ms", "ping_max_ms", "compute_per_s"):
            v = m[key]
            if not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
                fail(f"{m['name']}: {key} = {v!r} is not a non-negative number")
        if not (m["ping_p50_ms"] <= m["ping_p99_ms"] <= m["ping_max_ms"]):
            fail(f"{m['name']}: percentiles out of order: {m}")
        if not isinstance(m["errors"], int) or m["errors"] < 0:
            fail(f"{m['name']}: errors = {m['errors']!r}")
        by_name[m["name"]] = m
    for r in io:
        if not isinstance(r.get("name"), str) or not isinstance(r.get("requests_per_s"), (int, float)):
            fail(f"bad io row {r!r}")
    io_by_name = {r["name"]: r for r in io}

    for name in ("blocked loop", "cooperative", "worker threads", "process pool", "cluster"):
        if name not in by_name:
            fail(f"no row for {name!r}")
    for name in ("non-blocking wait", "blocking sleep"):
        if name not in io_by_name:
            fail(f"no io row for {name!r}")


    work = doc["settings"]["work_ms"]
    blocked, threads = by_name["blocked loop"], by_name["worker threads"]
    # Inline CPU work holds every ping behind at least part of a job; offloaded work does not.
    if not blocked["ping_p99_ms"] >= 0.5 * work:
        fail(f"blocked loop's ping p99 {blocked['ping_p99_ms']} ms is not even half a {work} ms job")
    if not blocked["ping_p99_ms"] > 2 * threads["ping_p99_ms"]:
        fail(f"blocked loop's ping p99 {blocked['ping_p99_ms']} ms is not far above worker threads' "
             f"{threads['ping_p99_ms']} ms")
    if not blocked["ping_p50_ms"] > 2 * threads["ping_p50_ms"]:
        fail("blocked loop's ping p50 is not far above worker threads'")
    # Yielding between slices lets pings in: far better than inline, whatever the machine.
    if not by_name["cooperative"]["ping_p50_ms"] * 2 < blocked["ping_p50_ms"]:
        fail("cooperative's ping p50 is not far below the blocked loop's")
    # The cluster runs the blocked loop's inline job in one worker per CPU: at least as many jobs
    # get done (twice the margin: a one-CPU box runs one worker, and a neighbour may steal a core).
    cluster = by_name["cluster"]
    if not cluster["compute_per_s"] >= blocked["compute_per_s"] / 2:
        fail(f"the cluster completed {cluster['compute_per_s']} jobs/s, not even half the blocked loop's "
             f"{blocked['compute_per_s']}")
    nb, bs = io_by_name["non-blocking wait"]["requests_per_s"], io_by_name["blocking sleep"]["requests_per_s"]
    if not nb > 10 * bs:
        fail(f"non-blocking wait {nb} req/s is not far above blocking sleep {bs} req/s")
    if not bs <= 10:
        fail(f"a blocking 200 ms sleep served {bs} req/s: more than one request at a time")
    print("PASS: blocked loop ping p99 %.1f ms vs worker threads %.1f ms; /compute %.1f/s in the cluster vs %.1f/s "
          "in the blocked loop; /slow %.0f req/s vs blocking %.1f req/s"
          % (blocked["ping_p99_ms"], threads["ping_p99_ms"], cluster["compute_per_s"], blocked["compute_per_s"], nb, bs))


if __name__ == "__main__":
    main()
