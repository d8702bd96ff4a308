'use strict';
// Our server against Kyma's answers: every request of kyma/cases.js is sent to our server running
// kyma/probe-handler.js, and the answer (status, the headers of cases.HEADERS, body) must equal what
// Kyma's own server (components/runtimes/nodejs24/server.mjs, run locally) answered, recorded in
// kyma/kyma-answers.json by kyma/client.js; except the deviations below, kept on purpose, where
// Kyma's answer is a bug (each is asserted as ours). Also /metrics against kyma/kyma-metrics.txt.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, get } = require('./support');
const { run, startProxy } = require('./kyma/client');

const KYMA = require('./kyma/kyma-answers.json');
const PROBE = fs.readFileSync(path.join(__dirname, 'kyma', 'probe-handler.js'), 'utf8');

const plain = (status, body) => ({ status, headers: { 'content-length': String(Buffer.byteLength(body)), 'access-control-allow-origin': '*' }, body });
const text = (status, body, cors = true) => ({
  status, body,
  headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), ...(cors ? { 'access-control-allow-origin': '*' } : {}) },
});
// Kyma's answer → ours, and why.
const DEVIATIONS = {
  // Kyma's handleError reads a span that is not there and throws: Express's HTML error page (with
  // the stack) instead of the 500 it means to send; a rejection is then never answered (408).
  'return number': plain(500, 'Internal server error'),
  'return true': plain(500, 'Internal server error'),
  'return throw': plain(500, 'Internal server error'),
  'return throw-string': plain(500, 'custom failure'),
  'return reject': plain(500, 'Internal server error'),
  'return reject-string': plain(500, 'custom rejection'),
  // Body errors: Kyma answers Express's HTML error page with the stack; ours a line of text.
  'data json invalid': text(400, 'Invalid JSON in the request body', false),
  'ce structured bad json': text(400, 'Invalid JSON in the request body', false),
  'body too large': text(413, 'Request body larger than 1 MB', false),
  'body json too large': text(413, 'Request body larger than 1 MB', false),
  'data json bad charset': text(415, 'Invalid request body: unsupported charset "KOI9"', false),
  'ce binary minimal text': text(500, 'Invalid CloudEvent: no cloud event detected'),
  // Kyma sends the header values "undefined" when the request has none.
  'options plain': { status: 200, headers: { 'content-length': '0', 'access-control-allow-origin': '*' }, body: '' },
  // Kyma's favicon route never ends its response (408 after FUNC_TIMEOUT).
  'favicon': { status: 204, headers: {}, body: '' },
};

// What differs between two runs for reasons other than the server: the time of CloudEvents without
// one (and so the ETag of the answer that shows it), the port in Host.
function normalise(answer) {
  const a = JSON.parse(JSON.stringify(answer));
  const ce = a.json && a.json.ce;
  if (ce && ce['ce-time'] && !ce['ce-time'].startsWith('2026-01-01')) {
    assert.match(ce['ce-time'], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    ce['ce-time'] = '<now>';
    delete a.headers.etag;
  }
  if (a.json && typeof a.json.host === 'string' && a.json.host.startsWith('127.0.0.1:')) {
    a.json.host = '127.0.0.1:<port>';
    delete a.headers.etag;
  }
  return a;
}

describe('answers as Kyma’s nodejs24 server', () => {
  let srv, proxy, ours;
  before(async () => {
    proxy = await startProxy();
    srv = await startServer({ 'handler.js': PROBE }, {
      FUNC_TIMEOUT: '2', FUNC_NAME: 'probe', SERVICE_NAMESPACE: 'ns', FUNC_RUNTIME: 'nodejs24', PUBLISHER_PROXY_ADDRESS: proxy.url,
    });
    ours = await run(srv.url, proxy);
  });
  after(async () => { await srv.stop(); proxy.server.close(); });

  for (const name of Object.keys(KYMA)) {
    it(name, () => {
      const expected = DEVIATIONS[name] || normalise(KYMA[name]);
      assert.deepEqual(normalise(ours[name]), expected);
    });
  }

  it('counts: how many behaviours match Kyma’s', () => {
    const total = Object.keys(KYMA).length;
    const deviations = Object.keys(DEVIATIONS).length;
    console.log(`${total - deviations} of ${total} behaviours answer as Kyma's; ${deviations} deviations on purpose`);
    assert.ok(Object.keys(DEVIATIONS).every((n) => n in KYMA));
  });
});

describe('/metrics as Kyma’s', () => {
  it('has Kyma’s names, types and labels, after 3 calls and a call to POST /healthz', async () => {
    const srv = await startServer({ 'handler.js': PROBE }, { FUNC_NAME: 'probe' });
    try {
      const empty = (await get(srv, '/metrics')).text;
      assert.match(empty, /# no registered metrics$/);
      for (let i = 0; i < 3; i++) await get(srv, '/?m=string');
      await get(srv, '/', { method: 'OPTIONS' }); // not counted
      await get(srv, '/healthz?m=string', { method: 'POST' });
      const m = await get(srv, '/metrics');
      assert.equal(m.type, 'text/plain');
      const shape = (t) => t.replace(/unknown_service:[^"]*/, 'unknown_service:NODE').replace(/(_sum\{[^}]*\}) \S+/, '$1 SUM')
        .replace(/(le="\d+"\}) \d+/g, "$1 N"); // durations differ (the first call loads Express)
      const kyma = fs.readFileSync(path.join(__dirname, 'kyma', 'kyma-metrics.txt'), 'utf8');
      assert.equal(shape(m.text).trim(), shape(kyma).trim());
      await get(srv, '/?m=throw');
      assert.match((await get(srv, '/metrics')).text, /^function_failures_total\{otel_scope_name="probe"\} 1$/m);
    } finally { await srv.stop(); }
  });
});
