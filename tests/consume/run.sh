#!/usr/bin/env bash
# Proves each way a user consumes tandem works: FetchContent from a git URL,
# add_subdirectory, find_package after cmake --install, pkg-config, and a meson subproject.
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gen=(-G Ninja)

step() { printf '\n== consume: %s\n' "$1"; }

step "FetchContent from a local git URL"
git clone -q "$src" "$work/repo"   # a clean clone of what is committed
( cd "$work/repo" && git rev-parse HEAD >/dev/null )
cmake -S "$src/tests/consume" -B "$work/fetch" "${gen[@]}" -DMODE=fetch \
      -DTANDEM_GIT_URL="file://$work/repo" -DTANDEM_GIT_TAG="$(git -C "$work/repo" rev-parse HEAD)" >/dev/null
cmake --build "$work/fetch" >/dev/null
"$work/fetch/consumer"

step "add_subdirectory"
cmake -S "$src/tests/consume" -B "$work/subdir" "${gen[@]}" -DMODE=subdirectory -DTANDEM_SOURCE_DIR="$src" >/dev/null
cmake --build "$work/subdir" >/dev/null
"$work/subdir/consumer"

step "cmake --install, then find_package(tandem CONFIG)"
cmake -S "$src" -B "$work/tandem-build" "${gen[@]}" -DTANDEM_INSTALL=ON -DTANDEM_BUILD_TESTS=OFF \
      -DTANDEM_BUILD_EXAMPLES=OFF -DTANDEM_BUILD_BENCH=OFF -DCMAKE_INSTALL_PREFIX="$work/prefix" >/dev/null
cmake --install "$work/tandem-build" >/dev/null
test -f "$work/prefix/share/cmake/tandem/tandemConfigVersion.cmake"
cmake -S "$src/tests/consume" -B "$work/package" "${gen[@]}" -DMODE=package -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/package" >/dev/null
"$work/package/consumer"

step "pkg-config"
PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --modversion tandem
# shellcheck disable=SC2046
c++ $(PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --cflags --libs tandem) \
    "$src/tests/consume/main.cpp" -o "$work/pkgconfig-consumer"
"$work/pkgconfig-consumer"

step "meson subproject"
cp -r "$src/tests/consume/meson_project" "$work/meson_project"
cp "$src/tests/consume/main.cpp" "$work/main.cpp"
mkdir -p "$work/meson_project/subprojects"
ln -s "$work/repo" "$work/meson_project/subprojects/tandem"
meson setup "$work/meson_project/build" "$work/meson_project" >/dev/null
meson compile -C "$work/meson_project/build" >/dev/null
"$work/meson_project/build/consumer"

printf '\nall consumer checks passed\n'
