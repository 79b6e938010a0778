// Node 20 as an HTTP client under load: N concurrent loops GET a URL for a fixed time, with
// the global fetch (undici; the default) or, with --api http, http.get over a keep-alive
// http.Agent (maxSockets N). Prints the same JSON line as bench/http_client_load.cpp.
//
//     node bench/peers/http_client_node.mjs --url http://127.0.0.1:8080/ [--concurrency 64] [--seconds 5] [--api fetch|http]
import http from 'node:http';
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, v, i, a) => (i % 2 ? acc : [...acc, [a[i].replace(/^--/, ''), a[i + 1]]]), []));
const url = args.url ?? 'http://127.0.0.1:8080/';
const concurrency = Number(args.concurrency ?? 64);
const seconds = Number(args.seconds ?? 5);

const api = args.api ?? 'fetch';
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
function get() {
  if (api === 'fetch') return fetch(url).then(async (r) => { await r.text(); return r.status; });
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (r) => {
      r.on('data', () => {});
      r.on('end', () => resolve(r.statusCode));
      r.on('error', reject);
    }).on('error', reject);
  });
}

let ok = 0, failed = 0;
async function worker(until) {
  while (performance.now() < until) {
    try {
      const status = await get();
      if (status === 200) ok++; else failed++;
    } catch (e) {
      failed++;
      console.error('request failed:', e.message);
    }
  }
}

await get(); // connect once before timing
const cpu0 = process.cpuUsage();
const start = performance.now();
const until = start + seconds * 1000;
await Promise.all(Array.from({ length: concurrency }, () => worker(until)));
const elapsed = (performance.now() - start) / 1000;
const c = process.cpuUsage(cpu0);
const cpu = (c.user + c.system) / 1e6;
console.log(JSON.stringify({ client: api === 'fetch' ? 'node-fetch' : 'node-http', requests: ok, failed, seconds: +elapsed.toFixed(3), req_s: Math.round(ok / elapsed),
  cpu_s: +cpu.toFixed(3), cpu_us_per_req: ok ? +(cpu * 1e6 / ok).toFixed(2) : 0 }));
