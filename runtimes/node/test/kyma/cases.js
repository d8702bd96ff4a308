'use strict';
// The requests sent to Kyma's Node server (kyma-project/serverless components/runtimes/nodejs24,
// run locally with its package.json installed and probe-handler.js as the function) and to ours.
// record.js sent them to Kyma's and wrote its answers to kyma-answers.json; kyma.test.js sends them
// to ours and compares. The server runs with FUNC_TIMEOUT=2, FUNC_NAME=probe, SERVICE_NAMESPACE=ns,
// FUNC_RUNTIME=nodejs24 and PUBLISHER_PROXY_ADDRESS pointing at the stand-in proxy below.

const json = { 'Content-Type': 'application/json' };
const ceBinary = {
  'ce-type': 'order.created', 'ce-source': '/shop', 'ce-specversion': '1.0', 'ce-id': 'id-1',
  'ce-time': '2026-01-01T00:00:05Z', 'ce-eventtypeversion': 'v1', 'ce-myext': 'x',
};
const structured = (obj, type = 'application/cloudevents+json') => ({ method: 'POST', path: '/?m=echo', headers: { 'Content-Type': type }, body: JSON.stringify(obj) });

const CASES = {
  // return values
  ...Object.fromEntries(['string', 'html', 'object', 'array', 'buffer', 'number', 'zero', 'true', 'false', 'empty', 'null',
    'undefined', 'promise-string', 'promise-object', 'promise-undefined', 'throw-string', 'default']
    .map((m) => [`return ${m}`, { path: `/?m=${m}` }])),
  'return throw': { path: '/?m=throw' },
  'return reject': { path: '/?m=reject' },
  'return reject-string': { path: '/?m=reject-string' },
  'timeout': { path: '/?m=sleep&ms=3000' },
  // event.data and req.body by content type
  'data json': { method: 'POST', path: '/?m=echo', headers: json, body: '{"a":[1,2],"b":"c"}' },
  'data json charset': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/json; charset=utf-8' }, body: '{"a":1}' },
  'data json primitive': { method: 'POST', path: '/?m=echo', headers: json, body: '42' },
  'data json invalid': { method: 'POST', path: '/?m=echo', headers: json, body: '{nope' },
  'data json empty': { method: 'POST', path: '/?m=echo', headers: json, body: '' },
  'data urlencoded': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=two&a=3' },
  'data urlencoded nested': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'u[name]=x&u[age]=3' },
  'data text': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'text/plain' }, body: 'héllo' },
  'data html': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'text/html; charset=utf-8' }, body: '<b>x</b>' },
  'data octet-stream': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/octet-stream' }, body: 'raw' },
  'data xml': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/xml' }, body: '<x/>' },
  'data vendor json': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/vnd.api+json' }, body: '{"a":1}' },
  'data no type': { method: 'POST', path: '/?m=echo', body: 'untyped' },
  'data multipart': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'multipart/form-data; boundary=XX' }, body: '--XX\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n--XX--\r\n' },
  'data empty no type': { method: 'POST', path: '/?m=echo', body: '' },
  'data get': { path: '/?m=echo' },
  'data delete json': { method: 'DELETE', path: '/?m=echo', headers: json, body: '{"d":1}' },
  'data json gzip': { method: 'POST', path: '/?m=echo', headers: { ...json, 'Content-Encoding': 'gzip' }, bodyBase64: 'H4sIAAAAAAACA6tWqsosKEhNUbIqKSpNrQUAhCi8CA8AAAA=' },
  'data text latin1': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'text/plain; charset=iso-8859-1' }, bodyBase64: 'Y2Fm6Q==' },
  'data json bad charset': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/json; charset=koi9' }, body: '{}' },
  'data json chunked': { method: 'POST', path: '/?m=echo', headers: json, body: '{"c":1}', chunked: true },
  'body too large': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/octet-stream' }, bodySize: 1024 * 1024 + 1 },
  'body at limit': { method: 'POST', path: '/?m=zero', headers: { 'Content-Type': 'application/octet-stream' }, bodySize: 1024 * 1024 },
  'body json too large': { method: 'POST', path: '/?m=echo', headers: json, bodySize: 1024 * 1024 + 1 },
  // CloudEvents in
  'ce binary': { method: 'POST', path: '/?m=echo', headers: { ...json, ...ceBinary }, body: '{"hello":"x"}' },
  'ce binary minimal text': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'text/plain', 'ce-type': 't', 'ce-source': 's' }, body: 'txt' },
  'ce binary no body': { method: 'POST', path: '/?m=echo', headers: { 'ce-type': 't', 'ce-source': 's', 'ce-specversion': '1.0', 'ce-id': '1' } },
  'ce binary bad specversion': { method: 'POST', path: '/?m=echo', headers: { ...json, ...ceBinary, 'ce-specversion': '0.1' }, body: '{}' },
  'ce type only': { method: 'POST', path: '/?m=echo', headers: { ...json, 'ce-type': 't' }, body: '{"a":1}' },
  'ce structured': structured({ specversion: '1.0', type: 'order.created', source: '/shop', id: 'id-2', time: '2026-01-01T00:00:05Z', eventtypeversion: 'v1', myext: 'y', datacontenttype: 'application/json', data: { order: 8 } }),
  'ce structured charset': structured({ specversion: '1.0', type: 't', source: 's', id: 'i', data: 'str' }, 'application/cloudevents+json; charset=utf-8'),
  'ce structured base64': structured({ specversion: '1.0', type: 't', source: 's', id: 'i', data_base64: Buffer.from('bin').toString('base64') }),
  'ce structured no source': structured({ specversion: '1.0', type: 't', id: 'i', data: 1 }),
  'ce structured bad json': { method: 'POST', path: '/?m=echo', headers: { 'Content-Type': 'application/cloudevents+json' }, body: '{x' },
  // request object
  'req properties': { path: '/a/b?m=req&x=1&x=2&y=3', headers: { 'X-Test': 't', 'Content-Type': 'application/json', Host: 'sub.example.com:8080', 'X-Forwarded-For': '10.0.0.1', 'X-Forwarded-Proto': 'https', 'X-Requested-With': 'XMLHttpRequest', Accept: 'text/html' } },
  'req properties root': { path: '/?m=req' },
  'req with json body': { method: 'POST', path: '/p%20q/r?m=req&a[b]=1', headers: { 'Content-Type': 'application/json; charset=utf-8' }, body: '{"x":1}' },
  'req with text body': { method: 'PUT', path: '/?m=req', headers: { 'Content-Type': 'text/html' }, body: '<i>' },
  // response object
  ...Object.fromEntries(['redirect', 'redirect-301', 'cookie', 'clear-cookie', 'append', 'location', 'send-string', 'send-object', 'send-buffer',
    'send-number', 'json', 'send-status', 'type', 'set-object', 'attachment', 'vary', 'links', 'format', 'end', 'status-400', 'status-code',
    'sdk', 'sdk-type'].map((m) => [`res ${m}`, { path: `/?m=${m}` }])),
  'res format html': { path: '/?m=format', headers: { Accept: 'text/html' } },
  'res json fresh': { path: '/?m=object', headers: { 'If-None-Match': 'W/"17-3xGzuSfOJHSvH1lWw3wvdBVIjqg"' } },
  // the callback (third argument)
  ...Object.fromEntries(['cb-string', 'cb-object', 'cb-status', 'cb-empty', 'cb-zero', 'cb-headers', 'cb-async', 'cb-then-return']
    .map((m) => [`callback ${m}`, { path: `/?m=${m}` }])),
  // endpoints and methods
  'healthz': { path: '/healthz' },
  'favicon': { path: '/favicon.ico' },
  'healthz head': { method: 'HEAD', path: '/healthz' },
  'healthz post': { method: 'POST', path: '/healthz?m=string' },
  'options preflight': { method: 'OPTIONS', path: '/?m=string', headers: { 'Access-Control-Request-Method': 'PUT', 'Access-Control-Request-Headers': 'x-a', Origin: 'http://o' } },
  'options plain': { method: 'OPTIONS', path: '/?m=string' },
  'method put': { method: 'PUT', path: '/?m=string' },
  'method patch': { method: 'PATCH', path: '/?m=string' },
  'method delete': { method: 'DELETE', path: '/?m=string' },
  'method head': { method: 'HEAD', path: '/?m=object' },
  'method head string': { method: 'HEAD', path: '/?m=string' },
  'deep path': { path: '/x/y/z?m=string' },
  // tracing and CloudEvents out
  'tracer': { path: '/?m=tracer' },
  'ce build response': { method: 'POST', path: '/?m=ce-build', headers: { ...json, ...ceBinary }, body: '{}' },
  'emit': { path: '/?m=emit', proxy: true },
  'emit string': { path: '/?m=emit-string', proxy: true },
  'emit invalid attribute': { path: '/?m=emit-invalid' },
  'emit no type': { path: '/?m=emit-no-type' },
  'emit proxy error': { path: '/?m=emit', proxy: true, proxyStatus: 500 },
  'publish': { path: '/?m=publish', proxy: true },
};

// Response headers compared (others, e.g. Date, Connection, X-Powered-By, Keep-Alive, are not).
const HEADERS = ['content-type', 'content-length', 'etag', 'location', 'set-cookie', 'link', 'x-multi', 'x-custom', 'x-cb', 'x-a', 'vary',
  'content-disposition', 'access-control-allow-origin', 'access-control-allow-methods', 'access-control-allow-headers'];

module.exports = { CASES, HEADERS };
