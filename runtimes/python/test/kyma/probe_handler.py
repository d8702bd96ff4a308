"""A handler exercising what Kyma's python312 runtime gives a function; `?m=` picks the behaviour.
Runs unchanged on Kyma's server (components/runtimes/python312) and on ours (see README.md)."""
import base64
import os
import time

import bottle
from bottle import HTTPError, HTTPResponse


def describe(v):
    """A JSON-able description of any value (bytes, files, FormsDicts)."""
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, bottle.FileUpload):
        return {"file": v.filename, "name": v.name, "raw": v.raw_filename, "type": v.content_type, "data": v.file.read().decode()}
    if isinstance(v, bottle.MultiDict):
        return {k: [describe(x) for x in v.getall(k)] for k in sorted(v.keys())}
    if isinstance(v, dict):
        return {str(k): describe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [describe(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return {"type": type(v).__name__}


async def later():
    return "later"


def attempt(fn):
    try:
        return describe(fn())
    except Exception as err:
        return {"error": type(err).__name__}


def main(event, context):
    req = event["extensions"]["request"]
    m = req.query.m
    q = req.query
    if m == "string": return "hello"
    if m == "html": return "<p>hi</p>"
    if m == "empty": return ""
    if m == "dict": return {"a": 1, "b": [True, None]}
    if m == "dict-empty": return {}
    if m == "list-str": return ["a", "b"]
    if m == "list-dict": return [{"a": 1}]
    if m == "list-empty": return []
    if m == "tuple": return ("x", "y")
    if m == "bytes": return b"abc"
    if m == "bytearray": return bytearray(b"abc")
    if m == "none": return None
    if m == "int": return 42
    if m == "zero": return 0
    if m == "float": return 1.5
    if m == "true": return True
    if m == "false": return False
    if m == "set": return {"a"}
    if m == "generator": return (s for s in ["g1", "g2"])
    if m == "unicode": return "héllo ✓"
    if m == "file": return open(__file__, "rb")
    if m == "response-dict": return HTTPResponse(body={"success": "Message accepted."}, status=202, headers={"Content-Type": "application/json"})
    if m == "response-dict-notype": return HTTPResponse(body={"a": 1}, status=201)
    if m == "response-str": return HTTPResponse(body="created", status=201, headers={"X-Custom": "c"})
    if m == "response-status": return HTTPResponse(status=204)
    if m == "response-status-str": return HTTPResponse(status="418 I'm a teapot", body="tea")
    if m == "response-bad-status": return HTTPResponse(status=999)
    if m == "response-set": return HTTPResponse(body={"x"})
    if m == "response-cookie":
        r = HTTPResponse(body="c")
        r.set_cookie("session", "abc", path="/", httponly=True)
        return r
    if m == "response-redirect": return HTTPResponse(status=302, headers={"Location": "/elsewhere"})
    if m == "raise-response": raise HTTPResponse(body="raised", status=202)
    if m == "raise-error": raise HTTPError(403, "forbidden here")
    if m == "return-error": return HTTPError(404, "not here")
    if m == "redirect": bottle.redirect("/there")
    if m == "abort": bottle.abort(401, "go away")
    if m == "throw": raise ValueError("secret-detail")
    if m == "exit": raise SystemExit(3)
    if m == "coroutine": return later()
    if m == "keyboard": raise KeyboardInterrupt()
    if m == "return-exception": return ValueError("returned")
    if m == "sleep":
        time.sleep(float(q.s or 3))
        return "slept"
    if m == "echo":
        return {
            "has_data": attempt(lambda: "data" in event.ceHeaders),
            "data": attempt(lambda: event["data"]),
            "ce": {k: describe(v) for k, v in sorted(event.ceHeaders.items()) if k.startswith("ce-")},
            "keys": sorted(event.ceHeaders.keys()),
            "context": context,
        }
    if m == "req":
        return {
            "method": req.method, "url": req.url, "path": req.path, "fullpath": req.fullpath,
            "query_string": req.query_string, "script_name": req.script_name,
            "query": describe(req.query), "query_get_key": q.get(key="x"), "query_get": q.get("x"),
            "query_getall": q.getall("x"), "query_attr_missing": q.missing, "query_getunicode": q.getunicode("y"),
            "query_dict": describe(req.query.dict), "GET": describe(req.GET),
            "forms": attempt(lambda: describe(req.forms)), "POST": attempt(lambda: describe(req.POST)),
            "params": attempt(lambda: describe(req.params)), "files": attempt(lambda: describe(req.files)),
            "cookies": describe(req.cookies), "get_cookie": req.get_cookie("c1"),
            "json": attempt(lambda: req.json), "body": attempt(lambda: req.body.read()),
            "body_twice": attempt(lambda: req.body.read()),
            "content_type": req.content_type, "content_length": req.content_length,
            "header": req.headers.get("X-Test"), "header_missing": req.headers.get("X-None"),
            "get_header": req.get_header("x-test"), "header_keys": sorted(k for k in req.headers.keys() if k.startswith("X-")),
            "is_xhr": req.is_xhr, "is_ajax": req.is_ajax, "auth": attempt(lambda: req.auth),
            "remote_route": attempt(lambda: req.remote_route), "urlparts": attempt(lambda: list(req.urlparts)),
            "chunked": req.chunked, "environ_method": req.environ.get("REQUEST_METHOD"),
            "environ_path": req.environ.get("PATH_INFO"), "environ_query": req.environ.get("QUERY_STRING"),
            "environ_server_protocol": req.environ.get("SERVER_PROTOCOL"),
            "environ_url_scheme": req.environ.get("wsgi.url_scheme"),
            "type": type(req).__mro__[-3].__name__ if len(type(req).__mro__) > 2 else type(req).__name__,
            "is_base_request": isinstance(req, bottle.BaseRequest),
        }
    if m == "event":
        return {
            "type_is_dict": isinstance(event, dict), "has_ceHeaders": hasattr(event, "ceHeaders"),
            "has_tracer": hasattr(event, "tracer"), "helpers": [h for h in ("emitCloudEvent", "publishCloudEvent", "buildResponseCloudEvent") if callable(getattr(event, h, None))],
            "missing_key": attempt(lambda: event["nope"]),
            "set_item": attempt(lambda: (event.__setitem__("mine", 1), event["mine"])[1]),
            "context_keys": sorted(context.keys()),
            "env_set": {k: bool(os.environ.get(k)) for k in ("PUBLISHER_PROXY_ADDRESS", "FUNC_TIMEOUT", "TRACE_COLLECTOR_ENDPOINT")},
        }
    if m == "tracer":
        with event.tracer.start_as_current_span("custom-span") as span:
            span.set_attribute("a", 1)
            ctx = span.get_span_context()
            return {"recording": span.is_recording(), "valid": ctx.is_valid, "trace_id": format(ctx.trace_id, "032x")}
    if m == "ce-build":
        return event.buildResponseCloudEvent("id-9", "reply.type", {"r": 1})
    if m == "ce-build-str":
        return event.buildResponseCloudEvent("id-9", "reply.type", "text")
    if m == "emit":
        return {"returned": describe(event.emitCloudEvent("order.out", "/probe", {"n": 1}, {"eventtypeversion": "v1", "id": "fixed-id"}))}
    if m == "emit-string":
        return {"returned": describe(event.emitCloudEvent("order.out", "/probe", "text-data", {"id": "fixed-id", "datacontenttype": "text/plain"}))}
    if m == "emit-invalid":
        return {"returned": describe(event.emitCloudEvent("t", "/s", {"n": 1}, {"Bad-Name": "x"}))}
    if m == "emit-no-type":
        return {"returned": describe(event.emitCloudEvent(None, "/s", {"n": 1}))}
    if m == "publish":
        r = event.publishCloudEvent({"specversion": "1.0", "type": "p", "source": "/s", "id": "p1", "data": {"p": 1}})
        return {"status": getattr(r, "status_code", None) if r is not None else None}
    return "default"
