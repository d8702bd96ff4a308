'use strict';
// The plain peer of runtimes/node/server/server.js for bench/runtimes: a node:http server doing the
// same essential work (parse the request, call the function's main(event, context), write its string
// as a text response with a Content-Length, keep-alive) and nothing else: no event object, metrics,
// log line or timeout. Usage: node plain_node.js FUNC_DIR  (FUNC_HOST / FUNC_PORT as for the server;
// port 0 picks a free one, printed as "listening on HOST:PORT").
const http = require('node:http');
const path = require('node:path');

const main = require(path.join(path.resolve(process.argv[2] || '.'), 'handler.js')).main;

const server = http.createServer((req, res) => {
  const body = main({ data: undefined }, {});
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
});
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeIdleConnections(); });
server.listen(Number(process.env.FUNC_PORT || 8080), process.env.FUNC_HOST || '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on ${address}:${port}`);
});
