"""The handler's `event` and its request, as Kyma's python312 runtime builds them (lib/ce.py there).

`event['extensions']['request']` is a real Bottle `BaseRequest` over a WSGI environ built from our
request, so everything a Kyma handler may call on it (query.get(key=…), getall, forms, params,
cookies, files, json, headers, url, body, …) behaves as it does on Kyma. Bottle, the CloudEvents SDK
and requests are imported when first needed, never at start-up (none of them is precompiled in the
read-only runtime layer: importing Bottle compiles 4700 lines, ~100 ms).
"""
import io
import json
import os
import sys
import threading
from urllib.parse import unquote_to_bytes

_lock = threading.Lock()
memfile_max = 100 * 1024 * 1024  # server.py sets FUNC_MEMFILE_MAX's
_bottle = None
_request_class = None


def bottle():
    """The real Bottle module (the runtime layer's), imported at the first function request."""
    global _bottle, _request_class
    if _bottle is None:
        with _lock:
            if _bottle is None:
                import bottle as module

                # Kyma's FUNC_MEMFILE_MAX: bodies Bottle parses (JSON, forms) up to it, 413 above
                module.BaseRequest.MEMFILE_MAX = memfile_max

                class FunctionRequest(module.BaseRequest):
                    """A request whose body is always in memory, as Kyma's (it reads it whole)."""

                    __slots__ = ()

                _request_class = FunctionRequest
                _bottle = module
    return _bottle


def request_class():
    bottle()
    return _request_class


def environ_of(method, target, version, headers, body, client_address, server_port):
    """The WSGI environ cheroot would hand Bottle for this request (the parts Bottle reads)."""
    path, _, query = target.partition("?")
    if path.startswith(("http://", "https://")):  # absolute-form target
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1") if "%" in path else path,  # PEP 3333: bytes as latin-1
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": version,
        "SERVER_NAME": "0.0.0.0",
        "SERVER_PORT": str(server_port),
        "REMOTE_ADDR": client_address[0],
        "REMOTE_PORT": str(client_address[1]) if len(client_address) > 1 else "",
        "REQUEST_URI": target,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.errors": sys.stderr,
        "wsgi.input": io.BytesIO(body),
        "bottle.request.body": io.BytesIO(body),  # Kyma's request keeps the whole body in memory
    }
    for name, value in headers.raw_items():  # http.client's parse: values as sent (latin-1), no policy pass
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if body and "CONTENT_LENGTH" not in environ:  # a chunked body, read whole
        environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)  # the body is decoded already
    return environ


def is_cloud_event(request):
    # Kyma: the structured media type among the Content-Type's `;` parts, or ce-type and ce-source
    environ = request.environ
    return ("application/cloudevents+json" in environ.get("CONTENT_TYPE", "").split(";")
            or ("HTTP_CE_TYPE" in environ and "HTTP_CE_SOURCE" in environ))


def cloud_event_attributes(request, data):
    """The ce-* keys and data of an incoming CloudEvent, parsed (and validated) by the SDK."""
    from cloudevents.http import from_http

    event = from_http(request.headers, data)
    attrs = {
        "data": event.data,
        "ce-type": event["type"],
        "ce-source": event["source"],
        "ce-id": event["id"],
        "ce-time": event["time"],
    }
    for name in ("eventtypeversion", "specversion"):
        if event.get(name) is not None:
            attrs[f"ce-{name}"] = event.get(name)
    return attrs


def publisher_proxy():
    return os.environ.get("PUBLISHER_PROXY_ADDRESS")


def data_content_type(data):
    if type(data) is dict:
        return "application/json"
    if type(data) is str:
        return "text/plain"
    return None


class Event:
    """The handler's `event`: Kyma's shape (`ceHeaders`, item access, the CloudEvents helpers)."""

    __slots__ = ("ceHeaders", "req", "_tracer")

    def __init__(self, request, tracer=None):
        self.req = request
        self._tracer = tracer
        self.ceHeaders = {"extensions": {"request": request}}
        if is_cloud_event(request):
            self.ceHeaders.update(cloud_event_attributes(request, request.body.read()))
        elif request.environ.get("CONTENT_TYPE") == "application/json":  # exactly, as Kyma
            self.ceHeaders["data"] = request.json  # Bottle's: 400 on invalid JSON, 413 over MEMFILE_MAX

    @property
    def tracer(self):
        if self._tracer is None:
            from . import tracing  # the first handler that asks for a tracer loads OpenTelemetry

            self._tracer = tracing.tracer()
            if not tracing.exporting:  # no server span holds the request's context: attach it
                tracing.attach_request(self.req.headers)
        return self._tracer

    @tracer.setter
    def tracer(self, value):
        self._tracer = value

    def __getitem__(self, item):
        return self.ceHeaders[item]

    def __setitem__(self, name, value):
        self.ceHeaders[name] = value

    # A superset of Kyma's Event (it has none of these: a call fails there, so no Kyma handler
    # depends on them): the read side of a dict, as fnbuild's earlier event was one.
    def get(self, name, default=None):
        return self.ceHeaders.get(name, default)

    def __contains__(self, name):
        return name in self.ceHeaders

    def keys(self):
        return self.ceHeaders.keys()

    def items(self):
        return self.ceHeaders.items()

    def emitCloudEvent(self, type, source, data, optionalCloudEventAttributes=None):
        """Sends a CloudEvent (structured mode) to the publisher proxy; as Kyma's, returns None
        and carries on whatever the proxy answers."""
        from cloudevents.conversion import to_structured
        from cloudevents.http import CloudEvent
        import requests

        attributes = {"type": type, "source": source}
        if optionalCloudEventAttributes is not None:
            attributes.update(optionalCloudEventAttributes)
        headers, body = to_structured(CloudEvent(attributes, data))
        requests.post(publisher_proxy(), data=body, headers=headers)

    def publishCloudEvent(self, data):
        import logging
        import requests

        logging.warning('"publishCloudEvent" is deprecated. Use "emitCloudEvent"')
        return requests.post(publisher_proxy(), data=json.dumps(data, default=str),
                             headers={"Content-Type": "application/cloudevents+json"})

    def buildResponseCloudEvent(self, event_id, event_type, event_data):
        import logging

        logging.warning('"buildResponseCloudEvent" is deprecated. Use "emitCloudEvent"')
        return {
            "type": event_type,
            "source": self.ceHeaders["ce-source"],
            "eventtypeversion": self.ceHeaders["ce-eventtypeversion"],
            "specversion": self.ceHeaders["ce-specversion"],
            "id": event_id,
            "data": event_data,
            "datacontenttype": data_content_type(event_data),
        }
