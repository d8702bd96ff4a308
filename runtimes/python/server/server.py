# Placeholder until the real function server lands (issue 4).
import importlib, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
sys.path.insert(0, "/kubeless")
fn = getattr(importlib.import_module(os.environ.get("MOD_NAME", "handler")), os.environ.get("FUNC_HANDLER", "main"))
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        out = b"OK" if self.path == "/healthz" else str(fn({"data": None}, {})).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(out)
HTTPServer(("", int(os.environ.get("FUNC_PORT", "8080"))), H).serve_forever()
