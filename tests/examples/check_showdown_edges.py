"""The showdown at its edges: bad options, an unusable --out, servers that crash or lie, SIGTERM.

    check_showdown_edges.py SHOWDOWN_BINARY

1. Options that would make a figure meaningless (or used to spin forever, like --work-ms 0.5)
   are refused at once with exit 2 and a message naming the option; nothing is written.
2. --out under a regular file is refused before anything is measured.
3. Peers that fail (fakes first on PATH): a Python server that exits before listening, one
   that answers the warm-up and then exits mid-run, a `node` that prints its listening line
   for a port nobody serves, or for port 99999. The run still succeeds (a
   peer's failure is a note), showdown.json lists only the row that was measured, the notes
   say why the others were not, and the page draws a /ping series for measured rows only.
4. SIGTERM mid-run: exit 143 (128 + SIGTERM), like a shell reports it.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def refused(exe, args, expect, tmp):
    out = os.path.join(tmp, "never")
    start = time.monotonic()
    r = subprocess.run([exe] + ([] if "--out" in args else ["--out", out]) + args,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    took = time.monotonic() - start
    if r.returncode != 2:
        fail(f"{args}: exit {r.returncode}, not 2 (stderr: {r.stderr[-500:]})")
    if expect not in r.stderr:
        fail(f"{args}: stderr does not say {expect!r}: {r.stderr[-500:]}")
    if os.path.exists(out):
        fail(f"{args}: refused, yet created {out}")
    print(f"refused in {took:.1f} s: {args} -> {r.stderr.splitlines()[0]}")


FAKE_PYTHON_PEER = r"""
import os, socket, sys
if sys.argv[sys.argv.index("--mode") + 1] == "inline":
    sys.exit("crashing before listening, on purpose")
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print(f"listening on http://127.0.0.1:{s.getsockname()[1]}", flush=True)
served = 0
while True:
    c, _ = s.accept()
    f = c.makefile("rb")
    while f.readline().strip():  # one request per connection: the warm-up's three
        pass
    served += 1
    if served > 3:
        os._exit(0)  # gone in the middle of the measured run
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    c.close()
"""


def write_exe(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def main():
    exe = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="showdown-edges-") as tmp:
        for args, expect in [(["--seconds", "0"], "--seconds"), (["--seconds", "0.001"], "--seconds"),
                             (["--seconds", "-1"], "--seconds"), (["--seconds", "nan"], "--seconds"),
                             (["--seconds", "1e9"], "--seconds"), (["--seconds"], "--seconds needs a value"),
                             (["--work-ms", "0.5"], "--work-ms"), (["--work-ms", "0"], "--work-ms"),
                             (["--rate", "0"], "--rate"), (["--connections", "0.5"], "--connections"),
                             (["--models", ""], "--models"), (["--models", "blocked,nope"], "unknown model 'nope'"),
                             (["--models", ","], "unknown model ''"), (["--bogus"], "unknown option '--bogus'"),
                             (["--seconds=abc"], "--seconds")]:
            refused(exe, args, expect, tmp)
        a_file = os.path.join(tmp, "a-file")
        open(a_file, "w").close()
        refused(exe, ["--out", os.path.join(a_file, "out")], "--out", tmp)

        # 3. Fake peers, first on PATH.
        bin_dir = os.path.join(tmp, "bin")
        os.mkdir(bin_dir)
        write_exe(os.path.join(bin_dir, "python3"), f"#!/bin/sh\nexec '{sys.executable}' \"$@\"\n")
        write_exe(os.path.join(bin_dir, "node"),  # inline: a port nobody serves; workers: no port at all
                  "#!/bin/sh\ncase \"$*\" in *inline*) port=1 ;; *) port=99999 ;; esac\n"
                  "echo \"listening on http://127.0.0.1:$port\"\nexec sleep 30\n")
        peers = os.path.join(tmp, "peers")
        os.mkdir(peers)
        with open(os.path.join(peers, "python_server.py"), "w") as f:
            f.write(FAKE_PYTHON_PEER)
        open(os.path.join(peers, "node_server.js"), "w").close()
        out = os.path.join(tmp, "made", "on", "demand")
        env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
        r = subprocess.run([exe, "--models", "threads,python-inline,python-processes,node-inline,node-workers", "--seconds", "0.3", "--peers-dir",
                            peers, "--out", out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=100, env=env)
        print(r.stdout)
        if r.returncode != 0:
            fail(f"failing peers made the showdown exit {r.returncode}; they are notes, not errors")
        doc = json.load(open(os.path.join(out, "showdown.json")))
        names = [m["name"] for m in doc["models"]]
        if names != ["worker threads"]:
            fail(f"showdown.json should list only the measured row, lists {names}")
        notes = "\n".join(doc["notes"])
        for want in ("Python asyncio inline: failed: exited before listening", "Node inline: failed: listening, but",
                     "Node worker_threads: failed: printed a listening line without a valid port",
                     "Python ProcessPoolExecutor: failed: the server exited with status 0 during the run"):
            if want not in notes:
                fail(f"notes lack {want!r}: {notes}")
        page = open(os.path.join(out, "showdown.html")).read()
        drawn = re.findall(r'<polyline class="series" data-model="([^"]*)"', page)
        if drawn != names:
            fail(f"the page draws series {drawn}, the measured rows are {names}")
        if page.count("could not be measured") != 4:
            fail("the page does not say, for each failed row, why it could not be measured")

        # 4. SIGTERM while a model runs.
        p = subprocess.Popen([exe, "--models", "threads", "--seconds", "60", "--out", os.path.join(tmp, "term")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in p.stderr:
            if "[1/" in line:
                break
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        if rc != 128 + signal.SIGTERM:
            fail(f"after SIGTERM the showdown exited with {rc}, not {128 + signal.SIGTERM}")
    print("PASS")


if __name__ == "__main__":
    main()
