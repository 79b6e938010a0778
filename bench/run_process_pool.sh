#!/usr/bin/env bash
# Process pool round trips: tandem, Python's ProcessPoolExecutor and Node's worker_threads in
# one run, on one core (`same`: taskset -c 0) and on two (`os`: the scheduler places them on
# CPUs 0-1). tandem also runs `cross` (its workers pinned to CPU 1, the loop to CPU 0).
#   bench/run_process_pool.sh [build/release]
# Needs: cmake --preset release && cmake --build build/release; node; python3.
set -euo pipefail
build=${1:-build/release}
here=$(cd "$(dirname "$0")" && pwd)
py=$(python3 -c 'import sys; print(sys.executable)') # the real interpreter, not a shim
for placement in same os; do
    cpus=0; [ "$placement" = os ] && cpus=0,1
    echo "placement $placement (taskset -c $cpus)"
    taskset -c "$cpus" "$build/bench/bench_process_pool" --placement "$placement"
    taskset -c "$cpus" "$py" "$here/peers/process_pool_python.py"
    taskset -c "$cpus" node "$here/peers/process_pool_node.js"
done
echo "placement cross (tandem only: loop on CPU 0, workers on CPU 1)"
"$build/bench/bench_process_pool" --placement cross
