#!/bin/bash
# tandem across many cores, in about a minute: cluster scaling (hello, keep-alive), bench_core
# and the showdown at a rate a 16-core machine can serve. Needs 16 CPUs (load on CPUs 8-15).
#   B=build/release/bench-and-examples-in-one-dir OUT=/tmp/many bench/run_many_cores.sh
# B holds bench_core, http_client_load, showdown, cluster and hello_server (a static build,
# -DCMAKE_EXE_LINKER_FLAGS=-static, travels to a machine without tandem's toolchain).
cd "$(dirname "$0")/.."
B="${B:?a folder with the binaries}"; OUT="${OUT:-/tmp/many-cores}"; mkdir -p "$OUT"
exec > >(tee "$OUT/all.txt") 2>&1
echo "== machine"; nproc; grep -m1 "model name" /proc/cpuinfo; uname -r; uptime; ldd --version | head -1
echo "== cluster scaling: hello over keep-alive, 8 load processes (tandem's client, 64 connections each) on CPUs 8-15"
load() { # port -> summed req/s of 8 clients, 3 s
  for c in 8 9 10 11 12 13 14 15; do taskset -c $c timeout 20 $B/http_client_load --url http://127.0.0.1:$1/ --concurrency 64 --seconds 3 > /tmp/l$c.json & LP="$LP $!"; done; wait $LP; LP=
  python3 -c "import json,glob; r=[json.load(open(f)) for f in glob.glob('/tmp/l*.json')]; print('  req/s %.0f  failed %d  clients %d' % (sum(x['req_s'] for x in r), sum(x['failed'] for x in r), len(r)))"; rm -f /tmp/l*.json; }
serve() { # cmd... -> port, server pid in SPID
  rm -f /tmp/srv.log; "$@" > /tmp/srv.log 2>&1 & SPID=$!
  for i in $(seq 100); do grep -q "listening on" /tmp/srv.log && break; sleep 0.1; done
  PORT=$(grep -m1 -o "127.0.0.1:[0-9]*" /tmp/srv.log | cut -d: -f2); }
echo "-- one hello_server process, CPU 0"; serve taskset -c 0 $B/hello_server --port 0; load $PORT; kill $SPID; wait $SPID 2>/dev/null
for w in 1 4 8; do
  echo "-- cluster --workers $w on CPUs 0-$((w-1))"; serve taskset -c 0-$((w-1)) $B/cluster --workers $w --port 0; load $PORT
  kill -TERM $SPID; timeout 5 tail --pid=$SPID -f /dev/null; done
echo "== bench_core --repeat 1 (it pins its own threads)"; timeout 60 $B/bench_core --repeat 1
echo "== showdown --seconds 3 --rate 240 (16 cores)"; timeout 100 $B/showdown --seconds 3 --rate 240 --peers-dir examples/peers --out /tmp/sd; cp /tmp/sd/showdown.json $OUT/ 2>/dev/null
uptime
