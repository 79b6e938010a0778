// Process-pool peer: Node worker_threads (Node has no process pool with results; workers are
// its answer to CPU work). Same measurements as bench_process_pool, one JSON line. Messages
// are structured-cloned (copied), as a process pool's arguments are; nothing is transferred.
//   node bench/peers/process_pool_node.js
'use strict';
const { Worker, isMainThread, parentPort } = require('worker_threads');

if (!isMainThread) {
  parentPort.on('message', (m) => {
    if (m.kind === 'one') parentPort.postMessage({ id: m.id, v: m.v + 1 });
    else if (m.kind === 'chunk') parentPort.postMessage({ id: m.id, v: m.v.map((x) => x + 1) });
    else if (m.kind === 'echo') parentPort.postMessage({ id: m.id, v: m.v });
    else if (m.kind === 'hello') parentPort.postMessage({ id: m.id, v: process.pid });
  });
  return;
}

class Pool {
  constructor(n) {
    this.workers = [];
    this.pending = new Map();
    this.next = 0;
    this.id = 0;
    for (let i = 0; i < n; i++) {
      const w = new Worker(__filename);
      w.on('message', (m) => { const r = this.pending.get(m.id); this.pending.delete(m.id); r(m.v); });
      this.workers.push(w);
    }
  }
  call(kind, v, worker) {
    const id = ++this.id;
    const w = this.workers[worker === undefined ? (this.next++ % this.workers.length) : worker];
    return new Promise((resolve) => { this.pending.set(id, resolve); w.postMessage({ id, kind, v }); });
  }
  close() { return Promise.all(this.workers.map((w) => w.terminate())); }
}

const now = () => Number(process.hrtime.bigint()) / 1e3; // µs

async function main() {
  const out = { runtime: 'node worker_threads' };
  let t = now();
  let pool = new Pool(2);
  await Promise.all([pool.call('hello', 0, 0), pool.call('hello', 0, 1)]);
  out.startup_ms = (now() - t) / 1000;
  await pool.close();

  pool = new Pool(1);
  for (let i = 0; i < 1000; i++) await pool.call('one', i);
  const samples = [];
  let x = 0;
  for (let i = 0; i < 20000; i++) {
    const t0 = now();
    x = await pool.call('one', x);
    samples.push(now() - t0);
  }
  samples.sort((a, b) => a - b);
  out.seq_p50_us = samples[samples.length >> 1];
  out.seq_p99_us = samples[Math.floor(samples.length * 0.99)];
  await pool.close();

  pool = new Pool(2);
  for (let i = 0; i < 1000; i++) await pool.call('one', i);
  let n = 20000;
  t = now();
  await Promise.all(Array.from({ length: n }, (_, i) => pool.call('one', i)));
  out.inflight_jobs_s = n / ((now() - t) / 1e6);

  const map = async (items, chunk) => {
    const parts = [];
    for (let i = 0; i < items.length; i += chunk) parts.push(pool.call('chunk', items.slice(i, i + chunk)));
    return (await Promise.all(parts)).flat();
  };
  let items = Array.from({ length: 20000 }, (_, i) => i);
  t = now();
  let r = await map(items, 1);
  out.map1_items_s = items.length / ((now() - t) / 1e6);
  items = Array.from({ length: 2000000 }, (_, i) => i);
  t = now();
  r = await map(items, 1000);
  out.map1000_items_s = items.length / ((now() - t) / 1e6);
  if (r[r.length - 1] !== 2000000) throw new Error('map');

  for (const [size, reps, key] of [[1 << 20, 51, 'echo_1mib_ms'], [64 << 20, 7, 'echo_64mib_ms']]) {
    const payload = Buffer.alloc(size, 7);
    const times = [];
    for (let i = 0; i < reps; i++) {
      const t0 = now();
      const back = await pool.call('echo', payload, 0);
      times.push((now() - t0) / 1000);
      if (back.length !== size) throw new Error('echo');
    }
    times.sort((a, b) => a - b);
    out[key] = times[times.length >> 1];
  }
  await pool.close();
  console.log(JSON.stringify(out));
}

main();
