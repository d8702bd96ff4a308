'use strict';
// Kyma-compatible function server for the nodejs20 / nodejs22 runtimes.
// Node built-ins only. Loads `<FUNC_DIR>/<MOD_NAME>` and calls its `FUNC_HANDLER(event, context)`.
// Contract: /work/shared/design.md §3; event and context follow Kyma Serverless's Node.js runtimes.

const http = require('node:http');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { randomUUID } = require('node:crypto');

const env = process.env;
function num(name, dflt) { // a numeric env var, or dflt when unset or not a number
  const value = env[name] ? Number(env[name]) : NaN;
  return Number.isFinite(value) ? value : dflt;
}

const FUNC_DIR = env.FUNC_DIR || path.join(__dirname, 'function');
const MOD_NAME = env.MOD_NAME || 'handler';
const FUNC_HANDLER = env.FUNC_HANDLER || 'main';
const HOST = env.FUNC_HOST || undefined; // undefined: all interfaces (IPv4 and IPv6)
const PORT = num('FUNC_PORT', 8080);
const TIMEOUT_S = num('FUNC_TIMEOUT', 180);
const BODY_LIMIT_MB = num('REQ_MB_LIMIT', 1);
const BODY_LIMIT = Math.floor(BODY_LIMIT_MB * 1024 * 1024);
// The context's values, read once (each read of process.env is a call into C++).
const { FUNC_NAME, FUNC_RUNTIME, SERVICE_NAMESPACE, FUNC_MEMORY_LIMIT } = env;

let userFunction; // set once at start-up
let closing = false; // set on SIGTERM / SIGINT

const CE_ATTRS = ['ce-type', 'ce-source', 'ce-eventtypeversion', 'ce-specversion', 'ce-id', 'ce-time', 'ce-datacontenttype'];

// ---------------------------------------------------------------------------------------------
// A small subset of Express's req/res API: Kyma's handlers receive Express objects and use these.

class Request extends http.IncomingMessage {
  get(name) { return this.headers[String(name).toLowerCase()]; }
  header(name) { return this.get(name); }
  is(type) { // like Express: the matching type, or false
    const actual = mediaType(this.headers['content-type']);
    if (!actual) return false;
    if (type === actual || (type.endsWith('/*') && actual.startsWith(type.slice(0, -1)))) return actual;
    if (!type.includes('/') && (actual.endsWith('/' + type) || actual.endsWith('+' + type))) return actual;
    return false;
  }
}

const SHORT_TYPES = { json: 'application/json', text: 'text/plain', html: 'text/html', bin: 'application/octet-stream' };

class Response extends http.ServerResponse {
  fnStart = undefined; // performance.now() when a counted request came in, until it is logged
  fnPath = '';
  status(code) { this.statusCode = code; return this; }
  set(field, value) {
    if (typeof field === 'object') for (const k of Object.keys(field)) this.setHeader(k, field[k]);
    else this.setHeader(field, value);
    return this;
  }
  header(field, value) { return this.set(field, value); }
  type(t) { return this.set('Content-Type', t.includes('/') ? t : SHORT_TYPES[t] || t); }
  send(body) { sendResult(this, body); return this; }
  json(value) {
    if (!this.hasHeader('content-type')) this.setHeader('Content-Type', 'application/json; charset=utf-8');
    sendResult(this, JSON.stringify(value));
    return this;
  }
  sendStatus(code) { this.statusCode = code; sendResult(this, http.STATUS_CODES[code] || String(code)); return this; }
  // Every response ends here, ours and a handler's own: counted and logged once (cheaper than a
  // 'finish' listener per request). Probes carry no fnStart and are neither.
  end(chunk, encoding, callback) {
    const out = super.end(chunk, encoding, callback);
    if (this.fnStart !== undefined) {
      const seconds = (performance.now() - this.fnStart) / 1000;
      this.fnStart = undefined;
      observe(this.statusCode, seconds);
      log(`${timestamp()} ${this.req.method} ${this.fnPath} ${this.statusCode} ${(seconds * 1000).toFixed(1)}ms`);
    }
    return out;
  }
}

function mediaType(contentType) {
  if (!contentType) return '';
  const semi = contentType.indexOf(';');
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

const EMPTY_BODY = Buffer.alloc(0);

const isJsonType = (t) => t === 'application/json' || (t.startsWith('application/') && t.endsWith('+json'));

// Writes a handler's return value: string → text, Buffer → bytes, undefined/null → empty, else JSON.
function sendResult(res, value) {
  if (res.writableEnded) return;
  if (res.headersSent) { // the handler streamed part of the response itself
    res.end(typeof value === 'string' || value instanceof Uint8Array ? value : undefined);
    return;
  }
  let body, type;
  if (value === undefined || value === null) {
    if (closing) res.setHeader('Connection', 'close');
    res.end();
    return;
  } else if (typeof value === 'string') {
    body = value; type = 'text/plain; charset=utf-8';
  } else if (value instanceof Uint8Array) { // Buffer included
    body = value; type = 'application/octet-stream';
  } else {
    body = JSON.stringify(value); type = 'application/json; charset=utf-8';
    if (body === undefined) { res.end(); return; } // a function or symbol
  }
  if (!res.hasHeader('content-type')) res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  if (closing) res.setHeader('Connection', 'close');
  res.end(body);
}

function sendStatus(res, code, message) {
  if (res.headersSent) { res.destroy(); return; }
  res.statusCode = code;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  sendResult(res, message || http.STATUS_CODES[code]);
}

// ---------------------------------------------------------------------------------------------
// The event object (Kyma's shape) and its helpers.

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

const tooLarge = () => `Request body larger than ${BODY_LIMIT_MB} MB`;

function parseJson(text, what) {
  try { return JSON.parse(text); } catch (err) { throw new HttpError(400, `Invalid JSON ${what}: ${err.message}`); }
}

function buildEvent(req, res, raw) {
  const event = {
    extensions: { request: req, response: res },
    tracer: noopTracer,
    setResponseHeader: (key, value) => res.setHeader(key, value),
    setResponseContentType: (type) => res.setHeader('Content-Type', type),
    setResponseStatus: (status) => { res.statusCode = status; },
    emitCloudEvent,
    publishCloudEvent, // deprecated in Kyma
    buildResponseCloudEvent: (id, type, data) => buildResponseCloudEvent(event, id, type, data), // deprecated in Kyma
  };
  const h = req.headers;
  const type = mediaType(h['content-type']);
  const text = raw && raw.length ? raw.toString('utf8') : undefined;

  if (type === 'application/cloudevents+json' && text !== undefined) { // structured mode
    const ce = parseJson(text, 'CloudEvent');
    if (ce === null || typeof ce !== 'object' || Array.isArray(ce)) throw new HttpError(400, 'CloudEvent must be a JSON object');
    for (const name of CE_ATTRS) event[name] = undefined;
    for (const [name, value] of Object.entries(ce)) {
      if (name !== 'data' && name !== 'data_base64') event['ce-' + name] = value;
    }
    event.data = ce.data_base64 !== undefined ? Buffer.from(String(ce.data_base64), 'base64') : ce.data;
    req.body = ce;
  } else {
    if (h['ce-specversion'] !== undefined || (h['ce-type'] !== undefined && h['ce-source'] !== undefined)) { // binary mode
      for (const name of CE_ATTRS) event[name] = h[name];
      for (const name of Object.keys(h)) if (name.startsWith('ce-')) event[name] = h[name];
      event['ce-datacontenttype'] = h['content-type'];
    }
    if (text !== undefined) event.data = isJsonType(type) ? parseJson(text, 'body') : text;
    req.body = isJsonType(type) ? event.data : type.startsWith('text/') ? text : raw || undefined;
  }
  req.rawBody = raw || EMPTY_BODY;
  return event;
}

function dataContentType(data) {
  if (typeof data === 'string') return 'text/plain';
  if (data instanceof Uint8Array) return 'application/octet-stream';
  return 'application/json';
}

async function postCloudEvent(body) {
  const url = env.PUBLISHER_PROXY_ADDRESS;
  if (!url) throw new Error('PUBLISHER_PROXY_ADDRESS is not set: cannot publish CloudEvents');
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/cloudevents+json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`publishing CloudEvent failed: HTTP ${res.status}`);
  return res;
}

// Builds a CloudEvent and sends it (structured mode) to the eventing publisher proxy.
function emitCloudEvent(type, source, data, optionalAttributes) {
  const ce = { specversion: '1.0', id: randomUUID(), time: new Date().toISOString(), type, source, datacontenttype: dataContentType(data), ...optionalAttributes };
  if (data instanceof Uint8Array) ce.data_base64 = Buffer.from(data).toString('base64');
  else ce.data = data;
  return postCloudEvent(ce);
}

function publishCloudEvent(cloudEvent) {
  log('publishCloudEvent is deprecated: use emitCloudEvent', true);
  return postCloudEvent(cloudEvent);
}

function buildResponseCloudEvent(event, id, type, data) {
  log('buildResponseCloudEvent is deprecated: use emitCloudEvent', true);
  return {
    type, id, data,
    source: event['ce-source'],
    eventtypeversion: event['ce-eventtypeversion'],
    specversion: event['ce-specversion'],
    datacontenttype: typeof data === 'string' ? 'text/plain' : 'application/json',
  };
}

// Kyma passes an OpenTelemetry tracer; this stand-in keeps handlers that create spans working.
const noopSpan = {
  setAttribute() { return this; }, setAttributes() { return this; }, addEvent() { return this; },
  setStatus() { return this; }, updateName() { return this; }, recordException() {}, end() {},
  isRecording: () => false, spanContext: () => ({ traceId: '', spanId: '', traceFlags: 0 }),
};
const noopTracer = {
  startSpan: () => noopSpan,
  startActiveSpan: (...args) => args[args.length - 1](noopSpan),
};

// ---------------------------------------------------------------------------------------------
// Metrics (Prometheus text format) and the log.

// Log lines go to stdout in batches: a request's line is written at most LOG_DELAY_MS after its
// response (one write for all the lines of that time, not a console.log each); other messages, and
// any lines still waiting, are written at once (`now`), and at exit.
const LOG_DELAY_MS = 10;
let logPending = '';
let logTimer = null;

function log(line, now) {
  logPending += line + '\n';
  if (now || logPending.length > 65536) flushLog();
  else if (logTimer === null) logTimer = setTimeout(flushLog, LOG_DELAY_MS);
}

function flushLog() {
  if (logTimer !== null) { clearTimeout(logTimer); logTimer = null; }
  if (logPending === '') return;
  const text = logPending;
  logPending = '';
  process.stdout.write(text); // synchronous for files and pipes on Linux
}

let isoSecond = -1; // the log lines' timestamps: the ISO date and time to the second, kept for a second
let isoPrefix = '';
function timestamp() {
  const now = Date.now();
  const ms = now % 1000;
  if (now - ms !== isoSecond) { isoSecond = now - ms; isoPrefix = new Date(isoSecond).toISOString().slice(0, 20); }
  return isoPrefix + (ms < 10 ? '00' : ms < 100 ? '0' : '') + ms + 'Z';
}

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const byCode = new Map(); // status code → { count, sum, buckets (per bucket, not cumulative; +Inf last) }
let failures = 0;

function observe(code, seconds) {
  let m = byCode.get(code);
  if (m === undefined) byCode.set(code, (m = { count: 0, sum: 0, buckets: new Array(BUCKETS.length + 1).fill(0) }));
  m.count++;
  m.sum += seconds;
  let i = 0;
  while (i < BUCKETS.length && seconds > BUCKETS[i]) i++;
  m.buckets[i]++;
}

function renderMetrics() {
  const codes = [...byCode.keys()].sort();
  const lines = [
    '# HELP function_calls_total Number of requests to the function, by HTTP status code.',
    '# TYPE function_calls_total counter',
    ...codes.map((c) => `function_calls_total{code="${c}"} ${byCode.get(c).count}`),
    '# HELP function_failures_total Number of handler invocations that threw or timed out.',
    '# TYPE function_failures_total counter',
    `function_failures_total ${failures}`,
    '# HELP function_duration_seconds Duration of requests to the function, by HTTP status code.',
    '# TYPE function_duration_seconds histogram',
  ];
  for (const c of codes) {
    const m = byCode.get(c);
    let cumulative = 0;
    BUCKETS.forEach((le, i) => {
      cumulative += m.buckets[i];
      lines.push(`function_duration_seconds_bucket{code="${c}",le="${le}"} ${cumulative}`);
    });
    lines.push(`function_duration_seconds_bucket{code="${c}",le="+Inf"} ${m.count}`);
    lines.push(`function_duration_seconds_sum{code="${c}"} ${m.sum}`);
    lines.push(`function_duration_seconds_count{code="${c}"} ${m.count}`);
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// The server. The path of a request is plain callbacks (no async function, no closure per request
// for a synchronous handler): its cost is the wrapper's cost on every call.

function onRequest(req, res) {
  const url = req.url;
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);

  if (req.method === 'GET' || req.method === 'HEAD') { // probes: neither logged nor counted
    if (pathname === '/healthz') return sendResult(res, 'OK');
    if (pathname === '/metrics') {
      res.setHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
      return sendResult(res, renderMetrics());
    }
    if (pathname === '/favicon.ico') { res.statusCode = 204; return res.end(); }
  }

  res.fnStart = performance.now();
  res.fnPath = pathname;

  res.setHeader('Access-Control-Allow-Origin', '*'); // as Kyma does
  const h = req.headers;
  if (req.method === 'OPTIONS' && h['access-control-request-method']) { // CORS preflight
    res.setHeader('Access-Control-Allow-Methods', h['access-control-request-method']);
    if (h['access-control-request-headers']) res.setHeader('Access-Control-Allow-Headers', h['access-control-request-headers']);
    return res.end();
  }

  if (h['content-length'] === undefined && h['transfer-encoding'] === undefined) return invoke(req, res, pathname, q, null);
  if (Number(h['content-length']) > BODY_LIMIT) return sendStatus(res, 413, tooLarge());
  readBody(req, res, pathname, q);
}

function readBody(req, res, pathname, q) {
  const chunks = [];
  let size = 0;
  const onData = (chunk) => {
    size += chunk.length;
    if (size > BODY_LIMIT) {
      req.removeListener('data', onData); // node discards the rest after the response
      req.removeListener('end', onEnd);
      sendStatus(res, 413, tooLarge());
    } else chunks.push(chunk);
  };
  const onEnd = () => {
    try {
      invoke(req, res, pathname, q, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    } catch (err) { internalError(res, err); }
  };
  req.on('data', onData);
  req.on('end', onEnd);
  req.on('error', () => {}); // the client went away: no response to send
}

function invoke(req, res, pathname, q, raw) {
  let event;
  try {
    req.path = pathname;
    req.query = q < 0 ? {} : Object.fromEntries(new URLSearchParams(req.url.slice(q + 1)));
    event = buildEvent(req, res, raw);
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    return sendStatus(res, err.status, err.message);
  }

  const context = { // a fresh one per call: a handler may change its own
    'function-name': FUNC_NAME,
    runtime: FUNC_RUNTIME,
    namespace: SERVICE_NAMESPACE,
    timeout: TIMEOUT_S,
    'memory-limit': FUNC_MEMORY_LIMIT,
    'body-size-limit': BODY_LIMIT_MB,
  };

  let out;
  try {
    out = userFunction(event, context);
  } catch (err) {
    return failed(req, res, err);
  }
  if (out && typeof out.then === 'function') awaitResult(req, res, out);
  else respond(req, res, out);
}

function respond(req, res, out) {
  try {
    sendResult(res, out);
  } catch (err) { // e.g. a result JSON cannot represent
    failed(req, res, err);
  }
}

// An async handler's result, or 408 after FUNC_TIMEOUT (node keeps timers of one duration in one
// list: adding and clearing one is cheap).
function awaitResult(req, res, promise) {
  let settled = false;
  const timer = setTimeout(() => {
    settled = true;
    failures++;
    log(`function did not finish within ${TIMEOUT_S}s: ${req.method} ${res.fnPath}`, true);
    sendStatus(res, 408, `Function did not finish within ${TIMEOUT_S}s`);
  }, TIMEOUT_S * 1000);
  Promise.resolve(promise).then((out) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    respond(req, res, out);
  }, (err) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    failed(req, res, err);
  }).catch((err) => internalError(res, err));
}

function failed(req, res, err) {
  failures++;
  log(`function failed: ${req.method} ${res.fnPath}: ${(err && err.stack) || err}`, true);
  // Like Kyma: a thrown string is the response body; anything else stays private.
  sendStatus(res, 500, typeof err === 'string' ? err : 'Internal server error');
}

function internalError(res, err) {
  log(`internal error: ${(err && err.stack) || err}`, true);
  sendStatus(res, 500, 'Internal server error');
}

async function loadFunction() {
  const base = path.join(FUNC_DIR, MOD_NAME);
  let file;
  try { file = require.resolve(base); } catch { file = base + '.mjs'; }
  const mod = await import(pathToFileURL(file).href); // CommonJS and ES modules alike
  const fn = mod[FUNC_HANDLER] ?? (mod.default && mod.default[FUNC_HANDLER]);
  if (typeof fn !== 'function') throw new Error(`${file} does not export a function named '${FUNC_HANDLER}'`);
  return fn;
}

// Like Kyma: errors from callbacks the handler left running are logged, not fatal.
process.on('uncaughtException', (err) => log(`uncaught exception: ${(err && err.stack) || err}`, true));
process.on('unhandledRejection', (err) => log(`unhandled rejection: ${(err && err.stack) || err}`, true));
process.on('exit', flushLog);

async function main() {
  const loadStart = process.hrtime.bigint();
  try {
    userFunction = await loadFunction();
  } catch (err) {
    log(`cannot load the function from ${FUNC_DIR}: ${(err && err.stack) || err}`, true);
    process.exit(1);
  }
  const server = http.createServer({ IncomingMessage: Request, ServerResponse: Response }, (req, res) => {
    try { onRequest(req, res); } catch (err) { internalError(res, err); }
  });

  server.on('checkContinue', (req, res) => { // `Expect: 100-continue`: refuse too large bodies before they are sent
    if (Number(req.headers['content-length']) > BODY_LIMIT) res.setHeader('Connection', 'close');
    else res.writeContinue();
    server.emit('request', req, res);
  });

  const shutdown = (signal) => {
    if (closing) return;
    closing = true;
    log(`${signal} received: finishing in-flight requests`, true);
    server.close(() => { log('server stopped', true); process.exit(0); });
    server.closeIdleConnections();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);

  server.listen(PORT, HOST, () => {
    const addr = server.address();
    const ms = (Number(process.hrtime.bigint() - loadStart) / 1e6).toFixed(1);
    log(`function ${MOD_NAME}.${FUNC_HANDLER} loaded in ${ms}ms; listening on ${addr.address}:${addr.port}`, true);
  });
}

main();
