"""Tracing of the python312 server (fnserver/tracing.py): with TRACE_COLLECTOR_ENDPOINT, incoming
W3C and B3 contexts are continued, each function request is one server span, outgoing requests and
urllib calls carry traceparent and x-b3-* headers, event.tracer spans are real and everything goes by
OTLP/HTTP to the endpoint; without it, nothing of OpenTelemetry (nor Bottle) is loaded at start-up."""
import json
import os
import sys
import unittest

from test_fixtures import StandIn, spans_of
from test_server import Server

HANDLER = '''
import json, os, sys, urllib.request

def main(event, context):
    mode = event["extensions"]["request"].query.mode
    if mode == "modules":
        return {"otel": sorted(m for m in sys.modules if m.startswith("opentelemetry")), "bottle": "bottle" in sys.modules}
    if mode == "requests":
        import requests
        return {"sent": dict(requests.get(os.environ["TARGET"], timeout=5).request.headers)}
    if mode == "urllib":
        urllib.request.urlopen(os.environ["TARGET"], timeout=5).read()
        return {"ok": True}
    if mode == "span":
        with event.tracer.start_as_current_span("custom") as span:
            span.set_attribute("a", 1)
        return {"ok": True}
    return {"ok": True}
'''
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SERVER_KIND = 2  # opentelemetry.proto SPAN_KIND_SERVER


class WithoutCollector(unittest.TestCase):
    def test_nothing_of_opentelemetry_is_loaded(self):
        srv = Server({"handler.py": HANDLER})
        self.addCleanup(srv.stop)
        status, _, body, _ = srv.request("GET", "/?mode=modules", headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
        self.assertEqual((status, json.loads(body)["otel"]), (200, []))


class WithCollector(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.otlp, cls.target = StandIn(b"{}"), StandIn()
        cls.srv = Server({"handler.py": HANDLER}, TARGET=cls.target.url + "/x",
                         TRACE_COLLECTOR_ENDPOINT=cls.otlp.url + "/v1/traces",
                         OTEL_PROPAGATORS="tracecontext,baggage,b3multi")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.otlp.stop()
        cls.target.stop()

    def spans(self, trace_id):
        return [s for s in spans_of(self.otlp) if s[0] == trace_id]

    def test_w3c_context_continued_and_propagated_by_requests_and_urllib(self):
        for mode in ("requests", "urllib"):
            self.target.received.clear()
            status, _, _, _ = self.srv.request("GET", f"/?mode={mode}", headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
            self.assertEqual(status, 200)
            headers = self.target.received[-1][0]
            self.assertIn(TRACE, headers.get("traceparent", ""), (mode, headers))
            self.assertEqual(headers.get("x-b3-traceid"), TRACE, (mode, headers))
            self.assertIn("x-b3-spanid", headers, mode)

    def test_b3_context_continued(self):
        b3 = "80f198ee56343ba864fe8b2a57d3eff7"
        self.target.received.clear()
        self.srv.request("GET", "/?mode=requests", headers={"X-B3-TraceId": b3, "X-B3-SpanId": "e457b5a2e4d86bd1", "X-B3-Sampled": "1"})
        self.assertIn(b3, self.target.received[-1][0]["traceparent"])

    def test_one_server_span_per_request_and_custom_spans_exported(self):
        trace = "5bf92f3577b34da6a3ce929d0e0e4737"
        self.srv.request("GET", "/?mode=span", headers={"traceparent": f"00-{trace}-00f067aa0ba902b8-01"})
        self.srv.request("GET", "/healthz", headers={"traceparent": f"00-{trace}-00f067aa0ba902b8-01"})
        got = self.spans(trace)
        self.assertEqual([s for s in got if s[2] == SERVER_KIND], [(trace, "GET", SERVER_KIND)], got)
        self.assertIn("custom", [s[1] for s in got])


HERE = os.path.dirname(os.path.abspath(__file__))


class SpansAsKyma(unittest.TestCase):
    """Kyma's exported spans (kyma/kyma-spans.json) against ours for the same requests: the same,
    but for the deliberate server span, under which the others then hang."""

    def test_spans_are_kymas_plus_one_server_span(self):
        sys.path.insert(0, os.path.join(HERE, "kyma"))
        import spans
        from client import Proxy

        with open(os.path.join(HERE, "kyma", "kyma-spans.json")) as f:
            kyma = json.load(f)
        with open(os.path.join(HERE, "kyma", "probe_handler.py")) as f:
            handler = f.read()
        otlp, proxy = spans.Otlp(), Proxy()
        self.addCleanup(otlp.server.shutdown)
        self.addCleanup(proxy.server.shutdown)
        srv = Server({"handler.py": handler}, TRACE_COLLECTOR_ENDPOINT=f"http://127.0.0.1:{otlp.port}/v1/traces",
                     PUBLISHER_PROXY_ADDRESS=f"http://127.0.0.1:{proxy.port}/publish",
                     OTEL_PROPAGATORS="tracecontext,baggage,b3multi",
                     OTEL_PYTHON_REQUESTS_EXCLUDED_URLS="healthz,favicon.ico,metrics")
        self.addCleanup(srv.stop)
        ours = spans.run_all(f"http://127.0.0.1:{srv.port}", otlp)
        for case, want in kyma.items():
            if case == "healthz":  # probes: no spans, as Kyma
                self.assertEqual(ours[case], want, case)
                continue
            expected = sorted([w.replace(" incoming", " in-trace") for w in want] + ["GET server incoming"])
            self.assertEqual(ours[case], expected, case)


if __name__ == "__main__":
    unittest.main()
