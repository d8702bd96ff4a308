'use strict';
// Kyma's own e2e Functions and documented samples (tests/fixtures/kyma/node, see its README) run on
// our server on this host, with the stand-ins their expect.json asks for, and must answer as Kyma's
// assertions expect. (The Rust tests run the same fixtures built by fnbuild, in Docker.)

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { startServer, get } = require('./support');

const ROOT = path.join(__dirname, '..', '..', '..', 'tests', 'fixtures', 'kyma', 'node');
const RUNTIME = `nodejs${process.versions.node.split('.')[0]}`;
const KINDS = { internal: 1, server: 2, client: 3 };
const FORMATS = {
  rfc3339: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/,
  uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i,
};

const files = (name) => Object.fromEntries(['handler.js', 'package.json'].map((f) => [f, fs.readFileSync(path.join(ROOT, name, f), 'utf8')]));
const listen = (server) => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`)));
const fill = (text, vars) => text.replace(/\$\{(\w+)\}/g, (m, v) => (v in vars ? vars[v] : m));

async function startStandIns(names, vars, stop) {
  const otlpBodies = [];
  for (const name of names || []) {
    if (name === 'publisher-proxy-mock') {
      const srv = await startServer(files(name), { FUNC_NAME: 'eventing-publisher-proxy' });
      stop.push(() => srv.stop());
      vars.PUBLISHER_PROXY = srv.url;
      vars.servers[name] = srv;
    } else if (name === 'trace-target') {
      const target = http.createServer((req, res) => {
        res.setHeader('Content-Type', 'application/json');
        const h = req.headers;
        res.end(JSON.stringify({ path: req.url, traceparent: h.traceparent, 'x-b3-traceid': h['x-b3-traceid'], 'x-b3-spanid': h['x-b3-spanid'], 'x-b3-sampled': h['x-b3-sampled'] }));
      });
      vars.TRACE_TARGET = await listen(target);
      stop.push(() => target.close());
    } else if (name === 'otlp') {
      const otlp = http.createServer((req, res) => {
        let body = '';
        req.on('data', (d) => { body += d; });
        req.on('end', () => { otlpBodies.push(body); res.end('{}'); });
      });
      vars.OTLP = await listen(otlp);
      stop.push(() => otlp.close());
    }
  }
  return otlpBodies;
}

function spansOf(bodies, traceId) {
  return bodies.flatMap((b) => JSON.parse(b).resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)))
    .filter((s) => s.traceId === traceId);
}

async function check(step, r, srv, otlpBodies) {
  const e = step.expect;
  if (e.status !== undefined) assert.equal(r.status, e.status, r.text);
  if (e.body !== undefined) assert.equal(r.text, e.body);
  for (const [name, value] of Object.entries(e.headers || {})) assert.equal(r.headers.get(name), value, name);
  const json = e.json || e.jsonHas || e.jsonContains || e.jsonNonEmpty || e.jsonFormat ? JSON.parse(r.text) : undefined;
  if (e.json) assert.deepEqual(json, e.json);
  for (const [k, v] of Object.entries(e.jsonHas || {})) assert.deepEqual(json[k], v, k);
  for (const [k, v] of Object.entries(e.jsonContains || {})) assert.ok(typeof json[k] === 'string' && json[k].includes(v), `${k}: ${json[k]}`);
  for (const k of e.jsonNonEmpty || []) assert.ok(typeof json[k] === 'string' && json[k].trim() !== '', `${k}: ${json[k]}`);
  for (const [k, f] of Object.entries(e.jsonFormat || {})) assert.match(String(json[k]), FORMATS[f], k);
  if (e.log) {
    const deadline = Date.now() + 3000;
    while (!srv.out.includes(e.log) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    assert.ok(srv.out.includes(e.log), srv.out);
  }
  if (e.spans) {
    const deadline = Date.now() + 5000;
    const ok = () => {
      const spans = spansOf(otlpBodies, e.spans.traceId);
      return (e.spans.names || []).every((n) => spans.some((s) => s.name === n))
        && (e.spans.kinds || []).every((k) => spans.some((s) => s.kind === KINDS[k]));
    };
    while (!ok() && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.ok(ok(), JSON.stringify(spansOf(otlpBodies, e.spans.traceId).map((s) => [s.name, s.kind])));
  }
}

for (const name of fs.readdirSync(ROOT).filter((n) => fs.existsSync(path.join(ROOT, n, 'expect.json'))).sort()) {
  const spec = JSON.parse(fs.readFileSync(path.join(ROOT, name, 'expect.json'), 'utf8'));
  describe(`Kyma fixture ${name}`, { skip: spec.needsInstall && 'needs its dependencies installed' }, () => {
    const stop = [];
    const vars = { RUNTIME, servers: {} };
    let srv, otlpBodies;
    before(async () => {
      otlpBodies = await startStandIns(spec.standIns, vars, stop);
      const env = Object.fromEntries(Object.entries(spec.env || {}).map(([k, v]) => [k, fill(v, vars)]));
      srv = await startServer(files(name), { FUNC_NAME: name, FUNC_RUNTIME: RUNTIME, ...env });
      stop.push(() => srv.stop());
    });
    after(async () => { for (const s of stop.reverse()) await s(); });

    spec.steps.forEach((raw, i) => {
      it(`step ${i + 1}${raw.name ? `: ${raw.name}` : ''}: ${raw.request.method} ${raw.request.path}`, async () => {
        const step = JSON.parse(fill(JSON.stringify(raw), vars));
        const target = step.target ? vars.servers[step.target] : srv;
        const send = () => get(target, step.request.path, { method: step.request.method, headers: step.request.headers, body: step.request.body });
        for (let attempt = 1; ; attempt++) {
          try {
            return await check(step, await send(), srv, otlpBodies);
          } catch (err) {
            if (attempt >= (step.retry || 1)) throw err;
            await new Promise((res) => setTimeout(res, 500));
          }
        }
      });
    });
  });
}
