"""OpenTelemetry, set up as Kyma's lib/tracing.py does: a TracerProvider (Resource.create(), the
always-on sampler), spans exported one by one (SimpleSpanProcessor) by OTLP/HTTP to
TRACE_COLLECTOR_ENDPOINT, propagators from OTEL_PROPAGATORS (the image sets Kyma's
tracecontext,baggage,b3multi), outgoing `requests` calls instrumented (RequestsInstrumentor, which
honours OTEL_PYTHON_REQUESTS_EXCLUDED_URLS) and urllib calls carrying the context too.

With the endpoint set, server.py calls setup() before loading the function, and each function
request runs in a server span continued from the incoming traceparent / B3 headers. Without it
nothing here is imported at start-up: the first handler that uses `event.tracer` sets up the same
provider without an exporter (Kyma's spans then go nowhere either) and gets its request's context.
"""
import os
import threading

TRACER_NAME = "io.kyma-project.serverless"
_lock = threading.Lock()
_tracer = None
_local = threading.local()  # the context token attached for the handler call on this thread
exporting = False  # whether spans go to a collector (set by setup())


def setup(endpoint=None):
    """Installs the provider (once); returns the tracer handlers get as event.tracer."""
    global _tracer, exporting
    with _lock:
        if _tracer is not None:
            return _tracer
        os.environ.setdefault("OTEL_PROPAGATORS", "tracecontext,baggage,b3multi")
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import DEFAULT_ON

        provider = TracerProvider(resource=Resource.create(), sampler=DEFAULT_ON)
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
            exporting = True
        trace.set_tracer_provider(provider)
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        RequestsInstrumentor().instrument()
        _instrument_urllib()
        _tracer = trace.get_tracer(TRACER_NAME)
        return _tracer


def tracer():
    return _tracer or setup(None)


def _instrument_urllib():
    """urllib.request calls carry the current context's headers (no client span: there is no
    urllib instrumentation in Kyma's image; the propagation is what a trace chain needs)."""
    import urllib.request
    from opentelemetry import propagate

    def with_context(original):
        def prepare(self, request):
            carrier = {}
            propagate.inject(carrier)
            for name, value in carrier.items():
                if not request.has_header(name.capitalize()):
                    request.add_unredirected_header(name.capitalize(), value)
            return original(self, request)

        return prepare

    # HTTPHandler.http_request is do_request_ bound at class creation: patch the handlers themselves
    urllib.request.HTTPHandler.http_request = with_context(urllib.request.HTTPHandler.http_request)
    if hasattr(urllib.request, "HTTPSHandler"):
        urllib.request.HTTPSHandler.https_request = with_context(urllib.request.HTTPSHandler.https_request)


def _extract(headers):
    from opentelemetry.propagate import extract

    return extract({k.lower(): v for k, v in headers.items()})


def attach_request(headers):
    """The incoming request's context as the current one on this thread (a handler that asked for
    event.tracer without a collector configured: no server span, as Kyma)."""
    if getattr(_local, "token", None) is not None:
        return
    from opentelemetry import context

    _local.token = context.attach(_extract(headers))


class ServerSpan:
    """The span of one function request (exporting only), current while the handler runs."""

    __slots__ = ("span", "token")

    def __init__(self, method, path, headers):
        from opentelemetry import context, trace

        self.span = _tracer.start_span(method, context=_extract(headers), kind=trace.SpanKind.SERVER,
                                       attributes={"http.request.method": method, "url.path": path})
        self.token = context.attach(trace.set_span_in_context(self.span))
        _local.token = None

    def end(self, status):
        from opentelemetry import context, trace

        context.detach(self.token)
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(trace.StatusCode.ERROR)
        self.span.end()


def detach_request():
    """Undoes attach_request() after the handler returned."""
    token = getattr(_local, "token", None)
    if token is not None:
        from opentelemetry import context

        _local.token = None
        context.detach(token)
