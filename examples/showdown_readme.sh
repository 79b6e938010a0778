#!/bin/sh
# Regenerates the showdown figure the README embeds (examples/showdown.svg) and prints the
# table to paste beside it. The SVG names the machine, its load and the date it ran on.
#
#   sh examples/showdown_readme.sh            (Release build in build/demo, then a full run)
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DTANDEM_BUILD_TESTS=OFF >/dev/null
cmake --build build/demo --target showdown >/dev/null
out=build/demo/showdown-readme
build/demo/examples/showdown --out "$out" "$@"
cp "$out/showdown-ping.svg" examples/showdown.svg
echo "examples/showdown.svg updated; the table above goes into README.md with the machine line from $out/showdown.json"
