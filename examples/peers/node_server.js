// The showdown's Node peer: the same endpoints as tandem's examples, Node's standard library only.
//
//   node examples/peers/node_server.js --mode inline|workers [--port 0] [--work-ms 50]
//
// --mode inline   /compute runs the job right in the request handler (the Node pitfall)
// --mode workers  /compute posts the job to a pool of worker_threads, one per core
// The job is sum(sqrt(i)) for a count calibrated at start to --work-ms of CPU time.
// Prints "listening on http://127.0.0.1:PORT"; exits 0 on SIGINT/SIGTERM.
'use strict';
const http = require('http');
const os = require('os');
const { Worker, isMainThread, parentPort } = require('worker_threads');
const { monitorEventLoopDelay } = require('perf_hooks');

function sumSqrt(n) {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.sqrt(i);
  return sum;
}

if (!isMainThread) {
  parentPort.on('message', ({ id, n }) => parentPort.postMessage({ id, result: sumSqrt(n) }));
  return;
}

const args = { mode: 'inline', port: 0, 'work-ms': 50 };
for (let i = 2; i + 1 < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

// process.cpuUsage() is the process's CPU time; at start only this thread runs, so it is this
// thread's, and a busy machine cannot shrink the job the way a wall-clock calibration would.
function calibrate(ms) {
  let n = 250000;
  for (;;) {
    const start = process.cpuUsage();
    sumSqrt(n);
    const used = process.cpuUsage(start);
    const took = (used.user + used.system) / 1000;
    if (took >= 20) return Math.max(1, Math.round(n * ms / took));
    n *= 2;
  }
}
const n = calibrate(Number(args['work-ms']));

let compute;
const workers = [];
if (args.mode === 'workers') {
  const waiting = new Map();
  const queue = [];
  let nextId = 0;
  const idle = [];
  const dispatch = () => {
    while (idle.length && queue.length) {
      const w = idle.pop();
      const job = queue.shift();
      w.busy = job.id;
      w.postMessage({ id: job.id, n });
    }
  };
  for (let i = 0; i < Math.max(1, os.cpus().length); i++) {
    const w = new Worker(__filename);
    w.on('message', ({ id, result }) => {
      waiting.get(id)(result);
      waiting.delete(id);
      idle.push(w);
      dispatch();
    });
    workers.push(w);
    idle.push(w);
  }
  compute = () => new Promise((resolve) => {
    const id = nextId++;
    waiting.set(id, resolve);
    queue.push({ id });
    dispatch();
  });
} else if (args.mode === 'inline') {
  compute = async () => sumSqrt(n);
} else {
  console.error(`unknown --mode ${args.mode}`);
  process.exit(2);
}

const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer(async (req, res) => {
  const path = req.url.split('?')[0];
  if (path === '/') return send(res, 200, 'application/json', '{"message":"Hello from node"}');
  if (path === '/ping') return send(res, 200, 'text/plain', 'pong');
  if (path === '/slow') return setTimeout(() => send(res, 200, 'text/plain', 'slow'), 200);
  if (path === '/compute') return send(res, 200, 'application/json', `{"result": ${(await compute()).toFixed(6)}}`);
  if (path === '/reset-stats') { delay.reset(); return send(res, 200, 'text/plain', 'ok'); }
  if (path === '/stats') {
    return send(res, 200, 'application/json',
      `{"loop_delay_p99_ms": ${(delay.percentile(99) / 1e6).toFixed(3)}, "longest_step_ms": ${(delay.max / 1e6).toFixed(3)}}`);
  }
  send(res, 404, 'text/plain', 'not found\n');
});
server.keepAliveTimeout = 30000;
server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`);
});
const stop = () => {
  server.close();
  if (server.closeAllConnections) server.closeAllConnections(); // Node >= 18.2
  Promise.all(workers.map((w) => w.terminate())).then(() => process.exit(0));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
