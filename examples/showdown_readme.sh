#!/bin/sh
# Regenerates what the README shows of the showdown: the chart (examples/showdown.svg) and the
# table between the <!-- showdown-table --> markers in README.md, from one full run. Both name
# the machine, its load and the date.
#
#   sh examples/showdown_readme.sh [showdown options]    (Release build in build/demo)
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DTANDEM_BUILD_TESTS=OFF >/dev/null
cmake --build build/demo --target showdown >/dev/null
out=build/demo/showdown-readme
build/demo/examples/showdown --out "$out" "$@"
cp "$out/showdown-ping.svg" examples/showdown.svg
python3 - "$out/showdown.json" README.md <<'PY'
import json, re, sys
doc = json.load(open(sys.argv[1]))
def ms(v):
    return "n/a" if v is None else (f"{v:.2f}" if v < 1 else (f"{v:.1f}" if v < 10 else f"{v:.0f}"))
s = doc["settings"]
lines = [f"Measured on {doc['machine']} with `build/demo/examples/showdown` (Release): "
         f"{s['work_ms']} ms jobs offered at {s['compute_rate_per_s']:.0f}/s for {s['cpu_seconds']:.0f} s per model.", "",
         "| model | /ping p50 ms | p99 ms | max ms | /compute per s | errors |", "|---|---:|---:|---:|---:|---:|"]
for m in doc["models"]:
    lines.append(f"| {m['name']} | {ms(m['ping_p50_ms'])} | {ms(m['ping_p99_ms'])} | {ms(m['ping_max_ms'])} | "
                 f"{m['compute_per_s']:.1f} | {m['errors']} |")
for n in doc["notes"]:
    name, _, why = n.partition(": ")
    lines.append(f"| {name} | {why} | | | | |")
lines += ["", f"| I/O: {s['io_connections']} connections, 200 ms per request | requests per s |", "|---|---:|"]
for r in doc["io"]:
    v = r["requests_per_s"]
    lines.append(f"| {r['name']} | {v:,.0f} |" if v >= 100 else f"| {r['name']} | {v:.1f} |")
table = "\n".join(lines)
readme = open(sys.argv[2]).read()
new = re.sub(r"<!-- showdown-table -->.*?<!-- /showdown-table -->",
             lambda _: "<!-- showdown-table -->\n" + table + "\n<!-- /showdown-table -->", readme, flags=re.S)
open(sys.argv[2], "w").write(new)
PY
echo "updated examples/showdown.svg and the table in README.md"
