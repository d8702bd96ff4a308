"""The requests sent to Kyma's python312 server (kyma-project/serverless components/runtimes/python312,
run locally with its requirements.txt and probe_handler.py as the function) and to ours.
record.py sent them to Kyma's and wrote its answers to kyma-answers.json; ../test_kyma.py sends them
to ours and compares. Both servers run with FUNC_TIMEOUT=2, FUNC_NAME=probe, SERVICE_NAMESPACE=ns,
FUNC_RUNTIME=python312, FUNC_MEMFILE_MAX=65536 and PUBLISHER_PROXY_ADDRESS pointing at the
stand-in proxy record.py runs."""
import base64
import json as _json

JSON = {"Content-Type": "application/json"}
CE_BINARY = {
    "ce-type": "order.created", "ce-source": "/shop", "ce-specversion": "1.0", "ce-id": "id-1",
    "ce-time": "2026-01-01T00:00:05Z", "ce-eventtypeversion": "v1", "ce-myext": "x",
}
MULTIPART = ('--XX\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n'
             '--XX\r\nContent-Disposition: form-data; name="up"; filename="a b.txt"\r\nContent-Type: text/plain\r\n\r\nfile-body\r\n'
             '--XX--\r\n')


def post(path, headers=None, body="", **more):
    return {"method": "POST", "path": path, "headers": headers or {}, "body": body, **more}


def structured(obj, ctype="application/cloudevents+json"):
    return post("/?m=echo", {"Content-Type": ctype}, _json.dumps(obj))


RETURNS = ["string", "html", "empty", "dict", "dict-empty", "list-str", "list-dict", "list-empty", "tuple", "bytes",
           "bytearray", "none", "int", "zero", "float", "true", "false", "set", "generator", "unicode",
           "response-dict", "response-dict-notype", "response-str", "response-status", "response-status-str",
           "response-bad-status", "response-set", "response-cookie", "response-redirect", "raise-response",
           "raise-error", "return-error", "redirect", "abort", "throw", "exit", "keyboard", "coroutine", "file", "return-exception", "default"]

CASES = {
    **{f"return {m}": {"path": f"/?m={m}"} for m in RETURNS},
    "timeout": {"path": "/?m=sleep&s=3"},
    # event.data by content type
    "data json": post("/?m=echo", JSON, '{"a":[1,2],"b":"c"}'),
    "data json charset": post("/?m=echo", {"Content-Type": "application/json; charset=utf-8"}, '{"a":1}'),
    "data json primitive": post("/?m=echo", JSON, "42"),
    "data json invalid": post("/?m=echo", JSON, "{nope"),
    "data json empty": post("/?m=echo", JSON, ""),
    "data urlencoded": post("/?m=echo", {"Content-Type": "application/x-www-form-urlencoded"}, "a=1&b=two&a=3"),
    "data text": post("/?m=echo", {"Content-Type": "text/plain"}, "héllo"),
    "data octet-stream": post("/?m=echo", {"Content-Type": "application/octet-stream"}, "raw"),
    "data vendor json": post("/?m=echo", {"Content-Type": "application/vnd.api+json"}, '{"a":1}'),
    "data no type": post("/?m=echo", None, "untyped"),
    "data multipart": post("/?m=echo", {"Content-Type": "multipart/form-data; boundary=XX"}, MULTIPART),
    "data get": {"path": "/?m=echo"},
    "data delete json": {"method": "DELETE", "path": "/?m=echo", "headers": JSON, "body": '{"d":1}'},
    "data patch json": {"method": "PATCH", "path": "/?m=echo", "headers": JSON, "body": '{"p":1}'},
    "data json chunked": post("/?m=echo", JSON, '{"c":1}', chunked=True),
    # bodies against FUNC_MEMFILE_MAX (65536 in these runs): bottle spools larger ones to a file
    "body over memfile octet": post("/?m=zero", {"Content-Type": "application/octet-stream"}, body_size=65537),
    "body over memfile json": post("/?m=echo", JSON, body_size=65537),
    "body at memfile json": post("/?m=echo", JSON, body_json_size=65536),
    "body 2 MiB octet": post("/?m=zero", {"Content-Type": "application/octet-stream"}, body_size=2 * 1024 * 1024),
    # CloudEvents in
    "ce binary": post("/?m=echo", {**JSON, **CE_BINARY}, '{"hello":"x"}'),
    "ce binary text": post("/?m=echo", {"Content-Type": "text/plain", **CE_BINARY}, "txt"),
    "ce binary minimal": post("/?m=echo", {"Content-Type": "text/plain", "ce-type": "t", "ce-source": "s"}, "txt"),
    "ce binary no body": post("/?m=echo", {"ce-type": "t", "ce-source": "s", "ce-specversion": "1.0", "ce-id": "1"}),
    "ce binary bad specversion": post("/?m=echo", {**JSON, **CE_BINARY, "ce-specversion": "0.1"}, "{}"),
    "ce type only": post("/?m=echo", {**JSON, "ce-type": "t"}, '{"a":1}'),
    "ce structured": structured({"specversion": "1.0", "type": "order.created", "source": "/shop", "id": "id-2",
                                 "time": "2026-01-01T00:00:05Z", "eventtypeversion": "v1", "myext": "y",
                                 "datacontenttype": "application/json", "data": {"order": 8}}),
    "ce structured charset": structured({"specversion": "1.0", "type": "t", "source": "s", "id": "i", "data": "str"},
                                        "application/cloudevents+json; charset=utf-8"),
    "ce structured base64": structured({"specversion": "1.0", "type": "t", "source": "s", "id": "i",
                                        "data_base64": base64.b64encode(b"bin").decode()}),
    "ce structured no source": structured({"specversion": "1.0", "type": "t", "id": "i", "data": 1}),
    "ce structured bad json": post("/?m=echo", {"Content-Type": "application/cloudevents+json"}, "{x"),
    # the request object
    "req get": {"path": "/a/b?m=req&x=1&x=2&y=h%C3%A9", "headers": {"X-Test": "t", "X-Requested-With": "XMLHttpRequest",
                "Cookie": "c1=v1; c2=v2", "Host": "sub.example.com:8080", "Authorization": "Basic dTpw"}},
    "req root": {"path": "/?m=req"},
    "req form": post("/f?m=req&x=q", {"Content-Type": "application/x-www-form-urlencoded"}, "x=1&z=2&z=3"),
    "req multipart": post("/?m=req", {"Content-Type": "multipart/form-data; boundary=XX"}, MULTIPART),
    "req json": post("/p%20q?m=req", JSON, '{"x":1}'),
    "req json charset": post("/?m=req", {"Content-Type": "application/json; charset=utf-8"}, '{"x":1}'),
    "req text": {"method": "PATCH", "path": "/?m=req", "headers": {"Content-Type": "text/html"}, "body": "<i>"},
    "req forwarded": {"path": "/?m=req", "headers": {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "fw.example", "X-Forwarded-For": "10.0.0.1, 10.0.0.2"}},
    "event object": {"path": "/?m=event"},
    # endpoints and methods
    "healthz": {"path": "/healthz"},
    "healthz post": post("/healthz?m=string"),
    "healthz head": {"method": "HEAD", "path": "/healthz"},
    "favicon": {"path": "/favicon.ico"},
    "method put": {"method": "PUT", "path": "/?m=string"},
    "method options": {"method": "OPTIONS", "path": "/?m=string"},
    "method patch": {"method": "PATCH", "path": "/?m=string"},
    "method delete": {"method": "DELETE", "path": "/?m=string"},
    "method head": {"method": "HEAD", "path": "/?m=dict"},
    "deep path": {"path": "/x/y/z?m=string"},
    "metrics post": post("/metrics?m=string"),
    # tracing and CloudEvents out
    "tracer": {"path": "/?m=tracer", "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
    "tracer b3": {"path": "/?m=tracer", "headers": {"X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-SpanId": "e457b5a2e4d86bd1", "X-B3-Sampled": "1"}},
    "ce build response": post("/?m=ce-build", {**JSON, **CE_BINARY}, "{}"),
    "ce build response str": post("/?m=ce-build-str", {**JSON, **CE_BINARY}, "{}"),
    "ce build response no ce": {"path": "/?m=ce-build"},
    "emit": {"path": "/?m=emit", "proxy": True},
    "emit string": {"path": "/?m=emit-string", "proxy": True},
    "emit invalid attribute": {"path": "/?m=emit-invalid", "proxy": True},
    "emit no type": {"path": "/?m=emit-no-type", "proxy": True},
    "emit proxy error": {"path": "/?m=emit", "proxy": True, "proxy_status": 500},
    "publish": {"path": "/?m=publish", "proxy": True},
}

# Response headers compared (Date, Server, Connection are not).
HEADERS = ["content-type", "content-length", "location", "set-cookie", "x-custom", "allow"]
