#!/usr/bin/env bash
# The examples' teaching figures, measured with wrk (see examples/README.md):
#   1. hello_server: keep-alive GET / throughput
#   2. blocked_loop vs worker_threads: /ping latency while 2 clients hammer /compute
#   3. slow_io: /slow with 1,000 connections (non-blocking wait) vs /bad (blocking sleep)
#   bench/run_examples.sh [build/release] [seconds]
set -euo pipefail
build=${1:-build/release}
secs=${2:-5}
start() { # binary [args] → sets PID and PORT
    local out; out=$(mktemp)
    setsid "$@" --port 0 >"$out" 2>/dev/null &
    PID=$!
    for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.05; done
    PORT=$(sed -n 's|listening on http://127.0.0.1:\([0-9]*\)|\1|p' "$out")
}
stop() { kill -TERM "$PID"; wait "$PID" || true; }
summary() { grep -E "Requests/sec|^ +50%|^ +99%|Latency  " | tr -s ' ' | paste -sd' ' || true; }

echo "== hello_server: wrk -t1 -c64 GET / (server on CPU 1, wrk on CPU 0)"
start taskset -c 1 "$build/examples/hello_server"
taskset -c 0 wrk -t1 -c64 -d"${secs}s" --latency "http://127.0.0.1:$PORT/" | summary
stop

for ex in examples/blocked_loop examples/worker_threads bench/asio_pool_http_server; do
    [ -x "$build/$ex" ] || continue
    echo "== $ex: /ping (1 connection) while 2 clients hammer /compute?n=20000000"
    start "$build/$ex"
    wrk -t1 -c2 -d"$((secs + 1))s" "http://127.0.0.1:$PORT/compute?n=20000000" >/tmp/compute.$$ &
    hammer=$!
    sleep 0.5
    wrk -t1 -c1 -d"${secs}s" --latency "http://127.0.0.1:$PORT/ping" | summary
    wait "$hammer" || true
    echo "   /compute: $(summary </tmp/compute.$$)"
    stop
done

echo "== slow_io: /slow with 1000 connections, then /bad with 10"
start "$build/examples/slow_io"
# At least 20 s: each connection completes one request per 0.2 s, and wrk drops the one in
# flight at the cutoff, so a short run under-reads throughput (24 of 25 in 5 s).
wrk -t1 -c1000 -d"$(( secs > 20 ? secs : 20 ))s" --latency "http://127.0.0.1:$PORT/slow" | summary
wrk -t1 -c10 -d"${secs}s" --latency "http://127.0.0.1:$PORT/bad" | summary
stop
rm -f /tmp/compute.$$
