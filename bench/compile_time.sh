#!/usr/bin/env bash
# What including a tandem header costs a translation unit, against <asio.hpp> in the same run:
# each header alone in a TU, compiled RUNS times (interleaved, so load drifts hit all alike),
# median CPU seconds (user + sys, steadier than wall time on a shared machine).
#   bench/compile_time.sh                       g++ -O0, the default headers
#   CXX=clang++ FLAGS="-O0 -g" RUNS=5 bench/compile_time.sh tandem/core.hpp tandem/net.hpp
#   FLAGS=-O2 bench/compile_time.sh examples/hello_server.cpp     a source file of this checkout
#   BASE=/path/to/old/include bench/compile_time.sh    also each header from another include root
#                                                      (e.g. `git archive c33a20b include | tar -x`),
#                                                      interleaved in the same run: before/after
# For where the time goes: clang++ -ftime-trace (a JSON per TU) or g++ -ftime-report.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cxx="${CXX:-g++}"
flags="${FLAGS:--O0}"
runs="${RUNS:-3}"
headers=("$@")
((${#headers[@]})) || headers=(tandem/core.hpp tandem/signal.hpp tandem/net.hpp tandem/thread_pool.hpp
                               tandem/process_pool.hpp tandem/http.hpp tandem/tandem.hpp)
peer=asio.hpp
[[ -f /usr/include/asio.hpp ]] || peer=""   # libasio-dev

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
base_root="${BASE:-}"
declare -A times
all=("${headers[@]}" ${peer:+"$peer"})
# An entry "base:<header>" compiles <header> from $BASE instead of this checkout.
entries=("${headers[@]}")
[[ -n "$base_root" ]] && for header in "${headers[@]}"; do entries+=("base:$header"); done
entries+=(${peer:+"$peer"})
for ((run = 0; run < runs; ++run)); do
    for entry in "${entries[@]}"; do
        header="${entry#base:}"
        include="$root/include"
        [[ "$entry" == base:* ]] && include="$base_root"
        if [[ "$header" == *.cpp ]]; then
            tu="$root/$header" # a program of the project's own (examples/hello_server.cpp): what using costs
        else
            tu="$work/$(tr / _ <<<"$header").cpp"
            printf '#include <%s>\n' "$header" >"$tu"
        fi
        # shellcheck disable=SC2086
        seconds=$({ /usr/bin/time -f '%U %S' "$cxx" -std=c++20 $flags -I"$include" -c "$tu" -o "$work/tu.o"; } 2>&1 |
                  tail -1 | awk '{ printf "%.2f", $1 + $2 }')
        times[$entry]+="$seconds "
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
base=""
[[ -n "$peer" ]] && base="$(median "${times[$peer]}")"
printf '%s %s, median of %d, CPU s; load average %s\n' "$cxx" "$flags" "$runs" "$(cut -d' ' -f1-3 /proc/loadavg)"
ratio() { [[ -n "$base" ]] && awk -v a="$1" -v b="$base" 'BEGIN { printf "%.2fx asio", a / b }'; }
for header in "${all[@]}"; do
    m="$(median "${times[$header]}")"
    line="$(printf '  %-24s %5s s  %s' "$header" "$m" "$(ratio "$m")")"
    if [[ -n "$base_root" && -n "${times[base:$header]:-}" ]]; then
        b="$(median "${times[base:$header]}")"
        line+="$(printf '   (BASE: %5s s  %s)' "$b" "$(ratio "$b")")"
    fi
    printf '%s\n' "$line"
done
