'use strict';
// A handler that exercises what Kyma's Node runtime gives a function; `?m=` picks the behaviour.
// Run unchanged on Kyma's server (components/runtimes/nodejs24) and on ours by record.js / the tests.

function describe(v) { // a JSON-able description of a value, Buffers included
  if (Buffer.isBuffer(v)) return { buffer: v.toString('base64') };
  if (v === undefined) return { undefined: true };
  return v;
}

module.exports = {
  main: function (event, context, callback) {
    const req = event.extensions.request;
    const res = event.extensions.response;
    const m = req.query.m;
    switch (m) {
      case 'string': return 'hello';
      case 'html': return '<p>hi</p>';
      case 'object': return { a: 1, b: [true, null] };
      case 'array': return [1, 'two'];
      case 'buffer': return Buffer.from('abc');
      case 'number': return 42;
      case 'zero': return 0;
      case 'true': return true;
      case 'false': return false;
      case 'empty': return '';
      case 'null': return null;
      case 'undefined': return undefined;
      case 'promise-string': return Promise.resolve('later');
      case 'promise-object': return Promise.resolve({ later: true });
      case 'promise-undefined': return Promise.resolve();
      case 'throw': throw new Error('secret-detail');
      case 'throw-string': throw 'custom failure';
      case 'reject': return Promise.reject(new Error('secret-detail'));
      case 'reject-string': return Promise.reject('custom rejection');
      case 'sleep': return new Promise((r) => setTimeout(r, Number(req.query.ms || 3000), 'slept'));
      case 'echo': {
        const keys = Object.keys(event).sort();
        const ce = {};
        for (const k of keys) if (k.startsWith('ce-')) ce[k] = event[k];
        return {
          keys, ce, hasData: 'data' in event, data: describe(event.data), dataType: typeof event.data,
          body: describe(req.body), context,
        };
      }
      case 'req': return {
        method: req.method, url: req.url, originalUrl: req.originalUrl, path: req.path, baseUrl: req.baseUrl,
        params: req.params, query: req.query, hostname: req.hostname, host: req.host, protocol: req.protocol,
        secure: req.secure, ip: req.ip, ips: req.ips, subdomains: req.subdomains, xhr: req.xhr,
        isJson: req.is('json'), isText: req.is('text/*'), isHtml: req.is('html'), get: req.get('X-Test') ?? null,
        header: req.header('content-type') ?? null, accepts: req.accepts(['json', 'html']),
        fresh: req.fresh, stale: req.stale, cookies: req.cookies ?? null, hasApp: typeof req.app === 'function',
        hasRes: req.res === res, route: req.route ? req.route.path : null,
      };
      case 'redirect': res.redirect('/elsewhere'); return;
      case 'redirect-301': res.redirect(301, 'https://example.com/x'); return;
      case 'cookie': res.cookie('session', 'abc', { httpOnly: true, path: '/' }); res.cookie('two', 'x y'); return 'cookies';
      case 'clear-cookie': res.clearCookie('session'); return 'cleared';
      case 'append': res.append('Link', '<a>'); res.append('Link', '<b>'); res.append('X-Multi', ['1', '2']); return 'appended';
      case 'location': res.location('/there').status(201); return 'located';
      case 'send-string': res.send('sent'); return;
      case 'send-object': res.send({ sent: true }); return;
      case 'send-buffer': res.send(Buffer.from('bin')); return;
      case 'send-number': res.status(201).send('201 body'); return;
      case 'json': res.status(202).json({ j: 1 }); return;
      case 'send-status': res.sendStatus(404); return;
      case 'type': res.type('json'); return 'typed';
      case 'set-object': res.set({ 'X-A': '1', 'Content-Type': 'text/plain' }); return 'set';
      case 'attachment': res.attachment('report.pdf'); res.send('pdf'); return;
      case 'vary': res.vary('Accept'); return 'varied';
      case 'links': res.links({ next: '/p2' }); return 'linked';
      case 'format': res.format({ json: () => res.send({ f: 'json' }), html: () => res.send('<b>f</b>') }); return;
      case 'end': res.writeHead(203, { 'Content-Type': 'text/x-own' }); res.end('own'); return;
      case 'status-400': res.status(400); return;
      case 'status-code': res.statusCode = 405; return '';
      case 'sdk': event.setResponseStatus(201); event.setResponseHeader('X-Custom', 'yes'); event.setResponseContentType('application/xml'); return '<ok/>';
      case 'sdk-type': event.setResponseContentType('json'); return 'x';
      case 'cb-string': callback('cb body', 201, { 'X-Cb': 'yes' }); return;
      case 'cb-object': callback({ cb: true }, 202); return;
      case 'cb-status': callback(undefined, 404); return;
      case 'cb-empty': callback(); return;
      case 'cb-zero': callback(0, 500); return;
      case 'cb-headers': callback('h', undefined, { 'Content-Type': 'text/plain' }); return;
      case 'cb-async': setTimeout(() => callback('async cb', 200), 10); return new Promise(() => {});
      case 'cb-then-return': callback('first'); return 'second';
      case 'tracer': {
        const span = event.tracer.startSpan('custom');
        span.setAttribute('a', 1); span.addEvent('e'); span.end();
        return { traceIdLength: span.spanContext().traceId.length };
      }
      case 'ce-build': return event.buildResponseCloudEvent('id-1', 'reply.type', { r: 1 });
      case 'emit': return event.emitCloudEvent('t.sent', 'probe', { x: 1 }, { eventtypeversion: 'v1' })
        .then((r) => ({ status: r.status, data: r.data }), (e) => ({ error: e.message, status: e.response && e.response.status }));
      case 'emit-string': return event.emitCloudEvent('t.sent', 'probe', 'plain').then((r) => ({ status: r.status, data: r.data }));
      case 'emit-invalid': try { event.emitCloudEvent('t.sent', 'probe', { x: 1 }, { 'Bad-Name': 'x' }); return 'no error'; } catch (e) { return { thrown: e.message }; }
      case 'emit-no-type': try { event.emitCloudEvent(undefined, 'probe', 1); return 'no error'; } catch (e) { return { thrown: e.message }; }
      case 'publish': return event.publishCloudEvent({ specversion: '1.0', id: 'p1', type: 't.pub', source: 'probe', data: { p: 1 } }).then((r) => ({ status: r.status, data: r.data }));
      case 'env': return { KUBELESS_INSTALL_VOLUME: process.env.KUBELESS_INSTALL_VOLUME ?? null };
      default: return 'default';
    }
  },
};
