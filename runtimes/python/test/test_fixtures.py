"""Kyma's own Python e2e Functions and documented samples (tests/fixtures/kyma/python, format in
tests/fixtures/kyma/README.md) run on our server on this host, with the stand-ins and other
fixtures their expect.json asks for, and must answer as Kyma's assertions expect. (tests/kyma_functions.rs
runs the same fixtures built into images by fnbuild, in Docker.)

A fixture's requirements.txt is installed once with pip into ${FNBUILD_CACHE:-/var/cache/fnbuild}/
fixture-deps (PyPI is needed the first time; without it the fixture is skipped)."""
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

from test_server import Server

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "fixtures", "kyma", "python")
FORMATS = {
    "<uuid>": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "<rfc3339>": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$",
}


def fixture(name):
    with open(os.path.join(ROOT, name, "expect.json")) as f:
        expect = json.load(f)
    with open(os.path.join(ROOT, name, "handler.py")) as f:
        handler = f.read()
    return expect, handler


def dependencies(name):
    """The directory the fixture's requirements are installed in (None: it has none)."""
    path = os.path.join(ROOT, name, "requirements.txt")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        text = f.read()
    if not text.strip():
        return None
    cache = os.environ.get("FNBUILD_CACHE", "/var/cache/fnbuild")
    target = os.path.join(cache, "fixture-deps", "python-" + hashlib.sha256(text).hexdigest()[:16])
    if not os.path.isdir(target):
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", target + ".tmp",
                               "-r", path], capture_output=True, text=True)
        if done.returncode != 0:
            raise unittest.SkipTest(f"{name}: cannot install its requirements: {done.stderr.strip()[-300:]}")
        os.rename(target + ".tmp", target)
    return target


class StandIn:
    """An HTTP server on 127.0.0.1 that records each request's headers and body and answers JSON."""

    def __init__(self, answer=b'{"name": "http-server"}'):
        self.received = []
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = handle_any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def spans_of(otlp):
    """(trace id hex, span name, kind) of every span the OTLP receiver got (protobuf bodies)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for _, body in otlp.received:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                out.extend((s.trace_id.hex(), s.name, s.kind) for s in ss.spans)
    return out


def request(url, req):
    headers = dict(req.get("headers") or {})
    if "json" in req:
        body = json.dumps(req["json"]).encode()
        headers.setdefault("Content-Type", "application/json")
    else:
        body = req.get("body", "").encode()
    r = urllib.request.Request(url + req["path"], data=body if req["method"] != "GET" else None,
                               method=req["method"], headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read().decode()


class KymaFixtures(unittest.TestCase):
    def run_fixture(self, name):
        expect, handler = fixture(name)
        http_server, otlp = StandIn(), StandIn(b"{}")
        self.addCleanup(http_server.stop)
        self.addCleanup(otlp.stop)
        urls = {"http-server": http_server.url, "otlp": otlp.url}
        servers = {}
        for need in expect.get("needs", []) + [s for s in expect.get("standIns", []) if s not in urls]:
            servers[need] = self.start(need, urls)
            urls[need] = f"http://127.0.0.1:{servers[need].port}"
        me = self.start(name, urls)
        url = f"http://127.0.0.1:{me.port}"
        for req in expect.get("requests", []):
            self.check(url, req, me)
        for req in expect.get("then", []):
            self.check(f"http://127.0.0.1:{servers[req['fixture']].port}", req, servers[req["fixture"]])
        wanted = expect.get("http_server_received")
        if wanted:
            self.assertTrue(any(all(h in got for h in wanted["headers_present"])
                                and ("trace_id" not in wanted or any(wanted["trace_id"] in v for v in got.values()))
                                for got, _ in http_server.received),
                            f"{name}: the HTTP server received {[h for h, _ in http_server.received]}, want {wanted}")
        spans = expect.get("spans")
        if spans:
            deadline = time.monotonic() + 10
            while True:
                got = spans_of(otlp)
                ok = (all(any(t == i for t, _, _ in got) for i in spans.get("trace_ids", []))
                      and all(any(n == s for _, n, _ in got) for s in spans.get("names", [])))
                if ok or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self.assertTrue(ok, f"{name}: spans {got}, want {spans}")
        return me

    def start(self, name, urls):
        expect, handler = fixture(name)
        env = {k: re.sub(r"\{\{([\w-]+)\}\}", lambda m: urls[m.group(1)], v) for k, v in expect.get("env", {}).items()}
        deps = dependencies(name)
        # as in the image: the function's own packages first, then the runtime's libraries
        path = ":".join(p for p in (deps, os.environ.get("PYTHONPATH", "")) if p)
        srv = Server({"handler.py": handler}, FUNC_NAME=name, FUNC_RUNTIME="python312", PYTHONPATH=path,
                     OTEL_PROPAGATORS="tracecontext,baggage,b3multi",
                     OTEL_PYTHON_REQUESTS_EXCLUDED_URLS="healthz,favicon.ico,metrics", **env)
        self.addCleanup(srv.stop)
        return srv

    def check(self, url, req, srv):
        status, ctype, body = request(url, req)
        e = req["expect"]
        what = f"{req['method']} {req['path']}: got {status} {ctype!r} {body[:500]!r}\n--- log\n{srv.output[-3000:]}"
        self.assertEqual(status, e["status"], what)
        if "content_type" in e:
            self.assertEqual(ctype, e["content_type"], what)
        if "body" in e:
            self.assertEqual(body, e["body"], what)
        if "json" in e:
            self.assertEqual(json.loads(body), e["json"], what)
        for k, want in e.get("json_fields", {}).items():
            got = json.loads(body).get(k)
            if isinstance(want, str) and want in FORMATS:
                self.assertRegex(str(got), FORMATS[want], f"{k}: {what}")
            else:
                self.assertEqual(got, want, f"{k}: {what}")
        for part in e.get("contains", []):
            self.assertIn(part, body, what)


for _name in sorted(os.listdir(ROOT)) if os.path.isdir(ROOT) else []:
    if os.path.exists(os.path.join(ROOT, _name, "expect.json")):
        setattr(KymaFixtures, f"test_{_name.replace('-', '_')}", lambda self, n=_name: [self.run_fixture(n)] and None)

if __name__ == "__main__":
    unittest.main()
