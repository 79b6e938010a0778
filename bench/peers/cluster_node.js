// Node's cluster module with the example contract's endpoints, the peer of examples/cluster.
//   node cluster_node.js --port 0 --workers 2 [--sched rr|none]
// Prints "listening on http://127.0.0.1:PORT" once every worker listens; /compute is inline
// (a Node cluster without worker threads). On SIGTERM the primary prints each worker's
// request count as JSON ({"counts": [...]}) and exits.
const cluster = require('node:cluster');
const http = require('node:http');
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
const workers = Number(arg('--workers', 2));
const sched = arg('--sched', 'rr');
cluster.schedulingPolicy = sched === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;

if (cluster.isPrimary) {
    const port = Number(arg('--port', 0));
    const counts = new Map();
    let listening = 0, boundPort = 0;
    // Port 0 with cluster: the primary would hand every worker its own random port in
    // SCHED_NONE mode; pick a port first so both policies share one.
    const pick = require('node:net').createServer();
    pick.listen(port, '127.0.0.1', () => {
        boundPort = pick.address().port;
        pick.close(() => {
            for (let i = 0; i < workers; ++i) cluster.fork({ PEER_PORT: String(boundPort) });
        });
    });
    cluster.on('listening', () => {
        if (++listening === workers) console.log(`listening on http://127.0.0.1:${boundPort}`);
    });
    cluster.on('message', (w, msg) => counts.set(w.id, msg.served));
    process.on('SIGTERM', () => {
        for (const id in cluster.workers) cluster.workers[id].process.kill('SIGKILL');
        console.log(JSON.stringify({ counts: [...counts.values()] }));
        process.exit(0);
    });
} else {
    let served = 0;
    const sumSqrt = (n) => { let s = 0; for (let i = 0; i < n; ++i) s += Math.sqrt(i); return s; };
    http.createServer((req, res) => {
        ++served;
        const url = new URL(req.url, 'http://x');
        if (url.pathname === '/') { res.setHeader('Content-Type', 'application/json'); res.end('{"message":"Hello from tandem"}'); }
        else if (url.pathname === '/ping') res.end('pong');
        else if (url.pathname === '/slow') setTimeout(() => res.end('slow'), 200);
        else if (url.pathname === '/compute') res.end(JSON.stringify({ result: sumSqrt(Number(url.searchParams.get('n') || 20000000)) }));
        else { res.statusCode = 404; res.end('not found\n'); }
    }).listen(Number(process.env.PEER_PORT), '127.0.0.1');
    setInterval(() => process.send({ served }), 100);
}
