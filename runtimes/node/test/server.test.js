'use strict';
// Tests for runtimes/node/server/server.js: each starts the server as a subprocess on 127.0.0.1 (port 0,
// read back from its start-up line) with a temporary function directory, and talks HTTP to it.
// Run: node --test runtimes/node/test/server.test.js

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');

const { startServer, waitForOutput, get } = require('./support');

// A handler exercising the contract; `?mode=` picks the behaviour.
const KITCHEN_SINK = `
module.exports = {
  main: function (event, context) {
    const req = event.extensions.request;
    switch (req.query.mode) {
      case 'echo': {
        const ce = Object.fromEntries(Object.entries(event).filter(([k]) => k.startsWith('ce-')));
        return { data: event.data, ce, context, method: req.method, path: req.path, query: req.query,
                 header: req.get('X-Test'), hasResponse: typeof event.extensions.response.setHeader === 'function' };
      }
      case 'text': return 'plain text';
      case 'buffer': return Buffer.from([0, 1, 2]);
      case 'none': return undefined;
      case 'promise': return Promise.resolve({ async: true });
      case 'throw': throw new Error('secret-failure-detail');
      case 'reject': return Promise.reject(new Error('secret-rejection-detail'));
      case 'sleep':
        console.log('sleep-start');
        return new Promise((resolve) => setTimeout(resolve, Number(req.query.ms), 'slept'));
      case 'express': // Kyma's documented custom-status example
        event.extensions.response.status(400);
        return;
      case 'sdk':
        event.setResponseStatus(201);
        event.setResponseHeader('X-Custom', 'yes');
        event.setResponseContentType('application/xml');
        return '<ok/>';
      case 'tracer':
        return event.tracer.startActiveSpan('work', (span) => { span.setAttribute('a', 1); span.end(); return 'traced'; });
      default: return 'default';
    }
  }
};
`;

const HELLO_WORLD = `module.exports = { main: function (event, context) { return "Hello World!"; } }`;

const metricValue = (text, name) => Number((text.match(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm')) || [])[1] || 0);

describe('kitchen-sink handler', () => {
  let srv;
  before(async () => {
    srv = await startServer({ 'handler.js': KITCHEN_SINK }, {
      FUNC_NAME: 'sink', FUNC_RUNTIME: 'nodejs20', SERVICE_NAMESPACE: 'tests', FUNC_TIMEOUT: '7',
    });
  });
  after(() => srv.stop());

  it('answers GET with the handler output as text', async () => {
    const r = await get(srv, '/?mode=text');
    assert.equal(r.status, 200);
    assert.equal(r.type, '', 'Kyma sends a returned string without a Content-Type');
    assert.equal(r.text, 'plain text');
  });

  it('passes a JSON body as parsed event.data and returns objects as JSON', async () => {
    const r = await get(srv, '/some/path?mode=echo&x=1', {
      method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Test': 'hdr' }, body: JSON.stringify({ a: [1, 2], b: 'c' }),
    });
    assert.equal(r.status, 200);
    assert.match(r.type, /^application\/json/);
    const out = JSON.parse(r.text);
    assert.deepEqual(out.data, { a: [1, 2], b: 'c' });
    assert.equal(out.method, 'POST');
    assert.equal(out.path, '/some/path');
    assert.deepEqual(out.query, { mode: 'echo', x: '1' });
    assert.equal(out.header, 'hdr');
    assert.equal(out.hasResponse, true);
    assert.deepEqual(out.ce, {}, 'no ce-* attributes on a plain request');
  });

  it('passes other bodies as a string and GET without data', async () => {
    const text = JSON.parse((await get(srv, '/?mode=echo', { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'héllo' })).text);
    assert.equal(text.data, 'héllo');
    const none = JSON.parse((await get(srv, '/?mode=echo')).text);
    assert.equal(none.data, undefined);
  });

  it('rejects a malformed JSON body with 400', async () => {
    const r = await get(srv, '/?mode=echo', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{nope' });
    assert.equal(r.status, 400);
  });

  it('fills context from the environment', async () => {
    const { context } = JSON.parse((await get(srv, '/?mode=echo')).text);
    assert.deepEqual(
      { name: context['function-name'], runtime: context.runtime, namespace: context.namespace, timeout: context.timeout },
      { name: 'sink', runtime: 'nodejs20', namespace: 'tests', timeout: 7 });
  });

  it('exposes binary-mode CloudEvent headers as ce-* attributes', async () => {
    const r = await get(srv, '/?mode=echo', {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json', 'ce-type': 'order.created', 'ce-source': '/shop', 'ce-specversion': '1.0',
        'ce-id': 'id-1', 'ce-eventtypeversion': 'v1', 'ce-time': '2026-01-01T00:00:00Z', 'ce-myext': 'x', // dropped, as Kyma
      },
      body: JSON.stringify({ order: 7 }),
    });
    const out = JSON.parse(r.text);
    assert.deepEqual(out.data, { order: 7 });
    assert.deepEqual(out.ce, {
      'ce-type': 'order.created', 'ce-source': '/shop', 'ce-specversion': '1.0', 'ce-id': 'id-1', 'ce-eventtypeversion': 'v1',
      'ce-time': '2026-01-01T00:00:00.000Z', 'ce-datacontenttype': 'application/json',
    });
  });

  it('exposes structured-mode CloudEvent attributes and data', async () => {
    const envelope = {
      specversion: '1.0', type: 'order.created', source: '/shop', id: 'id-2', eventtypeversion: 'v1',
      datacontenttype: 'application/json', data: { order: 8 },
    };
    const r = await get(srv, '/?mode=echo', {
      method: 'POST', headers: { 'Content-Type': 'application/cloudevents+json; charset=utf-8' }, body: JSON.stringify(envelope),
    });
    const out = JSON.parse(r.text);
    assert.deepEqual(out.data, { order: 8 });
    assert.match(out.ce['ce-time'], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'the SDK gives an event without a time the current one');
    delete out.ce['ce-time'];
    assert.deepEqual(out.ce, {
      'ce-specversion': '1.0', 'ce-type': 'order.created', 'ce-source': '/shop', 'ce-id': 'id-2', 'ce-eventtypeversion': 'v1',
      'ce-datacontenttype': 'application/json',
    });
  });

  it('maps return values to content types', async () => {
    const buf = await get(srv, '/?mode=buffer'); // as Kyma: res.json(buffer)
    assert.match(buf.type, /^application\/json/);
    assert.deepEqual(JSON.parse(buf.text), { type: 'Buffer', data: [0, 1, 2] });
    const none = await get(srv, '/?mode=none');
    assert.equal(none.status, 200);
    assert.equal(none.body.length, 0);
    const promise = await get(srv, '/?mode=promise');
    assert.match(promise.type, /^application\/json/);
    assert.deepEqual(JSON.parse(promise.text), { async: true });
  });

  it('answers 500 for a throwing or rejecting handler, logging the message but not sending it', async () => {
    for (const mode of ['throw', 'reject']) {
      const r = await get(srv, `/?mode=${mode}`);
      assert.equal(r.status, 500);
      assert.doesNotMatch(r.text, /secret|at .*\.js|Error/);
    }
    await waitForOutput(srv, /secret-failure-detail/);
    await waitForOutput(srv, /secret-rejection-detail/);
  });

  it('supports Kyma’s response helpers and Express-style res.status()', async () => {
    const express = await get(srv, '/?mode=express');
    assert.equal(express.status, 400);
    const sdk = await get(srv, '/?mode=sdk');
    assert.equal(sdk.status, 201);
    assert.equal(sdk.headers.get('x-custom'), 'yes');
    assert.equal(sdk.type, 'application/xml');
    assert.equal(sdk.text, '<ok/>');
    assert.equal((await get(srv, '/?mode=tracer')).text, 'traced');
  });

  it('serves /healthz and counts requests in /metrics', async () => {
    const h = await get(srv, '/healthz');
    assert.equal(h.status, 200);
    assert.equal(h.text, 'OK');
    const before = metricValue((await get(srv, '/metrics')).text, 'function_calls_total{otel_scope_name="sink"}');
    for (let i = 0; i < 3; i++) await get(srv, '/?mode=text');
    const m = await get(srv, '/metrics');
    assert.equal(m.status, 200);
    assert.equal(metricValue(m.text, 'function_calls_total{otel_scope_name="sink"}'), before + 3);
    assert.ok(metricValue(m.text, 'function_failures_total{otel_scope_name="sink"}') >= 2);
    assert.match(m.text, /^# TYPE function_duration_miliseconds histogram$/m);
    assert.match(m.text, /^function_duration_miliseconds_bucket\{otel_scope_name="sink",le="\+Inf"\} \d+$/m);
  });

  it('logs no line per request unless KYMA_INTERNAL_LOGGER_ENABLED is set', async () => {
    await get(srv, '/unlogged/path?mode=text');
    await new Promise((r) => setTimeout(r, 100));
    assert.doesNotMatch(srv.out, /unlogged/);
  });

  it('keeps connections alive between requests', async () => {
    const sock = net.connect(Number(new URL(srv.url).port), '127.0.0.1');
    try {
      let received = '';
      sock.setEncoding('utf8').on('data', (d) => { received += d; });
      for (let i = 1; i <= 3; i++) {
        sock.write('GET /?mode=text HTTP/1.1\r\nHost: t\r\n\r\n');
        const deadline = Date.now() + 5000;
        while ((received.match(/plain text/g) || []).length < i && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal((received.match(/HTTP\/1\.1 200 /g) || []).length, 3, received);
      assert.doesNotMatch(received, /connection: close/i);
    } finally { sock.destroy(); }
  });
});

describe('limits', () => {
  let srv;
  before(async () => { srv = await startServer({ 'handler.js': KITCHEN_SINK }, { FUNC_TIMEOUT: '1', REQ_MB_LIMIT: '1' }); });
  after(() => srv.stop());

  it('answers 408 when the handler outlives FUNC_TIMEOUT', async () => {
    const t0 = Date.now();
    const r = await get(srv, '/?mode=sleep&ms=3000');
    assert.equal(r.status, 408);
    assert.ok(Date.now() - t0 < 2500, 'answered after about a second');
  });

  it('counts and logs a timed-out request once, also after its handler finishes', async () => {
    const before = (await get(srv, '/metrics')).text;
    assert.equal((await get(srv, '/timeout/once?mode=sleep&ms=1500')).status, 408);
    await new Promise((r) => setTimeout(r, 1000)); // the handler's promise resolves meanwhile
    assert.equal((await get(srv, '/?mode=text')).status, 200, 'the server carries on');
    const after = (await get(srv, '/metrics')).text;
    const delta = (name) => metricValue(after, name) - metricValue(before, name);
    assert.equal(delta('function_calls_total{otel_scope_name=""}'), 2);
    assert.equal(delta('function_duration_miliseconds_count{otel_scope_name=""}'), 2, 'the late result is not sent or timed');
    assert.equal(delta('function_failures_total{otel_scope_name=""}'), 1);
    await waitForOutput(srv, /did not finish within 1s: GET \/timeout\/once/);
    assert.equal((srv.out.match(/timeout\/once/g) || []).length, 1, srv.out);
  });

  it('answers 413 for a body over REQ_MB_LIMIT, and accepts one under it', async () => {
    const big = await get(srv, '/?mode=none', { method: 'POST', body: Buffer.alloc(1024 * 1024 + 1, 97) });
    assert.equal(big.status, 413);
    const ok = await get(srv, '/?mode=none', { method: 'POST', body: Buffer.alloc(1024 * 1024, 97) });
    assert.equal(ok.status, 200);
  });
});

describe('Kyma hello-world and loading', () => {
  it('runs Kyma’s hello-world example unchanged', async () => {
    const srv = await startServer({ 'handler.js': HELLO_WORLD });
    try {
      const r = await get(srv, '/');
      assert.equal(r.status, 200);
      assert.equal(r.text, 'Hello World!');
      assert.equal(r.type, '');
    } finally { await srv.stop(); }
  });

  it('honours MOD_NAME and FUNC_HANDLER, including ES modules with async handlers', async () => {
    const srv = await startServer({ 'fn.mjs': 'export async function entry(event) { return { esm: true }; }' },
      { MOD_NAME: 'fn.mjs', FUNC_HANDLER: 'entry' });
    try {
      assert.deepEqual(JSON.parse((await get(srv, '/')).text), { esm: true });
    } finally { await srv.stop(); }
  });

  it('exits 1 with a message when the handler cannot be loaded', async () => {
    await assert.rejects(startServer({ 'handler.js': 'module.exports = { notMain() {} }' }),
      /exit code 1\)[^]*does not export a function named 'main'/);
  });
});

describe('shutdown', () => {
  it('on SIGTERM finishes the in-flight request, closes idle connections and exits 0', async () => {
    const srv = await startServer({ 'handler.js': KITCHEN_SINK });
    try {
      const idle = net.connect(Number(new URL(srv.url).port), '127.0.0.1'); // an idle keep-alive connection
      idle.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
      await new Promise((resolve) => idle.once('data', resolve));
      const idleClosed = new Promise((resolve) => idle.on('close', resolve));

      const slow = get(srv, '/?mode=sleep&ms=1500');
      await waitForOutput(srv, /sleep-start/);
      srv.child.kill('SIGTERM');
      await idleClosed;
      await assert.rejects(fetch(srv.url + '/healthz'), 'no new connections while draining');
      const r = await slow;
      assert.equal(r.status, 200);
      assert.equal(r.text, 'slept');
      assert.deepEqual(await srv.exited, { code: 0, signal: null });
      assert.match(srv.out, /SIGTERM received[^]*server stopped/);
    } finally { await srv.stop(); }
  });
});
