// Placeholder until the real function server lands (issue 4): runs the handler once per request.
const http = require('node:http');
const path = require('node:path');
const fn = require(path.join(__dirname, 'function', (process.env.MOD_NAME || 'handler') + '.js'));
http.createServer(async (req, res) => {
  if (req.url === '/healthz') { res.end('OK'); return; }
  const out = await fn[process.env.FUNC_HANDLER || 'main']({ data: null }, {});
  res.end(typeof out === 'string' ? out : JSON.stringify(out));
}).listen(Number(process.env.FUNC_PORT || 8080));
