"""The plain peer of runtimes/python/server/server.py for bench/runtimes: a standard-library server
(ThreadingHTTPServer, HTTP/1.1 keep-alive, Nagle off, as the runtime server) doing the same essential
work (parse the request, call the function's main(event, context), write its string as a text
response with a Content-Length) and nothing else: no event object, metrics, log line or timeout.
Usage: python3 plain_python.py FUNC_DIR  (FUNC_HOST / FUNC_PORT as for the server; port 0 picks a
free one, printed as "listening on HOST:PORT").
"""
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "."))
from handler import main  # noqa: E402


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        body = main({"data": None}, {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


server = Server((os.environ.get("FUNC_HOST", "127.0.0.1"), int(os.environ.get("FUNC_PORT", "8080"))), Handler)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print("listening on %s:%d" % server.server_address[:2], flush=True)
server.serve_forever()
server.server_close()
