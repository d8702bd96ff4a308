"""Kyma-compatible function server for the python312 runtime.

Loads `<FUNC_DIR>/<MOD_NAME>.py` and calls its `FUNC_HANDLER(event, context)` for every request,
answering as Kyma's python312 server (Bottle under cheroot) does: the ground truth is
kyma-project/serverless components/runtimes/python312, and test/kyma/ holds its recorded answers.
The HTTP side is the standard library's (http.server, a thread per connection, the handler in it);
Bottle, prometheus_client, the CloudEvents SDK and OpenTelemetry are the runtime layer's and are
imported when first needed (fnserver/), none at start-up unless TRACE_COLLECTOR_ENDPOINT is set.
"""
import sys

sys.dont_write_bytecode = True  # read-only root filesystem: never write __pycache__

import collections
import email.utils
import importlib
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fnserver import event as events
from fnserver import metrics, respond, tracing


def _num(name, default):
    """A numeric env var, or default when unset or not a number."""
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


# The function's directory: ours, else Kyma's FUNCTION_PATH, else its deprecated KUBELESS_INSTALL_VOLUME.
FUNC_DIR = (os.environ.get("FUNC_DIR") or os.environ.get("FUNCTION_PATH")
            or os.environ.get("KUBELESS_INSTALL_VOLUME") or "/kubeless")
MOD_NAME = os.environ.get("MOD_NAME", "handler")
FUNC_HANDLER = os.environ.get("FUNC_HANDLER", "main")
HOST = os.environ.get("FUNC_HOST", "0.0.0.0")
PORT = int(_num("FUNC_PORT", 8080))
TIMEOUT = _num("FUNC_TIMEOUT", 180.0)
MEMFILE_MAX = int(_num("FUNC_MEMFILE_MAX", 100 * 1024 * 1024))  # Bottle's: JSON bodies above → 413
events.memfile_max = MEMFILE_MAX
NUMTHREADS = max(1, int(_num("CHERRYPY_NUMTHREADS", 50)))  # Kyma's pool: requests served at once
REQUEST_LOG = bool(os.environ.get("KYMA_INTERNAL_LOGGER_ENABLED"))  # Apache lines, as Kyma's; none by default
TRACE_ENDPOINT = os.environ.get("TRACE_COLLECTOR_ENDPOINT")
HTML = respond.HTML

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


http_date = once_a_second(lambda s: email.utils.formatdate(s, usegmt=True))  # the Date header
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
apache_time = once_a_second(lambda s: time.strftime(f"%d/{MONTHS[time.localtime(s).tm_mon - 1]}/%Y:%H:%M:%S %z", time.localtime(s)))


class BadRequest(Exception):
    """A request that cannot be read (a broken chunked body, an invalid Content-Length)."""


CONTEXT = {  # the environment does not change: read once
    "function-name": os.environ.get("FUNC_NAME"),
    "namespace": os.environ.get("SERVICE_NAMESPACE"),
    "timeout": TIMEOUT,
    "runtime": os.environ.get("FUNC_RUNTIME"),
    "memory-limit": os.environ.get("FUNC_MEMORY_LIMIT"),
    "body-size-limit": MEMFILE_MAX,  # bytes (Kyma's Python runtime; the Node one says MB)
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


# --------------------------------------------------------------------------------------------
# The server.


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True

    future = None  # an async handler's, while it runs
    answered_408 = None  # set by the watchdog when it answers 408
    environ = None  # the current function request's WSGI environ

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
        pass  # answer() logs requests itself (KYMA_INTERNAL_LOGGER_ENABLED)

    def log_error(self, format, *args):
        log(f"{self.address_string()} {format % args}")

    def head(self, status, headers, length):
        """A response's status line and headers (the Date to the second, formatted once a second)."""
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}\r\n"
                 f"Server: fnbuild\r\nDate: {http_date()}\r\n"]
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length" or lower == "transfer-encoding":
                continue  # framed here
            if lower == "connection" and str(value).lower() == "close":
                self.close_connection = True  # a handler's own `Connection: close` (as send_header())
                continue
            lines.append(f"{name}: {value}\r\n")
        if status != 204 and status != 304 and status >= 200:
            lines.append(f"Content-Length: {length}\r\n")
        if draining or self.close_connection:
            lines.append("Connection: close\r\n")
            self.close_connection = True
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def answer(self, status, headers, body):
        """The whole response in one write (BaseHTTPRequestHandler sends the head and the body in
        two, a system call more per request). HEAD: Bottle's Content-Length, no body."""
        length = len(body)
        if self.command == "HEAD":
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), length)
            body = b""
        self.wfile.write(self.head(status, headers, length) + body)
        if REQUEST_LOG:
            self.log_apache(status, length)

    def log_apache(self, status, size):
        """wsgi-request-logger's ApacheFormatter() line, Kyma's request log."""
        us = int((time.perf_counter() - self.start) * 1e6)
        path = (self.environ or {}).get("PATH_INFO") or self.path.partition("?")[0]
        log_batched(f'{self.client_address[0]} - - [{apache_time()}] "{self.command} {path} {self.request_version}" '
                    f'{status} {size} "{self.headers.get("Referer", "")}" "{self.headers.get("User-Agent", "")}" '
                    f"{us // 1000000}/{us % 1000000}")

    def handle_request(self):
        self.start = time.perf_counter()
        self.environ = None
        if self.command in ("GET", "HEAD"):  # Kyma's own routes
            path = self.path.partition("?")[0]
            if path == "/healthz":
                self.answer(200, PROBE_HEADERS, b"OK")
                global warming
                if warming is None:
                    warming = threading.Thread(target=warm_up, name="warm-up", daemon=True)
                    warming.start()
                return
            if path == "/metrics":
                ctype, body = metrics.render()
                return self.answer(200, [("Content-Type", ctype)], body)
            if path == "/favicon.ico":
                return self.answer(204, (), b"")
        try:
            status, headers, body = self.call()
        except TimedOut:  # the watchdog has answered and closes the connection
            self.close_connection = True
            return
        except BadRequest as err:
            self.close_connection = True
            status, headers, body = 400, [("Content-Type", HTML)], str(err).encode()
        except Exception as err:  # a fault of the server, not of the handler
            log(f"internal error: {self.command} {self.path}: {err!r}")
            status, headers, body = respond.INTERNAL_ERROR
        self.answer(status, headers, body)

    def call(self):
        """Runs the handler for this request; returns (status, headers, body)."""
        body = self.read_body()
        environ = self.environ = events.environ_of(self.command, self.path, self.request_version, self.headers, body,
                                                   self.client_address, self.server.server_port)
        if self.command not in respond.ROUTED:
            return respond.through_bottle(environ, None)  # Bottle's 405, as Kyma's route has no other methods
        bottle = events.bottle()
        try:
            event = events.Event(events.request_class()(environ), tracing._tracer if tracing.exporting else None)
        except bottle.HTTPResponse as err:  # Bottle's 400 (invalid JSON) or 413 (JSON over FUNC_MEMFILE_MAX)
            return respond.through_bottle(environ, err)
        except Exception as err:  # e.g. a CloudEvent the SDK refuses
            return self.failed(err, "cannot build the event")
        method = self.command
        metrics.called(method)
        span = tracing.ServerSpan(method, environ["PATH_INFO"], self.headers) if tracing.exporting else None
        self.span = span
        start = time.perf_counter()
        with slots:  # CHERRYPY_NUMTHREADS calls at once, as Kyma's thread pool
            try:
                result = call_function(self, event, function_context())
            except TimedOut:
                raise
            except BaseException as err:  # SystemExit and KeyboardInterrupt included: they are the handler's
                result = err
            finally:
                if tracing._local.__dict__.get("token") is not None:
                    tracing.detach_request()
        metrics.finished(method, time.perf_counter() - start, isinstance(result, Exception))
        if isinstance(result, BaseException) and not isinstance(result, bottle.HTTPResponse):
            out = self.failed(result, "function failed")
        else:
            try:
                out = respond.render(environ, result, log)
            except Exception as err:
                out = self.failed(err, "function result cannot be sent")
        if span is not None:
            span.end(out[0])
        return out

    def failed(self, err, what):
        import traceback

        log(f"{what}: {self.command} {self.path}: {err!r}\n{''.join(traceback.format_exception(err)).rstrip()}")
        return respond.INTERNAL_ERROR

    def time_out(self):
        """Answers 408 (Bottle's page, as Kyma) and closes the connection while the handler runs on
        (on the watchdog's thread; this connection's own thread is in the handler and leaves the
        connection alone)."""
        if self.future is not None:
            self.future.cancel()
        log(f"function did not finish within {TIMEOUT:g}s: {self.command} {self.path}")
        metrics.finished(self.command, time.perf_counter() - self.start, False)
        bottle = events.bottle()
        status, headers, body = respond.through_bottle(self.environ, bottle.HTTPError(408, "Timeout while processing the function"))
        if getattr(self, "span", None) is not None:
            self.span.span.set_attribute("http.response.status_code", 408)
            self.span.span.end()
        self.close_connection = True
        head = self.head(status, headers, len(body))
        try:  # never blocks the watchdog: the few kB fit in an idle connection's send buffer
            self.connection.send(head if self.command == "HEAD" else head + body, socket.MSG_DONTWAIT)
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if REQUEST_LOG:
            self.log_apache(status, len(body))

    def read_body(self):
        """The whole body (Kyma's server reads it whole too; there is no size limit on Kyma's
        Python runtime: FUNC_MEMFILE_MAX only bounds what Bottle parses as JSON or forms)."""
        headers = self.headers
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                try:
                    n = int(self.rfile.readline(1024).split(b";")[0], 16)
                except ValueError:
                    raise BadRequest("Invalid chunked body")
                if n == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(n))
                self.rfile.readline(3)
        length = headers.get("Content-Length")
        if not length:
            return b""
        try:
            length = int(length)
        except ValueError:
            raise BadRequest("Invalid Content-Length")
        return self.rfile.read(length) if length > 0 else b""

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_request

    def __getattr__(self, name):  # any other method: Bottle's 405 as well
        if name.startswith("do_"):
            return self.handle_request
        raise AttributeError(name)


PROBE_HEADERS = [("Content-Type", HTML)]
warming = None  # the warm-up thread, once started
slots = threading.BoundedSemaphore(NUMTHREADS)


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
    module = importlib.import_module(MOD_NAME)
    fn = getattr(module, FUNC_HANDLER, None)
    if not callable(fn):
        raise AttributeError(f"{module.__file__} has no function named {FUNC_HANDLER!r}")
    return fn


def where(err):
    """`file:line: ` of a load error: the syntax error's, else the innermost frame in the function's files."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}: "
    import traceback

    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.startswith(FUNC_DIR)]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""


def warm_up():
    """Bottle and our app on it, imported after the first probe answered: the server is up at once,
    and the first function request finds them loaded (prometheus_client waits for the first scrape)."""
    try:
        respond.app()
    except Exception as err:
        log(f"cannot load Bottle: {err!r}")


def main():
    global func
    start = time.perf_counter()
    if TRACE_ENDPOINT:
        tracing.setup(TRACE_ENDPOINT)  # before the function: its `requests` is instrumented
    try:
        func = load_function()
    except BaseException as err:
        log(f"cannot load the function {MOD_NAME}.{FUNC_HANDLER} from {FUNC_DIR}: {where(err)}{type(err).__name__}: {err.msg if isinstance(err, SyntaxError) else err}")
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
