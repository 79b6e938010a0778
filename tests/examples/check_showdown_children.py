"""The showdown leaves no server behind, however it ends: SIGINT (Ctrl-C), SIGTERM and SIGKILL.

    check_showdown_children.py SHOWDOWN_BINARY PEERS_DIR

The binary and the peer scripts are copied into a fresh directory, so every process the
showdown starts (its own --serve child with its process-pool zygote and workers, the cluster's
primary and its worker processes, the Python
peer with its ProcessPoolExecutor workers) names that directory in its command line and can be found in /proc.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def processes_under(marker, exclude):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in exclude:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            found.append((int(pid), cmd.strip()))
    return found


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)  # polling /proc: there is no event for "a process elsewhere exited"
    return predicate()


SIGNALS = {"sigint": (signal.SIGINT, 130), "sigterm": (signal.SIGTERM, 143), "sigkill": (signal.SIGKILL, None)}


def one_run(exe, peers, how, model, at_least=3):
    marker = os.path.dirname(exe)
    out = os.path.join(marker, "out-" + how + "-" + model)
    p = subprocess.Popen([exe, "--models", model, "--seconds", "30", "--out", out, "--peers-dir", peers],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # stderr is not a terminal: one progress line per step. Wait until the server's helpers
    # (a pool's zygote and workers, a cluster's workers) run beside it.
    seen = []
    for line in p.stderr:
        seen.append(line)
        if "[1/" in line:
            break
    else:
        fail(f"the showdown ended early: {''.join(seen)}")
    mine = {p.pid}
    if not wait_for(lambda: len(processes_under(marker, mine)) >= at_least, 30):  # a pool starts slowly on a busy box
        fail(f"expected a server and its workers, found {processes_under(marker, mine)}")
    before = processes_under(marker, mine)
    print(f"{how} during {model}: the showdown runs with {len(before)} processes of its own")
    sig, status = SIGNALS[how]
    p.send_signal(sig)
    rc = p.wait(timeout=15)
    if status is not None and rc != status:
        fail(f"after {how} the showdown exited with {rc}, not {status}")
    if not wait_for(lambda: not processes_under(marker, mine), 10):
        left = processes_under(marker, mine)
        for pid, _ in left:
            os.kill(pid, signal.SIGKILL)
        fail(f"left behind after {how}: {left}")
    print(f"{how} during {model}: exit {rc}, nothing left behind")


def main():
    with tempfile.TemporaryDirectory(prefix="showdown-children-") as tmp:
        exe = os.path.join(tmp, "showdown")
        shutil.copy2(sys.argv[1], exe)
        peers = os.path.join(tmp, "peers")
        shutil.copytree(sys.argv[2], peers)
        one_run(exe, peers, "sigint", "processes")
        one_run(exe, peers, "sigkill", "processes")
        # The cluster's primary and one worker at least (a one-CPU box runs one worker). Its
        # workers are the showdown's grandchildren: they die with their primary.
        for how in ("sigint", "sigterm", "sigkill"):
            one_run(exe, peers, how, "cluster", at_least=2)
        if shutil.which("python3"):  # the peer's ProcessPoolExecutor workers are grandchildren
            one_run(exe, peers, "sigkill", "python-processes")
    print("PASS")


if __name__ == "__main__":
    main()
