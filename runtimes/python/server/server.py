"""Kyma-compatible function server for the python312 runtime (standard library only).

Loads `<FUNC_DIR>/<MOD_NAME>.py` and calls its `FUNC_HANDLER(event, context)` for every request.
Contract: /work/shared/design.md §3; event and context follow Kyma Serverless's Python runtime.
"""
import sys

sys.dont_write_bytecode = True  # read-only root filesystem: never write __pycache__

import collections
import email.utils
import functools
import importlib
import io
import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


def _num(name, default):
    """A numeric env var, or default when unset or not a number."""
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


FUNC_DIR = os.environ.get("FUNC_DIR", "/kubeless")
MOD_NAME = os.environ.get("MOD_NAME", "handler")
FUNC_HANDLER = os.environ.get("FUNC_HANDLER", "main")
HOST = os.environ.get("FUNC_HOST", "0.0.0.0")
PORT = int(_num("FUNC_PORT", 8080))
TIMEOUT = _num("FUNC_TIMEOUT", 180.0)
BODY_LIMIT_MB = _num("REQ_MB_LIMIT", 1)
BODY_LIMIT = int(BODY_LIMIT_MB * 1024 * 1024)

CE_ATTRS = ("ce-type", "ce-source", "ce-eventtypeversion", "ce-specversion", "ce-id", "ce-time")
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

func = None  # the user's handler, set at start-up
draining = False  # set on SIGTERM / SIGINT
state_lock = threading.Lock()  # guards `threads`
idle = set()  # connections waiting for their next request (closed when draining; see Handler)
running = {}  # a handler call (its key) → (deadline (time.monotonic()), its connection (Handler))
threads = set()  # connection threads: a SIGTERM waits for them, except for those left in a timed-out handler


# Request log lines are written in batches (within LOG_DELAY s: one write for all the lines of that
# time rather than a write and flush each, which cost a system call per request); other messages
# go out at once, after the lines before them.
LOG_DELAY = 0.01
_pending = collections.deque()  # request log lines not yet written (append/popleft are thread-safe)
_pending_wake = threading.Event()  # set while lines wait for the log writer thread
_write_lock = threading.Lock()  # whole lines, in order


def log(line):
    """A message, written now."""
    _pending.append(line)
    flush_log()


def log_batched(line):
    """A request's log line, written within LOG_DELAY."""
    _pending.append(line)
    if not _pending_wake.is_set():  # a plain read: only the first line of a batch pays for set()
        _pending_wake.set()


def flush_log():
    with _write_lock:
        lines = []
        try:
            while True:
                lines.append(_pending.popleft())
        except IndexError:
            pass
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()


def log_writer():
    while True:
        _pending_wake.wait()
        time.sleep(LOG_DELAY)
        _pending_wake.clear()  # lines added from now on set it again
        flush_log()


def once_a_second(format_time):
    """`format_time(second)` for the current second, formatted once a second (the pair is
    replaced whole, so threads never see one second's text under another's number)."""
    cache = [(-1, "")]

    def get():
        second = int(time.time())
        if cache[0][0] != second:
            cache[0] = (second, format_time(second))
        return cache[0][1]

    return get


timestamp = once_a_second(lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s)))  # log lines
http_date = once_a_second(lambda s: email.utils.formatdate(s, usegmt=True))  # the Date header


def media_type(content_type):
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_type(mtype):
    return mtype == JSON or (mtype.startswith("application/") and mtype.endswith("+json"))


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# The event object (Kyma's shape) and its parts.


class Query(dict):
    """Query parameters (last value wins), like Bottle's FormsDict: `query.id` is '' when missing."""

    def __init__(self, query_string):
        self._pairs = parse_qsl(query_string, keep_blank_values=True) if query_string else []
        super().__init__(self._pairs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name, "")

    def getall(self, name):
        return [v for k, v in self._pairs if k == name]


class Request:
    """event['extensions']['request']: the parts of Bottle's request that Kyma handlers use."""

    def __init__(self, method, path, query_string, headers, data, remote_addr):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers  # case-insensitive: headers.get('Content-Type')
        self.data = data  # the raw body (bytes)
        self.remote_addr = remote_addr

    @functools.cached_property
    def query(self):  # parsed on first use
        return Query(self.query_string)

    @property
    def body(self):
        return io.BytesIO(self.data)

    @property
    def content_type(self):
        return self.headers.get("Content-Type", "")

    @property
    def content_length(self):
        return len(self.data)

    @property
    def json(self):
        if is_json_type(media_type(self.content_type)) and self.data:
            return json.loads(self.data)
        return None

    @property
    def url(self):
        host = self.headers.get("Host", "localhost")
        return f"http://{host}{self.path}" + (f"?{self.query_string}" if self.query_string else "")

    def get_header(self, name, default=None):
        return self.headers.get(name, default)


class Span:
    """Kyma passes an OpenTelemetry tracer; this stand-in keeps handlers that create spans working."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):  # set_attribute, add_event, set_status, record_exception, end, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None

    def is_recording(self):
        return False


class Tracer:
    def start_as_current_span(self, *args, **kwargs):
        return Span()

    def start_span(self, *args, **kwargs):
        return Span()


TRACER = Tracer()


def _decode(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _post_cloud_event(body):
    import urllib.request  # only when a handler publishes events

    url = os.environ.get("PUBLISHER_PROXY_ADDRESS")
    if not url:
        raise RuntimeError("PUBLISHER_PROXY_ADDRESS is not set: cannot publish CloudEvents")
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/cloudevents+json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


def _data_content_type(data):
    if isinstance(data, str):
        return "text/plain"
    if isinstance(data, (bytes, bytearray)):
        return "application/octet-stream"
    return JSON


class Event(dict):
    """The handler's `event`: a dict (data, extensions, ce-*) with Kyma's helper methods."""

    tracer = TRACER

    def __init__(self, request, names=None):
        """`names`: the request's header names in lower case, when the caller has them."""
        super().__init__(data=None, extensions={"request": request})
        headers = request.headers
        if names is None:
            names = {name.lower() for name in headers.keys()}
        mtype = media_type(request.content_type) if "content-type" in names else ""
        raw = request.data
        if mtype == "application/cloudevents+json" and raw:  # structured mode
            try:
                ce = json.loads(raw)
            except ValueError as err:
                raise HttpError(400, f"Invalid JSON CloudEvent: {err}")
            if not isinstance(ce, dict):
                raise HttpError(400, "CloudEvent must be a JSON object")
            self.update(dict.fromkeys(CE_ATTRS))
            self.update((f"ce-{k}", v) for k, v in ce.items() if k not in ("data", "data_base64"))
            if "data_base64" in ce:
                import base64

                self["data"] = base64.b64decode(ce["data_base64"])
            else:
                self["data"] = ce.get("data")
            return
        if "ce-specversion" in names or ("ce-type" in names and "ce-source" in names):  # binary mode
            self.update(dict.fromkeys(CE_ATTRS))
            self.update((k.lower(), v) for k, v in headers.items() if k.lower().startswith("ce-"))
            self["ce-datacontenttype"] = headers.get("Content-Type")
        if raw:
            if is_json_type(mtype):
                try:
                    self["data"] = json.loads(raw)
                except ValueError as err:
                    raise HttpError(400, f"Invalid JSON body: {err}")
            else:
                self["data"] = _decode(raw)

    def emitCloudEvent(self, type, source, data, optionalCloudEventAttributes=None):
        """Builds a CloudEvent and sends it (structured mode) to the eventing publisher proxy."""
        import uuid
        from datetime import datetime, timezone

        ce = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "time": datetime.now(timezone.utc).isoformat(),
            "type": type,
            "source": source,
            "datacontenttype": _data_content_type(data),
        }
        ce.update(optionalCloudEventAttributes or {})
        if isinstance(data, (bytes, bytearray)):
            import base64

            ce["data_base64"] = base64.b64encode(data).decode()
        else:
            ce["data"] = data
        return _post_cloud_event(json.dumps(ce, default=str).encode())

    def publishCloudEvent(self, data):
        log('"publishCloudEvent" is deprecated: use "emitCloudEvent"')
        return _post_cloud_event(json.dumps(data, default=str).encode())

    def buildResponseCloudEvent(self, event_id, event_type, event_data):
        log('"buildResponseCloudEvent" is deprecated: use "emitCloudEvent"')
        return {
            "type": event_type,
            "source": self.get("ce-source"),
            "eventtypeversion": self.get("ce-eventtypeversion"),
            "specversion": self.get("ce-specversion"),
            "id": event_id,
            "data": event_data,
            "datacontenttype": _data_content_type(event_data),
        }


CONTEXT = {  # the environment does not change: read once
    "function-name": os.environ.get("FUNC_NAME"),
    "runtime": os.environ.get("FUNC_RUNTIME"),
    "namespace": os.environ.get("SERVICE_NAMESPACE"),
    "timeout": TIMEOUT,
    "memory-limit": os.environ.get("FUNC_MEMORY_LIMIT"),
    "body-size-limit": BODY_LIMIT_MB,
}


def function_context():
    return CONTEXT.copy()  # a handler may change its own


# --------------------------------------------------------------------------------------------
# Calling the handler.

_loop = None
_loop_lock = threading.Lock()


def _await(awaitable, conn):
    """Runs a coroutine on the one shared event loop thread and waits for its result."""
    global _loop
    import asyncio  # only for async handlers

    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="asyncio", daemon=True).start()
    if not asyncio.iscoroutine(awaitable):

        async def wrap():
            return await awaitable

        awaitable = wrap()
    conn.future = asyncio.run_coroutine_threadsafe(awaitable, _loop)  # the watchdog cancels it on time-out
    return conn.future.result()


class TimedOut(Exception):
    """The watchdog has answered this request with 408 while its handler ran on."""


def call_function(conn, event, context):
    """Calls the handler in the connection's own thread (no hand-off to another thread, which would
    cost more than the rest of the request together); the watchdog answers 408 if it outlives
    FUNC_TIMEOUT. Raises TimedOut when it did, with the 408 sent."""
    conn.future = None
    call = object()  # this call's key: the connection's next call is another one
    running[call] = (time.monotonic() + TIMEOUT, conn)  # dict stores and pops are atomic under the GIL
    error = result = None
    try:
        result = func(event, context)
        if hasattr(result, "__await__"):
            result = _await(result, conn)
    except BaseException as err:  # SystemExit and KeyboardInterrupt included: they are the handler's
        error = err
    timed_out = running.pop(call, None) is None  # the watchdog took it, and answers 408
    if timed_out:
        conn.answered_408.wait()  # the watchdog is sending it: closing under it would lose it
        raise TimedOut()
    if error is not None:
        raise error
    return result


def watchdog():
    """One thread for all requests: answers 408 for each whose handler outlives FUNC_TIMEOUT, and
    lets SIGTERM stop waiting for it (its thread carries on until the handler returns)."""
    interval = min(max(TIMEOUT / 20, 0.02), 1.0)  # how late a 408 may be
    while True:
        time.sleep(interval)
        now = time.monotonic()
        late = []
        for call, (deadline, conn) in list(running.items()):  # list(): one step under the GIL
            if deadline <= now:
                conn.answered_408 = threading.Event()  # before the pop: the handler's thread waits on it
                if running.pop(call, None) is not None:  # else the handler returned meanwhile
                    late.append(conn)
        with state_lock:
            for conn in late:
                threads.discard(conn.thread)
        for conn in late:
            try:
                conn.time_out()
            except Exception as err:
                log(f"internal error answering 408: {err!r}")
            finally:
                conn.answered_408.set()


def is_response(value):
    """A Bottle HTTPResponse (the real one or server/compat/bottle.py's stand-in)."""
    return hasattr(value, "status_code") and hasattr(value, "body") and hasattr(value, "headers")


def render(value):
    """A handler's return value as (status, content type, body bytes, extra headers)."""
    if type(value) is str:  # the common case first
        return 200, TEXT, value.encode("utf-8"), {}
    if is_response(value):
        _, ctype, body, _ = render(value.body if value.body not in ("", b"") else None)
        headers = {k: v for k, v in value.headers.items()}
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), ctype)
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
        return int(value.status_code), ctype, body, headers
    if value is None:
        return 200, None, b"", {}
    if isinstance(value, str):
        return 200, TEXT, value.encode("utf-8"), {}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return 200, "application/octet-stream", bytes(value), {}
    return 200, f"{JSON}; charset=utf-8", json.dumps(value).encode("utf-8"), {}


# --------------------------------------------------------------------------------------------
# Metrics (Prometheus text format).

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
metrics_lock = threading.Lock()
by_code = {}  # status code → [count, sum, counts per bucket (not cumulative; +Inf last)]
failures = 0
_NO_BUCKETS = len(BUCKETS)


def observe(code, seconds):
    i = 0
    while i < _NO_BUCKETS and seconds > BUCKETS[i]:
        i += 1
    with metrics_lock:
        m = by_code.get(code)
        if m is None:
            m = by_code[code] = [0, 0.0, [0] * (_NO_BUCKETS + 1)]
        m[0] += 1
        m[1] += seconds
        m[2][i] += 1


def count_failure():
    global failures
    with metrics_lock:
        failures += 1


def render_metrics():
    with metrics_lock:
        codes = sorted(by_code)
        lines = [
            "# HELP function_calls_total Number of requests to the function, by HTTP status code.",
            "# TYPE function_calls_total counter",
            *(f'function_calls_total{{code="{c}"}} {by_code[c][0]}' for c in codes),
            "# HELP function_failures_total Number of handler invocations that raised or timed out.",
            "# TYPE function_failures_total counter",
            f"function_failures_total {failures}",
            "# HELP function_duration_seconds Duration of requests to the function, by HTTP status code.",
            "# TYPE function_duration_seconds histogram",
        ]
        for c in codes:
            count, total, buckets = by_code[c]
            cumulative = 0
            for le, n in zip(BUCKETS, buckets):
                cumulative += n
                lines.append(f'function_duration_seconds_bucket{{code="{c}",le="{le}"}} {cumulative}')
            lines += [
                f'function_duration_seconds_bucket{{code="{c}",le="+Inf"}} {count}',
                f'function_duration_seconds_sum{{code="{c}"}} {total}',
                f'function_duration_seconds_count{{code="{c}"}} {count}',
            ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The server.


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True

    future = None  # an async handler's, while it runs
    answered_408 = None  # set by the watchdog when it answers 408

    def version_string(self):
        return "fnbuild"

    def setup(self):
        super().setup()
        self.thread = threading.current_thread()

    # `idle` goes without the lock: set.add and set.discard are atomic under the GIL, and a
    # connection joins it before it looks at `draining`, which drain() sets before it looks at
    # `idle`: either drain() sees the connection, or the connection sees `draining`.
    def handle_one_request(self):
        idle.add(self)
        if draining:
            idle.discard(self)
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        finally:
            idle.discard(self)

    def parse_request(self):  # a request line arrived: this connection is no longer idle
        idle.discard(self)
        return super().parse_request()

    def log_request(self, code="-", size="-"):
        pass  # handle_request() logs requests itself, with their duration

    def log_error(self, format, *args):
        log(f"{self.address_string()} {format % args}")

    def head(self, status, ctype, length, headers=None):
        """A response's status line and headers (the Date to the second, formatted once a second)."""
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}\r\n"
                 f"Server: fnbuild\r\nDate: {http_date()}\r\n"]
        if ctype:
            lines.append(f"Content-Type: {ctype}\r\n")
        for name, value in (headers or {}).items():
            if name.lower() == "connection" and str(value).lower() == "close":
                self.close_connection = True  # a handler's own `Connection: close` (as send_header())
                continue
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {length}\r\n")
        if draining or self.close_connection:
            lines.append("Connection: close\r\n")
            self.close_connection = True
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def send(self, status, ctype=None, body=b"", headers=None):
        """The whole response in one write (BaseHTTPRequestHandler sends the head and the body
        in two, a system call more per request)."""
        head = self.head(status, ctype, len(body), headers)
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def handle_request(self):
        path, _, query = self.path.partition("?")
        if self.command in ("GET", "HEAD"):  # probes: neither logged nor counted
            if path == "/healthz":
                return self.send(200, TEXT, b"OK")
            if path == "/metrics":
                return self.send(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics().encode())
            if path == "/favicon.ico":
                return self.send(204)
        self.start = time.perf_counter()
        self.log_path = path
        try:
            status, ctype, body, headers = self.call(path, query)
        except TimedOut:  # the watchdog has answered and closes the connection
            self.close_connection = True
            return
        except Exception as err:  # a fault of the server, not of the handler
            log(f"internal error: {self.command} {path}: {err!r}")
            status, ctype, body, headers = 500, TEXT, b"Internal server error", {}
        self.count(status)  # before sending: whoever has the response finds it counted
        self.send(status, ctype, body, headers)
        if status == 413:
            self.linger()

    def count(self, status):
        """The request in /metrics and its line in the log."""
        seconds = time.perf_counter() - self.start
        observe(status, seconds)
        log_batched(f"{timestamp()} {self.command} {self.log_path} {status} {seconds * 1000:.1f}ms")

    def time_out(self):
        """Answers 408 and closes the connection while the handler runs on (on the watchdog's thread;
        this connection's own thread is in the handler and leaves the connection alone)."""
        if self.future is not None:
            self.future.cancel()
        count_failure()
        log(f"function did not finish within {TIMEOUT:g}s: {self.command} {self.log_path}")
        self.count(408)
        body = f"Function did not finish within {TIMEOUT:g}s".encode()
        self.close_connection = True
        head = self.head(408, TEXT, len(body))
        try:  # never blocks the watchdog: the few bytes fit in an idle connection's send buffer
            self.connection.send(head if self.command == "HEAD" else head + body, socket.MSG_DONTWAIT)
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def call(self, path, query):
        """Runs the handler for this request; returns (status, content type, body, headers)."""
        try:
            names = {name.lower() for name in self.headers.keys()}  # one pass, for cheap tests
            body = self.read_body(names)
            request = Request(self.command, path, query, self.headers, body, self.client_address[0])
            event = Event(request, names)
        except HttpError as err:
            if err.status == 413:
                self.close_connection = True  # the rest of the body is not read
            return err.status, TEXT, str(err).encode(), {}
        try:
            result = call_function(self, event, function_context())
        except TimedOut:
            raise
        except BaseException as err:
            if not is_response(err):  # Bottle lets handlers `raise HTTPResponse(...)` too
                import traceback

                count_failure()
                log(f"function failed: {self.command} {path}: {err!r}\n{''.join(traceback.format_exception(err)).rstrip()}")
                return 500, TEXT, b"Internal server error", {}
            result = err
        try:
            return render(result)
        except Exception as err:
            count_failure()
            log(f"function result cannot be sent: {self.command} {path}: {err!r}")
            return 500, TEXT, b"Internal server error", {}

    def handle_expect_100(self):  # refuse too large bodies before they are sent
        try:
            if int(self.headers.get("Content-Length") or 0) > BODY_LIMIT:
                return True  # no "100 Continue": call() answers 413
        except ValueError:
            pass
        return super().handle_expect_100()

    def linger(self):
        """Lingering close: after answering without reading the whole body, discard what the client
        still sends (for a while) so that closing does not reset the connection under the response."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.connection.recv(1 << 16):
                pass
        except OSError:
            pass

    def read_body(self, names):
        if "transfer-encoding" in names and "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, size = [], 0
            while True:
                try:
                    n = int(self.rfile.readline(1024).split(b";")[0], 16)
                except ValueError:
                    raise HttpError(400, "Invalid chunked body")
                if n == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size += n
                if size > BODY_LIMIT:
                    raise HttpError(413, f"Request body larger than {BODY_LIMIT_MB:g} MB")
                chunks.append(self.rfile.read(n))
                self.rfile.readline(3)
        if "content-length" not in names:
            return b""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "Invalid Content-Length")
        if length > BODY_LIMIT:
            raise HttpError(413, f"Request body larger than {BODY_LIMIT_MB:g} MB")
        return self.rfile.read(length) if length > 0 else b""

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_request


class Server(ThreadingHTTPServer):
    """A thread per connection, as ThreadingHTTPServer; main() waits for them on SIGTERM, except for
    those left in a handler that timed out (daemon threads, so those do not hold up the exit)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def process_request(self, request, client_address):
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with state_lock:
            threads.add(thread)
        try:
            thread.start()
        except BaseException:
            with state_lock:
                threads.discard(thread)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with state_lock:
                threads.discard(threading.current_thread())

    def wait_for_connections(self):
        """Waits for the connection threads to end (those still answering a request, after SIGTERM)."""
        while True:
            with state_lock:
                thread = next(iter(threads), None)
            if thread is None:
                return
            thread.join(0.1)  # the watchdog may give up on it meanwhile

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if not isinstance(err, ConnectionError):  # a client that went away is no news
            log(f"internal error serving {client_address[0]}: {err!r}")


def load_function():
    sys.path.insert(0, FUNC_DIR)
    # Kyma handlers may `from bottle import HTTPResponse`: a stand-in, after any installed Bottle.
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat"))
    module = importlib.import_module(MOD_NAME)
    fn = getattr(module, FUNC_HANDLER, None)
    if not callable(fn):
        raise AttributeError(f"{module.__file__} has no function named {FUNC_HANDLER!r}")
    return fn


def main():
    global func
    start = time.perf_counter()
    try:
        func = load_function()
    except BaseException as err:
        import traceback

        log(f"cannot load the function from {FUNC_DIR}: {err!r}\n{''.join(traceback.format_exception(err)).rstrip()}")
        sys.exit(1)

    server = Server((HOST, PORT), Handler)

    def drain(signum, frame):
        global draining
        if draining:
            return
        draining = True
        for handler in list(idle):  # wake connections blocked waiting for a next request
            try:
                handler.connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        log(f"{signal.Signals(signum).name} received: finishing in-flight requests")
        threading.Thread(target=server.shutdown).start()  # shutdown() waits for serve_forever()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()
    threading.Thread(target=log_writer, name="log", daemon=True).start()
    host, port = server.server_address[:2]
    log(f"function {MOD_NAME}.{FUNC_HANDLER} loaded in {(time.perf_counter() - start) * 1000:.1f}ms; listening on {host}:{port}")
    server.serve_forever(poll_interval=0.2)  # how soon a SIGTERM stops accepting
    server.server_close()  # closes the listener
    server.wait_for_connections()  # in-flight requests finish
    log("server stopped")


if __name__ == "__main__":
    main()
