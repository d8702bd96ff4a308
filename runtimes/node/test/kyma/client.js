'use strict';
// Sends the requests of cases.js to a server and describes its answers in a comparable form; runs the
// stand-in publisher proxy (answers 200 {"ok":true}, or the case's proxyStatus, and records what it got).
// CLI: node client.js http://127.0.0.1:18080 18090 > kyma-answers.json (records Kyma's answers).

const http = require('node:http');
const { CASES, HEADERS } = require('./cases');

function startProxy(port = 0) {
  const proxy = { last: null, status: 200 };
  proxy.server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      proxy.last = { method: req.method, url: req.url, contentType: req.headers['content-type'], body: Buffer.concat(chunks).toString() };
      res.writeHead(proxy.status, { 'Content-Type': 'application/json' });
      res.end(proxy.status === 200 ? '{"ok":true}' : '{"error":"proxy"}');
    });
  });
  return new Promise((resolve) => proxy.server.listen(port, '127.0.0.1', () => {
    proxy.url = `http://127.0.0.1:${proxy.server.address().port}/publish`;
    resolve(proxy);
  }));
}

// The CloudEvent the proxy got, with the generated id and time replaced by what they look like.
function describeEvent(text) {
  let ce;
  try { ce = JSON.parse(text); } catch { return text; }
  if (typeof ce.id === 'string' && /^[0-9a-f-]{36}$/.test(ce.id)) ce.id = '<uuid>';
  if (typeof ce.time === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(ce.time)) ce.time = '<now>';
  return ce;
}

function send(base, c, timeoutMs = 6000) {
  const url = new URL(c.path, base);
  const body = c.bodySize !== undefined ? Buffer.alloc(c.bodySize, 97)
    : c.bodyBase64 !== undefined ? Buffer.from(c.bodyBase64, 'base64') : c.body !== undefined ? Buffer.from(c.body) : null;
  const headers = { ...(c.headers || {}) };
  if (body && !c.chunked) headers['Content-Length'] = String(body.length);
  return new Promise((resolve) => {
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: c.method || 'GET', headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        const answer = { status: res.statusCode, headers: {}, body: text };
        for (const h of HEADERS) if (res.headers[h] !== undefined) answer.headers[h] = res.headers[h];
        if (/^\s*[[{]/.test(text) && /json/.test(res.headers['content-type'] || '')) {
          try { answer.json = JSON.parse(text); delete answer.body; } catch { /* keep the text */ }
        }
        resolve(answer);
      });
      res.on('error', () => resolve({ status: 'connection error' }));
    });
    req.setTimeout(timeoutMs, () => { req.destroy(); resolve({ status: 'no answer' }); });
    req.on('error', (err) => resolve(err.message === 'socket hang up' ? { status: 'no answer' } : { status: `error ${err.code}` }));
    req.end(body);
  });
}

async function run(base, proxy, names = Object.keys(CASES)) {
  const answers = {};
  await Promise.all(names.map(async (name) => { // one by one for cases that use the proxy
    const c = CASES[name];
    if (c.proxy) return;
    answers[name] = await send(base, c);
  }));
  for (const name of names) {
    const c = CASES[name];
    if (!c.proxy) continue;
    proxy.status = c.proxyStatus || 200;
    proxy.last = null;
    const answer = await send(base, c);
    answer.proxyGot = proxy.last && { ...proxy.last, body: describeEvent(proxy.last.body) };
    answers[name] = answer;
  }
  return Object.fromEntries(names.map((n) => [n, answers[n]]));
}

module.exports = { send, run, startProxy };

if (require.main === module) {
  (async () => {
    const proxy = await startProxy(Number(process.argv[3] || 0));
    const answers = await run(process.argv[2], proxy);
    process.stdout.write(JSON.stringify(answers, null, 1) + '\n');
    proxy.server.close();
  })();
}
