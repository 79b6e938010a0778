#!/usr/bin/env bash
# Instructions g++'s compiler proper (cc1plus) executes for a translation unit that includes one
# header, counted by valgrind (cachegrind, no cache simulation): unlike CPU seconds, the same
# on a loaded machine as on a quiet one, so a change of 1% shows. ~25 s per header.
#   bench/compile_instructions.sh                         tandem/tandem.hpp and <asio.hpp>
#   BASE=/path/to/old/include bench/compile_instructions.sh tandem/tandem.hpp    also from there
# Needs valgrind (Debian: valgrind). The ratio to asio's count follows CPU time's only roughly
# (a count ignores cache misses); bench/compile_time.sh stays the figure to report.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cc1plus="$(g++ -print-prog-name=cc1plus)"
multiarch="$(g++ -print-multiarch)"
flags="${FLAGS:--O0}"
headers=("$@")
((${#headers[@]})) || headers=(tandem/tandem.hpp)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
count() { # include-root header
    printf '#include <%s>\n' "$2" >"$work/tu.cpp"
    # shellcheck disable=SC2086
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        "$cc1plus" -quiet ${1:+-I "$1"} -imultiarch "$multiarch" -D_GNU_SOURCE "$work/tu.cpp" -std=c++20 $flags -o "$work/tu.s" 2>&1 |
        awk '/I *refs/ { gsub(",", "", $NF); printf "%.3f", $NF / 1e9 }'
}
peer=""
[[ -f /usr/include/asio.hpp ]] && peer="$(count "" asio.hpp)"
printf 'cc1plus %s, G instructions%s\n' "$flags" "${peer:+ (asio.hpp: $peer)}"
for header in "${headers[@]}"; do
    n="$(count "$root/include" "$header")"
    line="$(printf '  %-24s %6s G' "$header" "$n")"
    [[ -n "$peer" ]] && line+="$(awk -v a="$n" -v b="$peer" 'BEGIN { printf "  %.2fx asio", a / b }')"
    if [[ -n "${BASE:-}" ]]; then
        b="$(count "$BASE" "$header")"
        line+="$(printf '   (BASE: %6s G' "$b")"
        [[ -n "$peer" ]] && line+="$(awk -v a="$b" -v p="$peer" 'BEGIN { printf "  %.2fx asio", a / p }')"
        line+=")"
    fi
    printf '%s\n' "$line"
done
