'use strict';
// Tracing (TRACE_COLLECTOR_ENDPOINT set): incoming W3C and B3 contexts are continued, outgoing
// axios and fetch calls carry traceparent and x-b3-*, event.tracer makes real spans, and the spans
// reach a local OTLP/HTTP receiver with the incoming trace id. Kyma's e2e tracing Function (its
// assertion: traceparent, x-b3-traceid, x-b3-spanid present with only `X-B3-Sampled: 1` sent). Also
// the request log of KYMA_INTERNAL_LOGGER_ENABLED, and that the Express API lists are Express's.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { startServer, waitForOutput, get } = require('./support');
const { REQUEST_API, RESPONSE_API } = require('../server/lib/express');

const HANDLER = `
const axios = require('axios');
module.exports = { main: async function (event) {
  if (event.extensions.request.url === '/fail') throw new Error('failing on purpose');
  const span = event.tracer.startSpan('custom-work');
  span.setAttribute('k', 'v');
  span.end();
  const viaAxios = await axios.get(process.env.TARGET + '/axios');
  const viaFetch = await fetch(process.env.TARGET + '/fetch').then((r) => r.json());
  return { axios: viaAxios.data, fetch: viaFetch, custom: span.spanContext().traceId };
} };
`;

const listen = (server) => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`)));

describe('tracing with TRACE_COLLECTOR_ENDPOINT', () => {
  let srv, target, otlp, spans;
  before(async () => {
    spans = [];
    target = http.createServer((req, res) => { // records the trace headers it got
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ traceparent: req.headers.traceparent, 'x-b3-traceid': req.headers['x-b3-traceid'], 'x-b3-spanid': req.headers['x-b3-spanid'] }));
    });
    otlp = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => { spans.push({ url: req.url, body }); res.end('{}'); });
    });
    const targetUrl = await listen(target);
    const otlpUrl = await listen(otlp);
    srv = await startServer({ 'handler.js': HANDLER }, { FUNC_NAME: 'traced', TARGET: targetUrl, TRACE_COLLECTOR_ENDPOINT: `${otlpUrl}/v1/traces` });
  });
  after(async () => { await srv.stop(); target.close(); otlp.close(); });

  const traced = async (headers, traceId) => {
    const r = await get(srv, '/', { headers });
    assert.equal(r.status, 200);
    const out = JSON.parse(r.text);
    for (const via of ['axios', 'fetch']) {
      const h = out[via];
      assert.ok(h.traceparent && h['x-b3-traceid'] && h['x-b3-spanid'], `${via} carried ${JSON.stringify(h)}`);
      if (traceId) {
        assert.equal(h['x-b3-traceid'], traceId);
        assert.equal(h.traceparent.split('-')[1], traceId);
      }
    }
    if (traceId) assert.equal(out.custom, traceId);
    return out;
  };

  it('continues an incoming W3C traceparent', () => traced({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }, '0af7651916cd43dd8448eb211c80319c'));
  it('continues incoming B3 multi headers', () => traced({ 'X-B3-TraceId': '463ac35c9f6413ad48485a3953bb6124', 'X-B3-SpanId': 'a2fb4a1d1a96d312', 'X-B3-Sampled': '1' }, '463ac35c9f6413ad48485a3953bb6124'));
  it('keeps the context while a request body is read', async () => {
    const id = '33333333333333333333333333333333';
    const r = await get(srv, '/', { method: 'POST', headers: { 'Content-Type': 'application/json', traceparent: `00-${id}-4444444444444444-01` }, body: '{"a":1}' });
    const out = JSON.parse(r.text);
    assert.equal(out.custom, id);
    assert.equal(out.fetch['x-b3-traceid'], id);
  });
  it('starts a trace as Kyma’s e2e test asks (only X-B3-Sampled)', () => traced({ 'X-B3-Sampled': '1' }));

  it('exports the server, client and custom spans by OTLP/HTTP with the incoming trace id', async () => {
    const id = '11111111111111111111111111111111';
    await traced({ traceparent: `00-${id}-2222222222222222-01` }, id);
    const deadline = Date.now() + 5000;
    const names = () => spans.filter((s) => s.body.includes(id)).flatMap((s) => JSON.parse(s.body).resourceSpans
      .flatMap((r) => r.scopeSpans.flatMap((sc) => sc.spans.map((sp) => `${sc.scope.name}:${sp.name}:${sp.kind}`))));
    while (names().length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const got = names();
    assert.equal(spans[0].url, '/v1/traces');
    assert.ok(got.includes('io.kyma-project.serverless:custom-work:1'), got.join(' '));
    assert.ok(got.some((n) => n.endsWith(':GET:2')), `a server span: ${got.join(' ')}`);
    assert.ok(got.some((n) => n.endsWith(':GET:3')), `a client span: ${got.join(' ')}`);
  });

  it('marks the server span of a failed call as an error (what Kyma’s handleError means to do)', async () => {
    const id = '55555555555555555555555555555555';
    const r = await get(srv, '/fail', { headers: { traceparent: `00-${id}-6666666666666666-01` } });
    assert.equal(r.status, 500);
    const deadline = Date.now() + 5000;
    const server = () => spans.filter((s) => s.body.includes(id)).flatMap((s) => JSON.parse(s.body).resourceSpans
      .flatMap((rs) => rs.scopeSpans.flatMap((sc) => sc.spans))).find((sp) => sp.kind === 2);
    while (!server() && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.equal(server().status.code, 2);
    assert.ok(server().attributes.some((a) => a.key === 'error' && a.value.stringValue === 'Internal server error'));
  });

  it('makes no spans for the probes', async () => {
    const before = spans.length;
    await get(srv, '/healthz');
    await get(srv, '/metrics');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(spans.length, before);
  });
});

describe('without TRACE_COLLECTOR_ENDPOINT', () => {
  it('loads no OpenTelemetry SDK, propagates nothing, and event.tracer still works (no-op spans)', async () => {
    const target = http.createServer((req, res) => res.end(JSON.stringify({ traceparent: req.headers.traceparent ?? null })));
    const url = await listen(target);
    const srv = await startServer({
      'handler.js': `module.exports = { main: async (event) => {
        const s = event.tracer.startSpan('x'); s.end();
        const t = await fetch(process.env.TARGET).then((r) => r.json());
        const loaded = Object.keys(require.cache).some((f) => f.includes('sdk-trace'));
        return { traceId: s.spanContext().traceId, recording: s.isRecording(), t, loaded };
      } }`,
    }, { TARGET: url });
    try {
      const out = JSON.parse((await get(srv, '/')).text);
      assert.deepEqual(out, { traceId: '0'.repeat(32), recording: false, t: { traceparent: null }, loaded: false });
    } finally { await srv.stop(); target.close(); }
  });
});

describe('emitCloudEvent without PUBLISHER_PROXY_ADDRESS', () => {
  it('rejects with a message that says so', async () => {
    const srv = await startServer({ 'handler.js': 'module.exports = { main: (e) => e.emitCloudEvent("t", "s", {}).then(() => "sent", (err) => err.message) }' });
    try {
      assert.equal((await get(srv, '/')).text, 'PUBLISHER_PROXY_ADDRESS is not set: cannot send CloudEvents');
    } finally { await srv.stop(); }
  });
});

describe('KYMA_INTERNAL_LOGGER_ENABLED', () => {
  it('logs each request in Apache combined format (morgan), probes included', async () => {
    const srv = await startServer({ 'handler.js': 'module.exports = { main: () => "hi" }' }, { KYMA_INTERNAL_LOGGER_ENABLED: 'true' });
    try {
      await get(srv, '/some/path?q=1', { headers: { 'User-Agent': 'probe-agent', Referer: 'http://ref/' } });
      await get(srv, '/healthz');
      await waitForOutput(srv, /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/some\/path\?q=1 HTTP\/1\.1" 200 - "http:\/\/ref\/" "probe-agent"$/m);
      await waitForOutput(srv, /"GET \/healthz HTTP\/1\.1" 200 2 /);
    } finally { await srv.stop(); }
  });
});

describe('Express API', () => {
  it('the stubbed names are exactly Express’s request and response API', () => {
    const express = require('express');
    const app = express();
    assert.deepEqual([...REQUEST_API].sort(), [...Object.getOwnPropertyNames(express.request), ...Object.getOwnPropertyNames(app.request)].sort());
    assert.deepEqual([...RESPONSE_API].sort(), [...Object.getOwnPropertyNames(express.response), ...Object.getOwnPropertyNames(app.response)].sort());
  });
});
