"""A handler's result as the HTTP answer Kyma's server (Bottle under cheroot) gives for it.

The common results (str, dict, bytes, None, an exception) are rendered here directly, byte for byte
as Bottle renders them; every other (HTTPResponse returned or raised, HTTPError, lists, generators,
files, a method Kyma does not route, a time-out) goes through a real Bottle app set up as Kyma's
(its catch-all route, its 500 handler), so that the answer is Bottle's own.
"""
import json
import threading

from . import event as events

HTML = "text/html; charset=UTF-8"  # Bottle's default Content-Type
INTERNAL_ERROR = (500, [("Content-Type", HTML)], b"Internal server error")
ROUTED = ("GET", "POST", "PATCH", "DELETE", "HEAD")  # Kyma's catch-all route (HEAD: Bottle's GET)

_app = None
_app_lock = threading.Lock()


def app():
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                bottle = events.bottle()
                a = bottle.Bottle(catchall=True)

                def route():
                    result = bottle.request.environ["fnbuild.result"]
                    if hasattr(result, "headers") and "content-type" in result.headers:
                        bottle.response.content_type = result.headers["content-type"]
                    if isinstance(result, BaseException):
                        raise result
                    return result

                a.route("/<:re:.*>", method=["GET", "POST", "PATCH", "DELETE"], callback=route)
                a.error(500)(lambda err: "Internal server error")
                _app = a
    return _app


class _Errors:
    """wsgi.errors: Bottle writes a failing handler's traceback there; kept for our log."""

    def __init__(self):
        self.text = []

    def write(self, text):
        self.text.append(text)

    def flush(self):
        pass


def through_bottle(environ, result, log=None):
    """(status, [(name, value)], body) as Kyma's Bottle app answers with `result`."""
    bottle = events.bottle()
    env = dict(environ)
    env["fnbuild.result"] = result
    env["wsgi.errors"] = errors = _Errors()
    env["bottle.request.body"].seek(0)
    started = []
    try:
        chunks = app().wsgi(env, lambda status, headers, exc_info=None: started.append((status, headers)))
        body = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
    finally:
        try:  # thread-local: a handler's bottle.request must not see an earlier request
            del bottle.request.environ
        except AttributeError:
            pass
    if errors.text and log:
        log("".join(errors.text).rstrip())
    status, headers = started[0]
    return int(status.split(" ", 1)[0]), headers, body


def render(environ, result, log=None):
    """A handler's result as (status, [(header, value)], body bytes)."""
    kind = type(result)
    if kind is str:
        return 200, [("Content-Type", HTML)], result.encode("utf-8")
    if kind is dict:
        try:
            return 200, [("Content-Type", "application/json")], json.dumps(result).encode("utf-8")
        except (TypeError, ValueError):
            return INTERNAL_ERROR
    if kind is bytes:
        return 200, [("Content-Type", HTML)], result
    if result is None:
        return 200, [("Content-Type", HTML)], b""
    return through_bottle(environ, result, log)
