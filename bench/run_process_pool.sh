#!/usr/bin/env bash
# Process pool round trips: tandem, Python's ProcessPoolExecutor and Node's worker_threads in
# one run, on one core (`same`: taskset -c 0) and on two (`os`: the scheduler places them on
# CPUs 0-1). tandem also runs `cross` (its workers pinned to CPU 1, the loop to CPU 0).
# Each placement ends with tandem's ratios to Python measured in that same run: the trivial
# round trip (seq_p50, goal <= 0.1x) and map throughput (goal >= 5x).
#   bench/run_process_pool.sh [build/release]
# Needs: cmake --preset release && cmake --build build/release --target bench_process_pool;
# python3; node (optional).
set -euo pipefail
build=${1:-build/release}
here=$(cd "$(dirname "$0")" && pwd)
py=$(python3 -c 'import sys; print(sys.executable)') # the real interpreter, not a shim
ratios() { # tandem's JSON line, python's JSON line
    "$py" - "$1" "$2" <<'PY'
import json, sys
t, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rt = t["seq_p50_us"] / p["seq_p50_us"]
m1 = t["map1_items_s"] / p["map1_items_s"]
m1000 = t["map1000_items_s"] / p["map1000_items_s"]
ok = lambda good: "ok" if good else "MISSED"
print(f"  ratios to python: round trip {rt:.3f}x (goal <= 0.1x: {ok(rt <= 0.1)}), "
      f"map chunk 1 {m1:.1f}x, map chunk 1000 {m1000:.1f}x (goal >= 5x: {ok(min(m1, m1000) >= 5)})")
PY
}
for placement in same os; do
    cpus=0; [ "$placement" = os ] && cpus=0,1
    echo "placement $placement (taskset -c $cpus)"
    tandem=$(taskset -c "$cpus" "$build/bench/bench_process_pool" --placement "$placement")
    echo "$tandem"
    # The peer asserts that both workers answered at start-up; on a loaded machine one worker
    # may take both jobs, so it gets three tries.
    python=""
    for try in 1 2 3; do
        python=$(taskset -c "$cpus" "$py" "$here/peers/process_pool_python.py" 2>/dev/null) && break
    done
    echo "$python"
    if command -v node >/dev/null; then taskset -c "$cpus" node "$here/peers/process_pool_node.js"; fi
    ratios "$tandem" "$python"
done
echo "placement cross (tandem only: loop on CPU 0, workers on CPU 1)"
"$build/bench/bench_process_pool" --placement cross
