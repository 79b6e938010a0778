"""Renders the showdown's page in headless Chromium and checks the charts are there.

    check_showdown_html.py OUT_DIR     (OUT_DIR holds showdown.json, .html and -ping.svg)

1. showdown.html through --dump-dom: the browser's DOM has one /ping series (an SVG
   polyline with points) per model in showdown.json, and one throughput bar per model.
2. showdown-ping.svg through --screenshot at its own size: inside the plot area, pixels of
   each series' colour were really painted.
Exits 77 (ctest's SKIP_RETURN_CODE) with a message when no Chromium is installed.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--force-device-scale-factor=1", "--hide-scrollbars"]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_browser(exe, args):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe] + FLAGS + ["--user-data-dir=" + profile] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=90)


def read_png(path):
    """Pixels of an 8-bit, non-interlaced RGB or RGBA PNG as (width, height, rows of bytes, bpp)."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(path + " is not a PNG")
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if depth != 8 or color not in (2, 6) or interlace:
        fail(f"unexpected PNG format depth={depth} color={color} interlace={interlace}")
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 255
        rows.append(line)
        prev = line
    return width, height, rows, bpp


def main():
    out = sys.argv[1]
    exe = chromium()
    if not exe:
        print("SKIP: no chromium on PATH (Debian: apt-get install -y --no-install-recommends chromium); "
              "showdown.html was not checked in a browser")
        sys.exit(77)
    models = [m["name"] for m in json.load(open(os.path.join(out, "showdown.json")))["models"]]
    if not models:
        fail("showdown.json lists no models")

    dom = run_browser(exe, ["--dump-dom", "file://" + os.path.abspath(os.path.join(out, "showdown.html"))])
    if dom.returncode != 0 or "<svg" not in dom.stdout:
        fail(f"chromium --dump-dom failed ({dom.returncode}): {dom.stderr[-2000:]}")
    series = re.findall(r'<polyline class="series" data-model="([^"]*)"[^>]*points="([^"]*)"', dom.stdout)
    names = [html_unescape(n) for n, _ in series]
    if sorted(names) != sorted(models):
        fail(f"series in the page {names} do not match the models {models}")
    for name, points in series:
        if len(points.split()) < 10:
            fail(f"the series of {name!r} has only {len(points.split())} points")
    bars = [html_unescape(n) for n in re.findall(r'<rect class="bar" data-model="([^"]*)"', dom.stdout)]
    for m in models:
        if m not in bars:
            fail(f"no throughput bar for {m!r}")
    print(f"DOM: {len(series)} /ping series and {len(bars)} bars for {len(models)} models")

    svg_path = os.path.join(out, "showdown-ping.svg")
    svg = open(svg_path).read()
    w, h = (int(float(v)) for v in re.search(r'width="([\d.]+)" height="([\d.]+)"', svg).groups())
    plot = re.search(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" fill="none"', svg)
    px, py, pw, ph = (float(v) for v in plot.groups())
    colors = re.findall(r'<polyline class="series" data-model="([^"]*)" fill="none" stroke="#([0-9a-f]{6})"', svg)
    with tempfile.TemporaryDirectory() as tmp:
        shot = os.path.join(tmp, "ping.png")
        r = run_browser(exe, [f"--window-size={w},{h}", "--screenshot=" + shot, "file://" + os.path.abspath(svg_path)])
        if r.returncode != 0 or not os.path.exists(shot):
            fail(f"chromium --screenshot failed ({r.returncode}): {r.stderr[-2000:]}")
        width, height, rows, bpp = read_png(shot)
    painted = {}
    for name, hexcolor in colors:
        want = tuple(int(hexcolor[i:i + 2], 16) for i in (0, 2, 4))
        count = 0
        for y in range(int(py) + 2, min(height, int(py + ph) - 1)):
            line = rows[y]
            for x in range(int(px) + 2, min(width, int(px + pw) - 1)):
                o = x * bpp
                if abs(line[o] - want[0]) + abs(line[o + 1] - want[1]) + abs(line[o + 2] - want[2]) < 40:
                    count += 1
        painted[name] = count
    print("painted pixels per series in the plot area:", painted)
    for name, count in painted.items():
        if count < 20:
            fail(f"the series of {html_unescape(name)!r} was not painted (only {count} pixels of its colour)")
    print("PASS")


def html_unescape(s):
    return s.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


if __name__ == "__main__":
    main()
