#!/usr/bin/env bash
# Proves each way a user consumes tandem works: FetchContent from a git URL, add_subdirectory,
# find_package after `cmake --install build --prefix …`, pkg-config on the .pc that CMake and
# meson each install, and a meson subproject. Every consumer is built at -O0, where main.cpp's
# million synchronous co_awaits overflow the stack unless the path handed it tandem's flags; each
# path's compile command is also checked for exactly the flags CMake's tandem.pc lists.
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gen=(-G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)

step() { printf '\n== consume: %s\n' "$1"; }
fail() { printf 'consume: %s\n' "$1" >&2; exit 1; }

# The consumer's compile command from a compile_commands.json.
compile_command() {
    python3 -c 'import json, sys
for e in json.load(open(sys.argv[1])):
    if e["file"].endswith("main.cpp"):
        print(e.get("command") or " ".join(e["arguments"]))' "$1"
}
# Fails unless the command line $2 carries every consumer flag ($expected).
check_flags() {
    local flag
    for flag in $expected; do
        [[ " $2 " == *" $flag "* ]] || fail "$1 does not hand the consumer $flag: $2"
    done
    printf 'flags ok (%s): %s\n' "$1" "$expected"
}
# A .pc's flags other than -I and -std, one per line, sorted: what every path must carry.
pc_flags() { PKG_CONFIG_PATH="$1" pkg-config --cflags-only-other tandem | tr ' ' '\n' | grep -v -e '^-std=' -e '^$' | sort; }
# Builds main.cpp at -O0 from the tandem.pc in $2 and runs it.
pkgconfig_consumer() {
    local what=$1 pcdir=$2 out=$3
    PKG_CONFIG_PATH="$pcdir" pkg-config --modversion tandem
    # shellcheck disable=SC2046
    c++ -O0 $(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs tandem) "$src/tests/consume/main.cpp" -o "$out"
    "$out" || fail "$what: the -O0 consumer failed"
}

step "cmake --install build --prefix …, the tree then moved (relocatable), find_package(tandem CONFIG)"
# Configured with the default prefix (/usr/local) and installed elsewhere, as the README says.
cmake -S "$src" -B "$work/tandem-build" -G Ninja -DTANDEM_BUILD_TESTS=OFF \
      -DTANDEM_BUILD_EXAMPLES=OFF -DTANDEM_BUILD_BENCH=OFF >/dev/null
cmake --install "$work/tandem-build" --prefix "$work/installed" >/dev/null
mv "$work/installed" "$work/prefix"
test -f "$work/prefix/share/cmake/tandem/tandemConfigVersion.cmake"
if grep -rl -e /usr/local -e "$work/installed" "$work/prefix/share"; then
    fail "an installed file names the configure-time or the install-time prefix"
fi
expected="$(pc_flags "$work/prefix/share/pkgconfig" | tr '\n' ' ')"
grep -q -- -foptimize-sibling-calls <<<"$expected" || fail "tandem.pc lacks -foptimize-sibling-calls"
cmake -S "$src/tests/consume" -B "$work/package" "${gen[@]}" -DMODE=package -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/package" >/dev/null
check_flags "the installed CMake package" "$(compile_command "$work/package/compile_commands.json")"
"$work/package/consumer"

step "pkg-config on CMake's tandem.pc, -O0"
pkgconfig_consumer "CMake's tandem.pc" "$work/prefix/share/pkgconfig" "$work/pc-cmake-consumer"

step "meson install (relocatable, into a DESTDIR), pkg-config on meson's tandem.pc, -O0"
meson setup "$work/meson-build" "$src" -Dtests=false --prefix=/opt/tandem >/dev/null
meson install -C "$work/meson-build" --destdir "$work/meson-dest" >/dev/null
meson_pc="$work/meson-dest/opt/tandem/share/pkgconfig"
[[ "$(pc_flags "$meson_pc")" == "$(pc_flags "$work/prefix/share/pkgconfig")" ]] ||
    fail "meson's tandem.pc and CMake's differ: $(pc_flags "$meson_pc" | tr '\n' ' ') vs $expected"
pkgconfig_consumer "meson's tandem.pc" "$meson_pc" "$work/pc-meson-consumer"

step "FetchContent from a local git URL"
git clone -q "$src" "$work/repo"   # a clean clone of what is committed
cmake -S "$src/tests/consume" -B "$work/fetch" "${gen[@]}" -DMODE=fetch \
      -DTANDEM_GIT_URL="file://$work/repo" -DTANDEM_GIT_TAG="$(git -C "$work/repo" rev-parse HEAD)" >/dev/null
cmake --build "$work/fetch" >/dev/null
check_flags "FetchContent" "$(compile_command "$work/fetch/compile_commands.json")"
"$work/fetch/consumer"

step "add_subdirectory"
cmake -S "$src/tests/consume" -B "$work/subdir" "${gen[@]}" -DMODE=subdirectory -DTANDEM_SOURCE_DIR="$src" >/dev/null
cmake --build "$work/subdir" >/dev/null
check_flags "add_subdirectory" "$(compile_command "$work/subdir/compile_commands.json")"
"$work/subdir/consumer"

step "meson subproject (buildtype debug: -O0)"
cp -r "$src/tests/consume/meson_project" "$work/meson_project"
cp "$src/tests/consume/main.cpp" "$work/main.cpp"
mkdir -p "$work/meson_project/subprojects"
ln -s "$work/repo" "$work/meson_project/subprojects/tandem"
meson setup "$work/meson_project/build" "$work/meson_project" --buildtype=debug >/dev/null
meson compile -C "$work/meson_project/build" >/dev/null
check_flags "the meson subproject" "$(compile_command "$work/meson_project/build/compile_commands.json")"
"$work/meson_project/build/consumer"

printf '\nall consumer checks passed\n'
