"""A stand-in for the two Bottle classes Kyma handlers use to shape their response.

Kyma's documentation tells Python users to `from bottle import HTTPResponse` and return (or raise) one
to set the status and headers. server.py puts this directory at the *end* of sys.path, so a Bottle
installed from the function's requirements.txt still wins.
"""


class HTTPResponse(Exception):
    default_status = 200

    def __init__(self, body="", status=None, headers=None, **more_headers):
        super().__init__(body)
        self.body = body
        self.status = status or self.default_status
        self.headers = dict(headers or {})
        self.headers.update((k.replace("_", "-").title(), v) for k, v in more_headers.items())

    @property
    def status_code(self):  # Bottle accepts 404 or "404 Not Found"
        return int(str(self.status).split()[0])

    @property
    def content_type(self):
        return self.headers.get("Content-Type")

    @content_type.setter
    def content_type(self, value):
        self.headers["Content-Type"] = value

    def set_header(self, name, value):
        self.headers[name] = value


class HTTPError(HTTPResponse):
    default_status = 500

    def __init__(self, status=None, body=None, exception=None, traceback=None, **more_headers):
        super().__init__(body if body is not None else "", status, **more_headers)
        self.exception = exception
        self.traceback = traceback
