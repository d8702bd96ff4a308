'use strict';
// Request bodies, parsed as Kyma's server parses them: body-parser (Express 5's) with Kyma's options,
// in Kyma's order. JSON for application/json and application/cloudevents+json (strict: false, so
// `42` is 42), text for text/*, urlencoded forms as objects (qs, extended), everything else a Buffer;
// no body, no req.body. body-parser is required on the first request that has a body.

let parsers = null;

function load(limitMb) {
  const bodyParser = require('body-parser');
  const limit = `${limitMb}mb`;
  return [
    bodyParser.json({ type: ['application/json', 'application/cloudevents+json'], limit, strict: false }),
    bodyParser.text({ type: ['text/*'], limit }),
    bodyParser.urlencoded({ limit, extended: true }),
    bodyParser.raw({ limit, type: () => true }),
  ];
}

// As body-parser (type-is) decides that a request has a body.
function hasBody(req) {
  return req.headers['transfer-encoding'] !== undefined || !isNaN(req.headers['content-length']);
}

// Reads and parses the body into req.body, then done(err); err.status is 400, 413 or 415 for a body
// the client got wrong (body-parser's http-errors).
function parseBody(req, res, limitMb, done) {
  if (parsers === null) parsers = load(limitMb);
  let i = 0;
  const next = (err) => {
    if (err || i === parsers.length) return done(err);
    parsers[i++](req, res, next);
  };
  next();
}

module.exports = { hasBody, parseBody };
