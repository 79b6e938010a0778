// Offload round trip peer: Node worker_threads, postMessage to one persistent worker and
// back. Same measurements as bench_offload: sequential p50/p99/mean, then 64 in flight.
//   node bench/peers/offload_node.js [sequential=50000] [in_flight_jobs=1000000]
'use strict';
const { Worker, isMainThread, parentPort } = require('worker_threads');

if (!isMainThread) {
  parentPort.on('message', (x) => parentPort.postMessage(x + 1));
} else {
  const sequential = Number(process.argv[2] || 50000);
  const jobs = Number(process.argv[3] || 1000000);
  const inFlight = 64;
  const worker = new Worker(__filename);
  let resolveNext = null;
  worker.on('message', (v) => { const r = resolveNext; resolveNext = null; r(v); });
  const roundTrip = (x) => new Promise((resolve) => { resolveNext = resolve; worker.postMessage(x); });

  (async () => {
    for (let i = 0; i < 1000; ++i) await roundTrip(i); // warm up
    const ns = new Float64Array(sequential);
    let x = 0;
    for (let i = 0; i < sequential; ++i) {
      const t0 = process.hrtime.bigint();
      x = await roundTrip(x);
      ns[i] = Number(process.hrtime.bigint() - t0);
    }
    ns.sort();
    const mean = ns.reduce((a, b) => a + b, 0) / sequential;

    // 64 in flight: the worker answers in order, so a FIFO of resolvers matches replies.
    const pending = [];
    worker.removeAllListeners('message');
    worker.on('message', (v) => pending.shift()(v));
    const call = (v) => new Promise((resolve) => { pending.push(resolve); worker.postMessage(v); });
    const chain = async (n) => { let v = 0; for (let i = 0; i < n; ++i) v = await call(v); };
    const t0 = process.hrtime.bigint();
    const per = Math.floor(jobs / inFlight);
    await Promise.all(Array.from({ length: inFlight }, () => chain(per)));
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(JSON.stringify({
      runtime: 'node worker_threads',
      p50_us: ns[Math.floor(sequential / 2)] / 1000,
      p99_us: ns[Math.floor(sequential * 0.99)] / 1000,
      mean_us: mean / 1000,
      jobs_per_s: per * inFlight / secs,
    }));
    await worker.terminate();
  })();
}
