'use strict';
// Kyma-compatible function server for the nodejs20 / nodejs22 / nodejs24 runtimes: answers as Kyma's
// components/runtimes/nodejs24/server.mjs does (checked side by side: test/kyma/), with its libraries
// (runtimes/node/libraries, /usr/src/app/node_modules in the image). Loads `<FUNC_DIR>/<MOD_NAME>`
// (or HANDLER_PATH) and calls its `FUNC_HANDLER(event, context, callback)`.
//
// Kyma runs every request through Express's router and body-parser; here a request goes straight to
// the handler with Express 5's own req/res (lib/express.js), and Express, body-parser, the CloudEvents
// SDK and axios are required only when a request needs them: start-up and the plain call stay as fast
// as node:http. Where Kyma's answer is a plain bug, the answer here is the one Kyma's code meant
// (see the notes at sendResponse and handleError).

const env = process.env;
function num(name, dflt) { // a numeric env var, or dflt when unset or not a number
  const value = env[name] ? Number(env[name]) : NaN;
  return Number.isFinite(value) ? value : dflt;
}
const { FUNC_NAME, FUNC_RUNTIME, SERVICE_NAMESPACE } = env;

// Tracing first: its instrumentation patches node:http when it is required.
let tracing = null;
if (env.TRACE_COLLECTOR_ENDPOINT) {
  try {
    tracing = require('./lib/tracing');
    tracing.setup(FUNC_NAME, env.TRACE_COLLECTOR_ENDPOINT);
  } catch (err) {
    console.error(`tracing disabled: cannot set up OpenTelemetry: ${(err && err.stack) || err}`);
  }
}
if (tracing === null) tracing = require('./lib/tracing');

const http = require('node:http');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { Request, Response, load: loadExpress, preload: preloadExpress } = require('./lib/express');
const { hasBody, parseBody } = require('./lib/body');
const { buildEvent } = require('./lib/event');
const metrics = require('./lib/metrics');

const FUNC_DIR = env.FUNC_DIR || path.join(__dirname, 'function');
const MOD_NAME = env.MOD_NAME || 'handler';
const FUNC_HANDLER = env.FUNC_HANDLER || 'main';
const HOST = env.FUNC_HOST || undefined; // undefined: all interfaces (IPv4 and IPv6)
const PORT = num('FUNC_PORT', 8080);
const TIMEOUT_S = num('FUNC_TIMEOUT', 180);
const BODY_LIMIT_MB = num('REQ_MB_LIMIT', 1);
const BODY_LIMIT = Math.floor(BODY_LIMIT_MB * 1024 * 1024);
// Kyma's request log (morgan "combined") when KYMA_INTERNAL_LOGGER_ENABLED is set; "false" and "0" are off.
const LOGGER = env.KYMA_INTERNAL_LOGGER_ENABLED && !/^(false|0)$/i.test(env.KYMA_INTERNAL_LOGGER_ENABLED)
  ? require('morgan')('combined') : null;

let userFunction; // set once at start-up
let closing = false; // set on SIGTERM / SIGINT

const log = (line) => process.stdout.write(line + '\n');
const noop = () => {};

// Response.end: every response ends here (ours, Express's, a handler's own); a function call's is timed.
const nodeEnd = http.ServerResponse.prototype.end;
Response.prototype.end = function end(chunk, encoding, callback) {
  if (this.fnStart !== undefined) {
    metrics.observe(performance.now() - this.fnStart);
    this.fnStart = undefined;
  }
  if (closing && !this.headersSent) this.setHeader('Connection', 'close');
  return nodeEnd.call(this, chunk, encoding, callback);
};
Response.prototype.fnStart = undefined;

// Our own answers (probes, errors): plain text, not counted.
function sendText(res, status, text, type = 'text/plain; charset=utf-8') {
  if (res.headersSent) { res.destroy(); return; }
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

function onRequest(req, res) {
  if (LOGGER !== null) LOGGER(req, res, noop);
  const url = req.url;
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);

  if (req.method === 'GET' || req.method === 'HEAD') { // Kyma's own routes
    if (pathname === '/healthz') { // as Express's res.send('OK')
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.setHeader('ETag', 'W/"2-nOO9QiTIwXgNtWtBJezz8kv3SLc"');
      res.setHeader('Content-Length', 2);
      return res.end('OK');
    }
    if (pathname === '/metrics') return sendText(res, 200, metrics.render(FUNC_NAME), 'text/plain');
    if (pathname === '/favicon.ico') { res.statusCode = 204; return res.end(); } // Kyma's never answers
  }

  if (req.method === 'OPTIONS') { // CORS preflight, any method and header allowed (as Kyma)
    res.setHeader('Access-Control-Allow-Origin', '*');
    const h = req.headers;
    if (h['access-control-request-method']) res.setHeader('Access-Control-Allow-Methods', h['access-control-request-method']);
    if (h['access-control-request-headers']) res.setHeader('Access-Control-Allow-Headers', h['access-control-request-headers']);
    return res.end();
  }

  if (!hasBody(req)) return invoke(req, res);
  if (Number(req.headers['content-length']) > BODY_LIMIT) return sendText(res, 413, tooLarge());
  parseBody(req, res, BODY_LIMIT_MB, (err) => {
    if (!err) return invoke(req, res);
    const status = err.status || err.statusCode || 400;
    // (JSON.parse's own message differs between Node versions)
    const text = status === 413 ? tooLarge() : err.type === 'entity.parse.failed' ? 'Invalid JSON in the request body' : `Invalid request body: ${err.message}`;
    sendText(res, status, text);
  });
}

const tooLarge = () => `Request body larger than ${BODY_LIMIT_MB} MB`;

function invoke(req, res) {
  metrics.called();
  res.fnStart = performance.now();
  req.res = res;
  res.setHeader('Access-Control-Allow-Origin', '*');

  let event;
  try {
    event = buildEvent(req, res, tracing.tracer());
  } catch (err) { // the CloudEvents SDK rejected the event: Kyma answers 500 too
    log(`invalid CloudEvent: ${req.method} ${req.url}: ${(err && err.message) || err}`);
    return sendText(res, 500, `Invalid CloudEvent: ${(err && err.message) || err}`);
  }
  const context = { // a fresh one per call: a handler may change its own
    'function-name': FUNC_NAME,
    runtime: FUNC_RUNTIME,
    namespace: SERVICE_NAMESPACE,
    timeout: TIMEOUT_S,
    'body-size-limit': BODY_LIMIT_MB,
  };
  const span = tracing.activeSpan();
  const sendResponse = (body, status, headers) => sendResult(res, body, status, headers);

  let out;
  try {
    out = userFunction(event, context, sendResponse);
    if (out && typeof out.then === 'function') return awaitResult(req, res, out, span);
    sendResult(res, out);
  } catch (err) {
    handleError(req, res, err, span);
  }
}

// Kyma's sendResponse, the handler's third argument and what return values go through: headers with
// res.set, a truthy body with the status; an object (Buffers too) as JSON, anything else with res.end
// (a string: no Content-Type; a number or true: res.end throws, so 500); no body: the status's text
// (res.sendStatus) or an empty 200. Express is loaded for res.set / json / sendStatus.
function sendResult(res, body, status, headers) {
  if (res.writableEnded) return;
  if (headers) {
    loadExpress();
    for (const name of Object.keys(headers)) res.set(name, headers[name]);
  }
  if (body) {
    if (status) res.statusCode = status;
    if (typeof body === 'object') { loadExpress(); res.json(body); } else res.end(body);
  } else if (status) {
    loadExpress();
    res.sendStatus(status);
  } else {
    res.end();
  }
}

// A promise's result, or 408 after FUNC_TIMEOUT as Kyma's res.setTimeout gives (node keeps timers of
// one duration in one list: adding and clearing one is cheap).
function awaitResult(req, res, promise, span) {
  let settled = false;
  const timer = setTimeout(() => {
    settled = true;
    if (res.writableEnded) return; // answered through the callback
    metrics.failed();
    log(`function did not finish within ${TIMEOUT_S}s: ${req.method} ${req.url}`);
    loadExpress();
    res.sendStatus(408);
  }, TIMEOUT_S * 1000);
  promise.then((out) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    try { sendResult(res, out); } catch (err) { handleError(req, res, err, span); }
  }, (err) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    handleError(req, res, err, span);
  });
}

// What Kyma's handleError means to do: 500, a thrown string as the body, "Internal server error" for
// anything else (details only in the log), the server span marked as failed. (Kyma's own crashes
// when no span is active, so it answers Express's HTML error page, and a rejected promise never.)
function handleError(req, res, err, span) {
  metrics.failed();
  console.error(`function failed: ${req.method} ${req.url}: ${(err && err.stack) || err}`);
  const text = typeof err === 'string' ? err : 'Internal server error';
  if (span) {
    span.setStatus({ code: 2, message: text }); // SpanStatusCode.ERROR
    span.setAttribute('error', text);
  }
  if (res.writableEnded) return;
  if (res.headersSent) { res.end(); return; }
  res.statusCode = 500;
  res.end(text);
}

async function loadFunction() {
  let file;
  if (env.HANDLER_PATH) { // Kyma's variable, relative to the server's directory as Kyma's import() is
    file = path.resolve(__dirname, env.HANDLER_PATH);
  } else {
    const base = path.join(FUNC_DIR, MOD_NAME);
    try { file = require.resolve(base); } catch { file = base + '.mjs'; }
  }
  const mod = await import(pathToFileURL(file).href); // CommonJS and ES modules alike
  const fn = mod[FUNC_HANDLER] ?? (mod.default && mod.default[FUNC_HANDLER]);
  if (typeof fn !== 'function') throw new Error(`${file} does not export a function named '${FUNC_HANDLER}'`);
  return fn;
}

// As Kyma: errors from callbacks the handler left running are logged, not fatal.
process.on('uncaughtException', (err) => console.error(`uncaught exception: ${(err && err.stack) || err}`));
process.on('unhandledRejection', (err) => console.error(`unhandled rejection: ${(err && err.stack) || err}`));

const PRELOAD_DELAY_MS = 300;
function preload() {
  try {
    preloadExpress();
    require('body-parser');
  } catch (err) {
    console.error(`cannot load Express: ${(err && err.stack) || err}`);
  }
}

async function main() {
  const loadStart = process.hrtime.bigint();
  try {
    userFunction = await loadFunction();
  } catch (err) {
    console.error(`cannot load the function from ${env.HANDLER_PATH || FUNC_DIR}: ${(err && err.stack) || err}`);
    process.exit(1);
  }
  const server = http.createServer({ IncomingMessage: Request, ServerResponse: Response }, (req, res) => {
    try { onRequest(req, res); } catch (err) {
      console.error(`internal error: ${(err && err.stack) || err}`);
      sendText(res, 500, 'Internal server error');
    }
  });

  server.on('checkContinue', (req, res) => { // `Expect: 100-continue`: refuse too large bodies before they are sent
    if (Number(req.headers['content-length']) > BODY_LIMIT) res.setHeader('Connection', 'close');
    else res.writeContinue();
    server.emit('request', req, res);
  });

  const shutdown = (signal) => {
    if (closing) return;
    closing = true;
    log(`${signal} received: finishing in-flight requests`);
    server.close(() => { log('server stopped'); process.exit(0); });
    server.closeIdleConnections();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);

  server.listen(PORT, HOST, () => {
    const addr = server.address();
    const ms = (Number(process.hrtime.bigint() - loadStart) / 1e6).toFixed(1);
    log(`function ${MOD_NAME}.${FUNC_HANDLER} loaded in ${ms}ms; listening on ${addr.address}:${addr.port}`);
    // Express and body-parser (~100 ms of loading) once the server is up and the first probes are
    // answered, so that the first call that needs them does not wait; a call before loads them itself.
    setTimeout(preload, PRELOAD_DELAY_MS).unref();
  });
}

main();
