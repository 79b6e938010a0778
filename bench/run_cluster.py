#!/usr/bin/env python3
"""Cluster figures, tandem and Node's cluster in one run (same worker count):
  1. distribution of new connections across workers (ab without keep-alive);
  2. /ping latency while one worker at a time is blocked by a ~500 ms /compute (ab, new
     connections), per balance mode / scheduling policy;
  3. server CPU per hello-world request (wrk, keep-alive), against one tandem process;
  4. failed requests during SIGHUP reloads under load (tandem only: Node's cluster has none).

    bench/run_cluster.py [build/release] [--workers 2]
Needs ab (apache2-utils), wrk, node.
"""
import json, os, re, signal, subprocess, sys, threading, time, urllib.request, socket

build = next((a for a in sys.argv[1:] if not a.startswith('--') and not a.isdigit()), 'build/release')
workers = int(sys.argv[sys.argv.index('--workers') + 1]) if '--workers' in sys.argv else 2
here = os.path.dirname(os.path.abspath(__file__))


COUNTS = '/tmp/tandem-bench-gunicorn-counts'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start(cmd):
    if cmd[0] == 'gunicorn':
        # gunicorn has no "listening on" line on stdout: give it a port, wait until it answers.
        port = free_port()
        env = dict(os.environ, PEER_COUNTS=COUNTS)
        if os.path.exists(COUNTS):
            os.unlink(COUNTS)
        p = subprocess.Popen(cmd + ['-b', f'127.0.0.1:{port}'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, start_new_session=True, env=env)
        for _ in range(200):
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                return p, port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('gunicorn did not start')
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = p.stdout.readline()
    m = re.search(r'listening on http://127\.0\.0\.1:(\d+)', line)
    assert m, f'{cmd}: {line!r}'
    return p, int(m.group(1))


def stop(p):
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=30)[0]
    return out


def get(port, path, timeout=30):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=timeout) as r:
        return r.read().decode()


def tree_cpu(pid):
    """utime + stime (s) of pid and its children."""
    total = 0.0
    pids = [pid] + [int(c) for c in subprocess.run(['pgrep', '-P', str(pid)], capture_output=True, text=True).stdout.split()]
    for q in pids:
        try:
            f = open(f'/proc/{q}/stat').read().rsplit(')', 1)[1].split()
            total += (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
        except OSError:
            pass
    return total


def ab(port, path, n, c):
    out = subprocess.run(['ab', '-q', '-n', str(n), '-c', str(c), f'http://127.0.0.1:{port}{path}'],
                         capture_output=True, text=True).stdout
    pct = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r'^\s+(\d+)%\s+(\d+)', out, re.M)}
    failed = int(re.search(r'Failed requests:\s+(\d+)', out).group(1))
    rps = float(re.search(r'Requests per second:\s+([\d.]+)', out).group(1))
    return pct, failed, rps


def calibrate(port):
    n = 20_000_000
    while True:
        t = time.monotonic(); get(port, f'/compute?n={n}'); took = time.monotonic() - t
        if took > 0.1:
            return int(n * 0.5 / took)
        n *= 4


def blocker(port, n, stop_event):
    while not stop_event.is_set():
        try:
            get(port, f'/compute?n={n}')
        except Exception:
            pass


def ping_under_block(port, n):
    stop_event = threading.Event()
    t = threading.Thread(target=blocker, args=(port, n, stop_event)); t.start()
    time.sleep(0.1)
    pct, failed, _ = ab(port, '/ping', 2000, 4)
    stop_event.set(); t.join()
    return pct


def tandem_counts(port):
    return [w['requests'] for w in json.loads(get(port, '/cluster'))['workers']]


servers = [('tandem shared', [f'{build}/examples/cluster', '--port', '0', '--workers', str(workers), '--balance', 'shared']),
           ('tandem reuseport', [f'{build}/examples/cluster', '--port', '0', '--workers', str(workers), '--balance', 'reuseport']),
           ('node cluster rr', ['node', f'{here}/peers/cluster_node.js', '--port', '0', '--workers', str(workers), '--sched', 'rr']),
           ('node cluster none', ['node', f'{here}/peers/cluster_node.js', '--port', '0', '--workers', str(workers), '--sched', 'none']),
           ('gunicorn sync', ['gunicorn', '--chdir', f'{here}/peers', '-c', f'{here}/peers/cluster_gunicorn.py',
                              '-w', str(workers), '-k', 'sync', '--timeout', '60', 'cluster_gunicorn:app'])]

print(f'workers: {workers}; machine: {os.cpu_count()} CPUs')
for name, cmd in servers:
    p, port = start(cmd)
    get(port, '/ping')
    pct, failed, rps = ab(port, '/', 20000, 16)
    if name.startswith('tandem'):
        counts = tandem_counts(port)
        stop(p)
    elif name.startswith('gunicorn'):
        stop(p)
        counts = [int(l.split()[1]) for l in open(COUNTS)]
    else:
        time.sleep(0.3)  # the workers report their counts every 100 ms
        counts = json.loads(stop(p).strip().splitlines()[-1])['counts']
    total = sum(counts)
    share = ' '.join(f'{c / total:.3f}' for c in counts)
    print(f'{name:18s} distribution of 20000 new connections: {counts} (shares {share}); {rps:.0f} req/s, failed {failed}')

for name, cmd in servers:
    p, port = start(cmd)
    n = calibrate(port)
    base, _, _ = ab(port, '/ping', 2000, 4)
    pct = ping_under_block(port, n)
    stop(p)
    print(f'{name:18s} /ping ms idle p50 {base[50]} p99 {base[99]} | one worker blocked by 500 ms /compute: '
          f'p50 {pct[50]} p99 {pct[99]} max {pct[100]}')


def wrk_cpu(cmd):
    p, port = start(cmd)
    get(port, '/')
    before = tree_cpu(p.pid)
    out = subprocess.run(['wrk', '-t1', '-c32', '-d5s', f'http://127.0.0.1:{port}/'], capture_output=True, text=True).stdout
    after = tree_cpu(p.pid)
    stop(p)
    reqs = int(re.search(r'(\d+) requests in', out).group(1))
    return (after - before) / reqs * 1e6, reqs / 5


print('CPU per hello-world request (wrk -t1 -c32 -d5s, keep-alive; server processes only):')
single = wrk_cpu([f'{build}/examples/hello_server', '--port', '0'])
print(f'  tandem single process: {single[0]:.2f} us/request ({single[1]:.0f} req/s)')
for name, cmd in servers:
    us, rps = wrk_cpu(cmd)
    print(f'  {name:18s}: {us:.2f} us/request ({rps:.0f} req/s), {us / single[0]:.2f}x single')


def reload_loss(cmd, reloads=3):
    p, port = start(cmd)
    counts = {'ok': 0, 'failed': 0}
    stop_event = threading.Event()
    lock = threading.Lock()

    def client():
        while not stop_event.is_set():
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
                    s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
                    data = b''
                    while chunk := s.recv(4096):
                        data += chunk
                ok = data.startswith(b'HTTP/1.1 200')
            except OSError:
                ok = False
            with lock:
                counts['ok' if ok else 'failed'] += 1
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads: t.start()
    time.sleep(0.5)
    for _ in range(reloads):
        os.kill(p.pid, signal.SIGHUP)
        time.sleep(1.5)
    stop_event.set()
    for t in threads: t.join()
    stop(p)
    return counts


migrate = open('/proc/sys/net/ipv4/tcp_migrate_req').read().strip()
for name, cmd in servers:
    if name.startswith('node'):
        continue  # Node's cluster module has no reload (PM2 adds one)
    c = reload_loss(cmd)
    print(f'reload under load, {name}: 3 SIGHUPs, {c["ok"]} ok, {c["failed"]} failed (tcp_migrate_req={migrate})')
