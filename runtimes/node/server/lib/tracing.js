'use strict';
// OpenTelemetry tracing, set up as Kyma's lib/tracer.js does, when TRACE_COLLECTOR_ENDPOINT is set:
// a NodeTracerProvider (ParentBased(AlwaysOn)), spans exported one by one (SimpleSpanProcessor) by
// OTLP/HTTP to the endpoint, W3C traceparent and B3 multi-header propagation (OTEL_PROPAGATORS may
// choose others: tracecontext, baggage, b3, b3multi), and the http instrumentation: one server span
// per request (not for /healthz, /metrics, /favicon.ico), continued from the incoming headers, and
// outgoing http/https calls (axios included) carrying the context. Outgoing fetch() calls (undici,
// which the http instrumentation does not see) get the same headers through undici's diagnostics
// channel. setup() must run before node:http is first required, as instrumentations patch on require.
//
// Without the endpoint nothing of the SDK is loaded: event.tracer is a stand-in that hands calls to
// @opentelemetry/api's tracer (no-op spans, as with the SDK absent) the first time one is made.

const TRACER_NAME = 'io.kyma-project.serverless';
const IGNORED = ['/healthz', '/favicon.ico', '/metrics'];

let tracer = null;
let api = null; // @opentelemetry/api, once set up

function propagators(core, b3) {
  const names = (process.env.OTEL_PROPAGATORS || 'tracecontext,b3multi').split(',').map((s) => s.trim()).filter(Boolean);
  const out = [];
  for (const name of names) {
    if (name === 'tracecontext') out.push(new core.W3CTraceContextPropagator());
    else if (name === 'baggage') out.push(new core.W3CBaggagePropagator());
    else if (name === 'b3') out.push(new b3.B3Propagator({ injectEncoding: b3.B3InjectEncoding.SINGLE_HEADER }));
    else if (name === 'b3multi') out.push(new b3.B3Propagator({ injectEncoding: b3.B3InjectEncoding.MULTI_HEADER }));
  }
  return new core.CompositePropagator({ propagators: out });
}

function setup(functionName, endpoint) {
  api = require('@opentelemetry/api');
  const core = require('@opentelemetry/core');
  const { registerInstrumentations } = require('@opentelemetry/instrumentation');
  const { NodeTracerProvider, AlwaysOnSampler, ParentBasedSampler } = require('@opentelemetry/sdk-trace-node');
  const { SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
  const { defaultResource, resourceFromAttributes } = require('@opentelemetry/resources');
  const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');

  const provider = new NodeTracerProvider({
    // Kyma's: the function's name, then OpenTelemetry's defaults (which win for service.name).
    resource: resourceFromAttributes({ 'service.name': functionName }).merge(defaultResource()),
    sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
    spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: endpoint }))],
  });
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [new HttpInstrumentation({ ignoreIncomingRequestHook: (req) => IGNORED.includes(req.url) })],
  });
  provider.register({ propagator: propagators(core, require('@opentelemetry/propagator-b3')) });
  propagateToFetch();
  tracer = api.trace.getTracer(TRACER_NAME);
  return provider;
}

// fetch() requests get the active context's headers (traceparent, x-b3-*) as http requests do.
function propagateToFetch() {
  const channel = require('node:diagnostics_channel').channel('undici:request:create');
  channel.subscribe(({ request }) => {
    const carrier = {};
    api.propagation.inject(api.context.active(), carrier);
    for (const [name, value] of Object.entries(carrier)) {
      if (typeof request.addHeader === 'function') request.addHeader(name, value);
    }
  });
}

// event.tracer without the SDK: @opentelemetry/api's tracer, required when first used.
let apiTracer = null;
const fromApi = () => apiTracer || (apiTracer = require('@opentelemetry/api').trace.getTracer(TRACER_NAME));
const lazyTracer = {
  startSpan: (...args) => fromApi().startSpan(...args),
  startActiveSpan: (...args) => fromApi().startActiveSpan(...args),
};

// The span of the request being handled (the server span), or undefined.
function activeSpan() {
  return api === null ? undefined : api.trace.getSpan(api.context.active());
}

module.exports = { setup, tracer: () => tracer || lazyTracer, activeSpan };
