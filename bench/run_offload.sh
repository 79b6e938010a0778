#!/usr/bin/env bash
# Offload round trip, every runtime in one run, both placements (see bench/README.md).
#   bench/run_offload.sh [build/release]
# Needs: cmake --preset release && cmake --build build/release; node; python3.
set -euo pipefail
build=${1:-build/release}
here=$(cd "$(dirname "$0")" && pwd)
py=$(python3 -c 'import sys; print(sys.executable)') # the real interpreter, not a shim
"$build/bench/bench_offload" --rounds 5
for placement in same cross; do
    cpus=0; [ "$placement" = cross ] && cpus=0,1
    echo "placement $placement (taskset -c $cpus; the runtime places its own worker thread)"
    taskset -c "$cpus" node "$here/peers/offload_node.js" 50000 1000000
    taskset -c "$cpus" "$py" "$here/peers/offload_python.py" 20000 100000
done
