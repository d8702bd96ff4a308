"""Tests for runtimes/python/server/server.py.

Each test starts the server as a subprocess on 127.0.0.1 (port 0, read back from its start-up line) with a
temporary function directory, and talks HTTP to it.
Run: python3 -m unittest discover -s runtimes/python/test -v
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server", "server.py")

# A handler exercising the contract; `?mode=` picks the behaviour.
KITCHEN_SINK = '''
import asyncio
import time
from bottle import HTTPResponse


async def later():
    await asyncio.sleep(0.01)
    return {"async": True}


async def asleep(seconds):
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        print("asleep-cancelled", flush=True)
        raise
    return "slept"


async def amain(event, context):
    await asyncio.sleep(0.01)
    return {"coroutine": True}


def main(event, context):
    req = event["extensions"]["request"]
    mode = req.query.mode
    if mode == "echo":
        return {
            "data": event.ceHeaders.get("data"),
            "ce": {k: v for k, v in event.ceHeaders.items() if k.startswith("ce-")},
            "context": context,
            "method": req.method,
            "path": req.path,
            "query": {k: req.query.get(k) for k in req.query},
            "header": req.headers.get("x-test"),
        }
    if mode == "text":
        return "plain text"
    if mode == "superset":  # deliberate: Kyma's Event has item access only
        return {"get": event.get("data", "none"), "in": "extensions" in event, "keys": sorted(event.keys())}
    if mode == "bytes":
        return b"\\x00\\x01\\x02"
    if mode == "none":
        return None
    if mode == "async":
        return later()
    if mode == "raise":
        raise ValueError("secret-failure-detail")
    if mode == "sleep":
        print("sleep-start", flush=True)
        time.sleep(float(req.query.s))
        return "slept"
    if mode == "asleep":
        return asleep(float(req.query.s))
    if mode == "bottle":  # Kyma's documented custom-response example
        return HTTPResponse(body={"success": "Message accepted."}, status=202,
                            headers={"Content-Type": "application/json"})
    if mode == "tracer":
        with event.tracer.start_as_current_span("work") as span:
            span.set_attribute("a", 1)
        return "traced"
    return "default"
'''

HELLO_WORLD = '''def main(event, context):
    return "Hello World!"
'''


class Server:
    """The server in a subprocess, with its output collected by a thread."""

    def __init__(self, files, **env):
        self.dir = tempfile.mkdtemp(prefix="fnbuild-python-test-")
        for name, text in files.items():
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, SERVER],
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                 "FUNC_DIR": self.dir, "FUNC_HOST": "127.0.0.1",
                 "FUNC_PORT": "0", **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self.port = int(self.wait_for(r"listening on \S+:(\d+)").group(1))
        except Exception:
            self.stop()
            raise

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return "".join(self.lines)

    def wait_for(self, pattern, timeout=5):
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.output, re.M)
            if m:
                return m
            if time.monotonic() > deadline or not self.reader.is_alive():
                if not self.reader.is_alive():  # output ended: the server exits
                    self.proc.wait(5)
                raise AssertionError(f"no {pattern!r} in server output (exit code {self.proc.poll()}):\n{self.output}")
            time.sleep(0.02)

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read(), resp
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None):
        status, ctype, data, _ = self.request(method, path, body, headers)
        return json.loads(data)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.reader.join(5)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def metric(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class KitchenSinkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server({"handler.py": KITCHEN_SINK}, FUNC_NAME="sink", FUNC_RUNTIME="python312",
                         SERVICE_NAMESPACE="tests", FUNC_TIMEOUT="7", KYMA_INTERNAL_LOGGER_ENABLED="1")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_get_returns_handler_output_as_text(self):
        status, ctype, body, _ = self.srv.request("GET", "/?mode=text")
        self.assertEqual((status, body, ctype), (200, b"plain text", "text/html; charset=UTF-8"))  # Bottle's

    def test_json_body_is_parsed_into_data_and_dicts_come_back_as_json(self):
        status, ctype, body, _ = self.srv.request(
            "POST", "/some/path?mode=echo&x=1", json.dumps({"a": [1, 2], "b": "c"}),
            {"Content-Type": "application/json", "X-Test": "hdr"})
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("application/json"), ctype)
        out = json.loads(body)
        self.assertEqual(out["data"], {"a": [1, 2], "b": "c"})
        self.assertEqual((out["method"], out["path"], out["query"], out["header"]),
                         ("POST", "/some/path", {"mode": "echo", "x": "1"}, "hdr"))
        self.assertEqual(out["ce"], {}, "no ce-* attributes on a plain request")

    def test_only_exactly_application_json_bodies_become_data(self):  # as Kyma's lib/ce.py
        out = self.srv.json("POST", "/?mode=echo", "héllo".encode(), {"Content-Type": "text/plain"})
        self.assertIsNone(out["data"])
        self.assertIsNone(self.srv.json("GET", "/?mode=echo")["data"])

    def test_event_also_reads_like_a_dict(self):
        self.assertEqual(self.srv.json("GET", "/?mode=superset"), {"get": "none", "in": True, "keys": ["extensions"]})

    def test_malformed_json_is_400(self):
        status, _, _, _ = self.srv.request("POST", "/?mode=echo", "{nope", {"Content-Type": "application/json"})
        self.assertEqual(status, 400)

    def test_context_comes_from_the_environment(self):
        ctx = self.srv.json("GET", "/?mode=echo")["context"]
        self.assertEqual((ctx["function-name"], ctx["runtime"], ctx["namespace"], ctx["timeout"]),
                         ("sink", "python312", "tests", 7))

    def test_binary_cloudevent_headers_become_ce_attributes(self):
        out = self.srv.json("POST", "/?mode=echo", json.dumps({"order": 7}), {
            "Content-Type": "application/json", "ce-type": "order.created", "ce-source": "/shop",
            "ce-specversion": "1.0", "ce-id": "id-1", "ce-eventtypeversion": "v1",
            "ce-time": "2026-01-01T00:00:00Z", "Ce-MyExt": "x"})
        self.assertEqual(out["data"], {"order": 7})
        self.assertEqual(out["ce"], {
            "ce-type": "order.created", "ce-source": "/shop", "ce-specversion": "1.0", "ce-id": "id-1",
            "ce-eventtypeversion": "v1", "ce-time": "2026-01-01T00:00:00Z"})  # the SDK's attributes, no extensions

    def test_structured_cloudevent_attributes_and_data(self):
        envelope = {"specversion": "1.0", "type": "order.created", "source": "/shop", "id": "id-2",
                    "eventtypeversion": "v1", "datacontenttype": "application/json", "data": {"order": 8}}
        out = self.srv.json("POST", "/?mode=echo", json.dumps(envelope),
                            {"Content-Type": "application/cloudevents+json; charset=utf-8"})
        self.assertEqual(out["data"], {"order": 8})
        self.assertRegex(out["ce"].pop("ce-time"), r"^\d{4}-\d\d-\d\dT")  # the SDK's: now
        self.assertEqual(out["ce"], {
            "ce-specversion": "1.0", "ce-type": "order.created", "ce-source": "/shop", "ce-id": "id-2",
            "ce-eventtypeversion": "v1"})

    def test_return_values_map_to_content_types(self):
        status, ctype, body, _ = self.srv.request("GET", "/?mode=bytes")
        self.assertEqual((status, ctype, body), (200, "text/html; charset=UTF-8", b"\x00\x01\x02"))  # Bottle's
        status, _, body, _ = self.srv.request("GET", "/?mode=none")
        self.assertEqual((status, body), (200, b""))
        status, ctype, body, _ = self.srv.request("GET", "/?mode=async")
        self.assertTrue(ctype.startswith("application/json"), ctype)
        self.assertEqual(json.loads(body), {"async": True})

    def test_raising_handler_is_500_with_the_message_logged_not_sent(self):
        status, _, body, _ = self.srv.request("GET", "/?mode=raise")
        self.assertEqual(status, 500)
        self.assertNotIn(b"secret", body)
        self.assertNotIn(b"Traceback", body)
        self.srv.wait_for(r"secret-failure-detail")

    def test_bottle_http_response_sets_status_and_headers(self):
        status, ctype, body, _ = self.srv.request("GET", "/?mode=bottle")
        self.assertEqual((status, ctype, json.loads(body)), (202, "application/json", {"success": "Message accepted."}))
        status, _, body, _ = self.srv.request("GET", "/?mode=tracer")
        self.assertEqual((status, body), (200, b"traced"))

    def test_healthz_and_metrics_count_requests(self):
        self.assertEqual(self.srv.request("GET", "/healthz")[0], 200)
        before = metric(self.srv.request("GET", "/metrics")[2].decode(), 'function_calls_total{method="GET"}')
        for _ in range(3):
            self.srv.request("GET", "/?mode=text")
        status, ctype, body, _ = self.srv.request("GET", "/metrics")
        text = body.decode()
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        self.assertEqual(metric(text, 'function_calls_total{method="GET"}'), before + 3)
        self.assertEqual(metric(text, 'function_duration_seconds_count{method="GET"}'), before + 3)
        self.assertRegex(text, r'(?m)^# TYPE function_duration_seconds histogram$')
        self.assertRegex(text, r'(?m)^function_duration_seconds_bucket\{le="\+Inf",method="GET"\} \d+')
        self.assertRegex(text, r'(?m)^process_resident_memory_bytes ')
        self.assertRegex(text, r'(?m)^python_gc_collections_total\{generation="0"\} ')

    def test_connections_are_kept_alive(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        self.addCleanup(conn.close)
        sockets = set()
        for _ in range(3):
            conn.request("GET", "/?mode=text")
            resp = conn.getresponse()
            self.assertEqual((resp.status, resp.read()), (200, b"plain text"))
            self.assertNotEqual(resp.getheader("Connection"), "close")
            sockets.add(id(conn.sock))
        self.assertEqual(len(sockets), 1, "one connection for the three requests")

    def test_kyma_request_log_line_without_query(self):  # KYMA_INTERNAL_LOGGER_ENABLED: Apache combined + time
        self.srv.request("GET", "/logged/path?mode=text&secret=q", headers={"User-Agent": "ua", "Referer": "r"})
        line = self.srv.wait_for(r'^127\.0\.0\.1 - - \[\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                                 r'"GET /logged/path HTTP/1\.1" 200 10 "r" "ua" 0/\d+$').group(0)
        self.assertNotIn("secret", line)

    def test_no_bytecode_is_written(self):
        self.assertFalse(os.path.exists(os.path.join(self.srv.dir, "__pycache__")))


class LimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server({"handler.py": KITCHEN_SINK}, FUNC_TIMEOUT="1", FUNC_MEMFILE_MAX="1000")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_handler_outliving_func_timeout_is_408(self):
        start = time.monotonic()
        status, _, _, _ = self.srv.request("GET", "/?mode=sleep&s=3")
        self.assertEqual(status, 408)
        self.assertLess(time.monotonic() - start, 2.5)

    def test_408_is_counted_and_logged_once_and_the_server_carries_on(self):
        before = self.srv.request("GET", "/metrics")[2].decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/?mode=text")  # a kept-alive connection: the 408 closes it
        conn.getresponse().read()
        start = time.monotonic()
        conn.request("GET", "/timeout/once?mode=sleep&s=2")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 408)
        self.assertIn(b"<pre>Timeout while processing the function</pre>", resp.read())  # Bottle's page, as Kyma
        self.assertLess(time.monotonic() - start, 1.9)
        self.assertEqual(resp.getheader("Connection"), "close")
        self.assertEqual(self.srv.request("GET", "/?mode=text")[0], 200, "others are served meanwhile")
        self.srv.wait_for("function did not finish within 1s: GET /timeout/once")
        time.sleep(1.5)  # the handler returns: its result goes nowhere
        self.assertEqual(self.srv.request("GET", "/?mode=text")[0], 200)
        after = self.srv.request("GET", "/metrics")[2].decode()
        delta = lambda name: metric(after, name) - metric(before, name)
        self.assertEqual(delta('function_calls_total{method="GET"}'), 4)
        self.assertEqual(delta('function_failures_total{method="GET"}'), 0, "Kyma counts no time-out as a failure")
        self.assertEqual(len(re.findall(r"did not finish within 1s: GET /timeout/once", self.srv.output)), 1, self.srv.output)

    def test_async_handler_outliving_func_timeout_is_408_and_cancelled(self):
        self.assertEqual(self.srv.request("GET", "/?mode=asleep&s=5")[0], 408)
        self.srv.wait_for("asleep-cancelled")

    def test_big_bodies_are_taken_but_json_over_func_memfile_max_is_413(self):  # as Kyma's Bottle
        self.assertEqual(self.srv.request("POST", "/?mode=none", b"a" * (2 * 1024 * 1024))[0], 200)
        json_body = json.dumps(["a" * 1000])
        self.assertEqual(self.srv.request("POST", "/?mode=none", json_body, {"Content-Type": "application/json"})[0], 413)

    def test_chunked_bodies_are_read(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        try:
            conn.request("POST", "/?mode=none", body=iter([b"a" * 600_000, b"a" * 600_000]),
                         encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
            self.assertEqual(conn.getresponse().status, 200)
        finally:
            conn.close()


class KymaExamplesAndLoadingTest(unittest.TestCase):
    def start(self, files, **env):
        srv = Server(files, **env)
        self.addCleanup(srv.stop)
        return srv

    def test_kyma_hello_world_runs_unchanged(self):
        status, ctype, body, _ = self.start({"handler.py": HELLO_WORLD}).request("GET", "/")
        self.assertEqual((status, body, ctype), (200, b"Hello World!", "text/html; charset=UTF-8"))

    def test_mod_name_func_handler_and_coroutine_functions(self):
        srv = self.start({"fn.py": KITCHEN_SINK}, MOD_NAME="fn", FUNC_HANDLER="amain")
        self.assertEqual(srv.json("GET", "/"), {"coroutine": True})

    def test_a_syntax_error_is_one_line_naming_file_and_line(self):
        with self.assertRaises(AssertionError) as caught:
            self.start({"handler.py": "def main(event, context):\n    return (\n"})
        out = str(caught.exception).split(":\n", 1)[1].strip()
        self.assertIn("exit code 1", str(caught.exception))
        self.assertRegex(out, r"^cannot load the function handler\.main from \S+: \S+/handler\.py:2: SyntaxError: ")
        self.assertEqual(len(out.splitlines()), 1, out)

    def test_exits_1_when_the_handler_cannot_be_loaded(self):
        with self.assertRaisesRegex(AssertionError, r"exit code 1\)[\s\S]*no function named 'main'"):
            self.start({"handler.py": "def not_main(event, context):\n    pass\n"})


class ThreadPoolTest(unittest.TestCase):
    def test_cherrypy_numthreads_bounds_the_calls_at_once(self):  # Kyma's cheroot pool size
        srv = Server({"handler.py": KITCHEN_SINK}, CHERRYPY_NUMTHREADS="1")
        self.addCleanup(srv.stop)
        start = time.monotonic()
        calls = [threading.Thread(target=srv.request, args=("GET", "/?mode=sleep&s=0.5")) for _ in range(2)]
        for t in calls:
            t.start()
        for t in calls:
            t.join(10)
        self.assertGreaterEqual(time.monotonic() - start, 1.0, "one after the other")
        self.assertEqual(srv.request("GET", "/healthz")[0], 200)


class ShutdownTest(unittest.TestCase):
    def test_sigterm_does_not_wait_for_a_handler_past_its_timeout(self):
        srv = Server({"handler.py": KITCHEN_SINK}, FUNC_TIMEOUT="1")
        self.addCleanup(srv.stop)
        self.assertEqual(srv.request("GET", "/?mode=sleep&s=60")[0], 408)
        srv.proc.send_signal(signal.SIGTERM)
        self.assertEqual(srv.proc.wait(5), 0)

    def test_sigterm_finishes_in_flight_request_and_exits_0(self):
        srv = Server({"handler.py": KITCHEN_SINK})
        self.addCleanup(srv.stop)
        idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)  # an idle keep-alive connection
        self.addCleanup(idle.close)
        idle.request("GET", "/healthz")
        idle.getresponse().read()

        result = {}
        slow = threading.Thread(target=lambda: result.update(r=srv.request("GET", "/?mode=sleep&s=1.5")))
        slow.start()
        srv.wait_for("sleep-start")
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3  # the listener closes at serve_forever's next poll
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
            except OSError:
                break
            time.sleep(0.05)
        else:
            self.fail("still accepting connections while draining")
        self.assertTrue(slow.is_alive(), "the slow request is still in flight")
        slow.join(10)
        status, _, body, _ = result["r"]
        self.assertEqual((status, body), (200, b"slept"))
        self.assertEqual(srv.proc.wait(5), 0)


if __name__ == "__main__":
    unittest.main()
