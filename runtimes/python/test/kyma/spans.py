"""The spans a server exports with TRACE_COLLECTOR_ENDPOINT set, for SPAN_CASES: sent to Kyma's
server by `python3 spans.py <url> <otlp port> <proxy port>` (kyma-spans.json, see README.md) and to
ours by ../test_tracing.py. Each span is described by its name, kind and where it hangs: under the
incoming span (`incoming`), under another span of the same trace (`in-trace`) or elsewhere."""
import http.client
import http.server
import json
import sys
import threading
import time
import urllib.parse

from client import Proxy

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SPAN_CASES = {
    "tracer": "/?m=tracer",
    "emit": "/?m=emit",
    "plain": "/?m=string",
    "healthz": "/healthz",
}
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


class Otlp:
    def __init__(self, port=0):
        otlp = self
        self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                otlp.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for body in self.bodies:
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            out.extend(s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
        return out


def describe(spans):
    ids = {s.span_id.hex() for s in spans}
    out = []
    for s in spans:
        if s.trace_id.hex() != TRACE:
            continue
        parent = s.parent_span_id.hex()
        where = "incoming" if parent == PARENT else "in-trace" if parent in ids else "elsewhere"
        out.append(f"{s.name} {KINDS.get(s.kind, s.kind)} {where}")
    return sorted(out)


def run_all(base, otlp):
    url = urllib.parse.urlsplit(base)
    out = {}
    for name, path in SPAN_CASES.items():
        otlp.bodies.clear()
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("GET", path, headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        conn.getresponse().read()
        conn.close()
        time.sleep(0.5)  # SimpleSpanProcessor exports as each span ends
        out[name] = describe(otlp.spans())
    return out


if __name__ == "__main__":
    otlp, proxy = Otlp(int(sys.argv[2])), Proxy(int(sys.argv[3]))
    print(json.dumps(run_all(sys.argv[1], otlp), indent=1, sort_keys=True))
