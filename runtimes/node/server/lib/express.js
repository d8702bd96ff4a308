'use strict';
// Express 5's own req/res for the handler (event.extensions.request/.response), without Express's
// router on every call and without its load time at start-up (requiring express takes ~100 ms of
// Node's start on a small machine, more than our whole start-up budget).
//
// Request and Response (the classes node:http creates for us) inherit, until Express is needed, from
// a stub layer that has every name of Express's request and response API: the first use of any of
// them (req.query, res.json, res.redirect, …) requires express, makes `express()` once, and puts
// its app.request / app.response under our classes, so from then on every request object *is* an
// Express request (same prototypes as Express's app.handle gives, minus the router). What the router
// would set per request (params, baseUrl, originalUrl, route, res.locals) are accessors here.

const http = require('node:http');

// Express 5.x's request and response API (Object.getOwnPropertyNames(express.request/.response));
// a test checks these lists against the installed express.
const REQUEST_API = ['header', 'get', 'accepts', 'acceptsEncodings', 'acceptsCharsets', 'acceptsLanguages', 'range', 'query', 'is',
  'protocol', 'secure', 'ip', 'ips', 'subdomains', 'path', 'host', 'hostname', 'fresh', 'stale', 'xhr', 'app'];
const RESPONSE_API = ['status', 'links', 'send', 'json', 'jsonp', 'sendStatus', 'sendFile', 'download', 'type', 'contentType', 'format',
  'attachment', 'append', 'header', 'set', 'get', 'clearCookie', 'cookie', 'location', 'redirect', 'vary', 'render', 'app'];
// Names that are getters in Express (the rest are methods).
const REQUEST_GETTERS = new Set(['query', 'protocol', 'secure', 'ip', 'ips', 'subdomains', 'path', 'host', 'hostname', 'fresh', 'stale', 'xhr', 'app']);

const stubs = { request: Object.create(http.IncomingMessage.prototype), response: Object.create(http.ServerResponse.prototype) };
let app = null; // express(), once required
let installed = false; // Express's prototypes are under Request and Response

// Requires express and makes its app, without changing any request's prototypes: the server does
// this once it is up, so that the first call needing Express does not wait for it to load.
function preload() {
  if (app === null) app = require('express')();
  return app;
}

// Puts Express's prototypes under Request and Response (requiring it if need be); returns the app.
// Only when a handler first uses Express's API: from then on every request goes through the longer
// prototype chain, which costs a hello-world call about 9 µs more CPU at 50 connections (30 µs
// instead of 21 on a 2-core VM; bench/runtimes), so functions that never touch it never pay.
function load() {
  if (installed) return app;
  preload();
  Object.setPrototypeOf(Request.prototype, app.request);
  Object.setPrototypeOf(Response.prototype, app.response);
  installed = true;
  return app;
}

function stub(layer, name, getter) {
  if (getter) {
    Object.defineProperty(layer, name, {
      configurable: true,
      get() { load(); return this[name]; },
      set(value) { Object.defineProperty(this, name, { value, writable: true, configurable: true, enumerable: true }); },
    });
  } else {
    Object.defineProperty(layer, name, { configurable: true, writable: true, value: function (...args) { load(); return this[name](...args); } });
  }
}
for (const name of REQUEST_API) stub(stubs.request, name, REQUEST_GETTERS.has(name));
for (const name of RESPONSE_API) stub(stubs.response, name, name === 'app');

// A property Express's router sets on every request: here computed when read, and writable.
function perRequest(proto, name, compute) {
  Object.defineProperty(proto, name, {
    configurable: true,
    get() { return compute(this); },
    set(value) { Object.defineProperty(this, name, { value, writable: true, configurable: true, enumerable: true }); },
  });
}

function decodeSegment(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

const ROUTE = Object.freeze({ path: '*path', methods: { _all: true } }); // Kyma's app.all('*path')

class Request extends http.IncomingMessage {}
Object.setPrototypeOf(Request.prototype, stubs.request);
perRequest(Request.prototype, 'originalUrl', (req) => req.url);
perRequest(Request.prototype, 'baseUrl', () => '');
perRequest(Request.prototype, 'route', () => ROUTE);
// Kyma's route `*path` matches the whole path: its segments, decoded ('/a/b' → ['', 'a', 'b']).
perRequest(Request.prototype, 'params', (req) => {
  const q = req.url.indexOf('?');
  return { path: (q < 0 ? req.url : req.url.slice(0, q)).split('/').map(decodeSegment) };
});
perRequest(Request.prototype, 'body', () => undefined);

class Response extends http.ServerResponse {}
Object.setPrototypeOf(Response.prototype, stubs.response);
perRequest(Response.prototype, 'locals', (res) => { const locals = Object.create(null); res.locals = locals; return locals; });

module.exports = { Request, Response, load, preload, REQUEST_API, RESPONSE_API };
