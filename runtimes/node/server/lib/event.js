'use strict';
// The handler's `event` (Kyma's shape and key order) and its CloudEvents helpers, with Kyma's
// semantics: incoming CloudEvents are read by the CloudEvents SDK (HTTP.toEvent: ce-time normalised,
// invalid events rejected), emitCloudEvent builds one with the SDK (attributes validated, id, time and
// specversion set) and posts it in structured mode to PUBLISHER_PROXY_ADDRESS with axios, returning
// axios's promise (`.status`, `.data`). cloudevents, axios and type-is are required when first used.

let sdk = null;
const cloudevents = () => sdk || (sdk = require('cloudevents'));
let typeis = null;
const isType = (req, type) => (typeis || (typeis = require('type-is')))(req, [type]);

function buildEvent(req, res, tracer) {
  const event = {
    tracer,
    extensions: { request: req, response: res },
    setResponseHeader: (key, value) => { res.set(key, value); },
    setResponseContentType: (type) => { res.type(type); },
    setResponseStatus: (status) => { res.status(status); },
    publishCloudEvent, // deprecated in Kyma
    buildResponseCloudEvent: (id, type, data) => buildResponseCloudEvent(req, id, type, data), // deprecated in Kyma
    emitCloudEvent,
  };
  const body = req.body;
  if (body && !isType(req, 'multipart/*')) { // as Kyma: a falsy body (0, '', false) gives no data
    const h = req.headers;
    if (isType(req, 'application/cloudevents+json') || (h['ce-type'] && h['ce-source'])) {
      const ce = cloudevents().HTTP.toEvent({ headers: h, body }); // throws for an invalid event
      event['ce-type'] = ce.type;
      event['ce-source'] = ce.source;
      event['ce-eventtypeversion'] = ce.eventtypeversion;
      event['ce-specversion'] = ce.specversion;
      event['ce-id'] = ce.id;
      event['ce-time'] = ce.time;
      event['ce-datacontenttype'] = ce.datacontenttype;
      event.data = ce.data;
    } else {
      event.data = body;
    }
  }
  return event;
}

function dataContentType(data) {
  if (typeof data === 'object') return 'application/json';
  if (typeof data === 'string') return 'text/plain';
  return undefined;
}

function post(headers, data) {
  const url = process.env.PUBLISHER_PROXY_ADDRESS;
  if (!url) return Promise.reject(new Error('PUBLISHER_PROXY_ADDRESS is not set: cannot send CloudEvents'));
  return require('axios')({ method: 'post', baseURL: url, headers, data });
}

// Throws (synchronously, as Kyma's) when the CloudEvents SDK rejects the attributes.
function emitCloudEvent(type, source, data, optionalAttributes) {
  const attributes = { ...(optionalAttributes || {}) };
  if (!attributes.datacontenttype) attributes.datacontenttype = dataContentType(data);
  const { CloudEvent, HTTP } = cloudevents();
  const message = HTTP.structured(new CloudEvent({ type, source, data, ...attributes }));
  return post(message.headers, message.body);
}

function publishCloudEvent(cloudEvent) {
  console.warn('publishCloudEvent is deprecated. Use emitCloudEvent');
  return post({ 'Content-Type': 'application/cloudevents+json' }, cloudEvent);
}

function buildResponseCloudEvent(req, id, type, data) {
  console.warn('buildResponseCloudEvent is deprecated. Use emitCloudEvent');
  const h = req.headers;
  return {
    type,
    source: h['ce-source'],
    eventtypeversion: h['ce-eventtypeversion'],
    specversion: h['ce-specversion'],
    id,
    data,
    datacontenttype: dataContentType(data),
  };
}

module.exports = { buildEvent };
