// HTTP peer: Node's http.createServer answering GET / with the hello JSON (keep-alive).
//   node bench/peers/http_node.js --port 0   → prints "listening on http://127.0.0.1:PORT"
'use strict';
const http = require('http');
const i = process.argv.indexOf('--port');
const port = i > 0 ? Number(process.argv[i + 1]) : 0;
const body = '{"message":"Hello from tandem"}';
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${server.address().port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)) && server.closeAllConnections());
