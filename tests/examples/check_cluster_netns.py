#!/usr/bin/env python3
"""Three simulated hosts behind nginx, on this machine, in network namespaces.

    check_cluster_netns.py CLUSTER_BINARY

Builds a private network that touches nothing outside the namespaces it creates: a
namespace `lb` holding a bridge, nginx and the load generator, and three `host` namespaces,
each linked to the bridge by a veth pair, with its own address (10.77.N.0/24, private). Each
host runs examples/cluster on port 8080; nginx balances over them with keep-alive and
proxy_next_upstream. Under a bounded wrk run: SIGKILL host 1's primary (nginx retries its
GETs on the others), then SIGHUP host 2 (a rolling reload). Expect no failed request.

Needs root, `ip netns`, nginx and wrk; without them it prints why and exits 77 (skipped).
"""
import os, re, shutil, signal, subprocess, sys, tempfile, time

SKIP = 77


def skip(why):
    print(f"SKIPPED: {why}")
    sys.exit(SKIP)


def run(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def main():
    binary = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        skip("needs root to create network namespaces")
    for tool in ("ip", "nginx", "wrk"):
        if not shutil.which(tool):
            skip(f"needs {tool}")
    tag = f"t{os.getpid() % 100000}"
    lb = f"{tag}lb"
    hosts = [f"{tag}h{i}" for i in range(1, 4)]
    net = 70 + os.getpid() % 50  # 10.NET.0.0/24: private, and unlikely to collide between runs
    created, procs, tmp = [], [], tempfile.mkdtemp()
    try:
        try:
            run("ip", "netns", "add", lb)
        except subprocess.CalledProcessError as e:
            skip(f"ip netns add failed: {e.stderr.strip()}")
        created.append(lb)
        run("ip", "-n", lb, "link", "set", "lo", "up")
        run("ip", "-n", lb, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", lb, "addr", "add", f"10.{net}.0.1/24", "dev", "br0")
        run("ip", "-n", lb, "link", "set", "br0", "up")
        for i, h in enumerate(hosts, start=1):
            run("ip", "netns", "add", h)
            created.append(h)
            run("ip", "-n", h, "link", "set", "lo", "up")
            # Created inside `lb`, one end moved to the host: nothing appears in the root namespace.
            run("ip", "-n", lb, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", h)
            run("ip", "-n", lb, "link", "set", f"v{i}", "master", "br0")
            run("ip", "-n", lb, "link", "set", f"v{i}", "up")
            run("ip", "-n", h, "addr", "add", f"10.{net}.0.{10 + i}/24", "dev", "eth0")
            run("ip", "-n", h, "link", "set", "eth0", "up")

        primaries = []
        for i, h in enumerate(hosts, start=1):
            p = subprocess.Popen(["ip", "netns", "exec", h, binary, "--port", "8080", "--workers", "2",
                                  "--bind", f"10.{net}.0.{10 + i}", "--drain-timeout-ms", "5000"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            procs.append(p)
            line = p.stdout.readline()
            assert "listening on" in line, f"host {i}: {line!r} {p.stderr.read() if p.poll() is not None else ''}"
            primaries.append(p)

        conf = os.path.join(tmp, "nginx.conf")
        upstreams = "".join(f"        server 10.{net}.0.{10 + i}:8080 max_fails=1 fail_timeout=30s;\n" for i in (1, 2, 3))
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream tandem {{
{upstreams}        keepalive 32;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:18080;
        location / {{
            proxy_pass http://tandem;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
        }}
    }}
}}
""")
        nginx = subprocess.Popen(["ip", "netns", "exec", lb, "nginx", "-c", conf, "-p", tmp, "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(nginx)
        for _ in range(100):  # nginx says nothing when it is up: try until it answers
            r = run("ip", "netns", "exec", lb, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    "http://127.0.0.1:18080/ping", check=False)
            if r.stdout == "200":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("nginx does not answer: " + open(f"{tmp}/error.log").read())

        wrk = subprocess.Popen(["ip", "netns", "exec", lb, "wrk", "-t2", "-c16", "-d6s", "http://127.0.0.1:18080/"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)  # load timing, not a wait for an event: the kill lands mid-run
        os.kill(primaries[0].pid, signal.SIGKILL)  # the primary alone: its workers die with it
        time.sleep(1.5)
        primaries[1].send_signal(signal.SIGHUP)  # `ip netns exec` execs: this is the primary
        out = wrk.communicate(timeout=30)[0]
        print(out)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        failed = (sum(int(x) for x in errors.groups()) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
        print(f"{requests} requests, {failed} failed; host 1 killed, host 2 reloaded")
        assert requests > 1000, "the load did not run"
        assert failed == 0, f"{failed} failed requests"
        # Host 2 reloaded: it logged a completed reload and keeps serving.
        primaries[1].send_signal(signal.SIGTERM)
        rc = primaries[1].wait(timeout=15)
        log = primaries[1].stderr.read()
        assert "reload complete" in log, log
        assert rc == 0, f"host 2 exit status {rc}"
        print("ok")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        for ns in created:
            run("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
