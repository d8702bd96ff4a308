"""Sends cases.py's requests to a function server and describes its answers (used by record.py on
Kyma's server and by ../test_kyma.py on ours). `python3 client.py <url> <proxy port>` prints them as JSON."""
import http.client
import http.server
import json
import sys
import threading
import urllib.parse

from cases import CASES, HEADERS


class Proxy:
    """A stand-in eventing publisher proxy: records what it gets, answers `status`."""

    def __init__(self, port=0):
        proxy = self
        self.received, self.status = [], 204

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(body)
                except ValueError:
                    body = body.decode("utf-8", "replace")
                keep = {k.lower(): v for k, v in self.headers.items() if k.lower() == "content-type" or k.lower().startswith("ce-")}
                proxy.received.append({"path": self.path, "headers": keep, "body": body})
                self.send_response(proxy.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def body_of(case):
    if "body_size" in case:
        return b"x" * case["body_size"]
    if "body_json_size" in case:  # a JSON string of exactly that many bytes
        return b'"' + b"x" * (case["body_json_size"] - 2) + b'"'
    return case.get("body", "").encode()


def normalise(value):
    """Answers vary in ids and times: those are replaced by their shape."""
    if isinstance(value, dict):
        return {k: ("<id>" if k in ("id", "ce-id") and v not in ("fixed-id", "id-1", "id-2", "i", "1", "p1", "id-9") else
                    "<time>" if k in ("time", "ce-time") and v != "2026-01-01T00:00:05Z" else normalise(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def send(base, case, timeout=10):
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    method = case.get("method", "GET")
    body = body_of(case)
    headers = dict(case.get("headers") or {})
    try:
        if case.get("chunked"):
            conn.request(method, case["path"], body=iter([body]), headers=headers, encode_chunked=True)
        else:
            conn.request(method, case["path"], body=body if (body or method in ("POST", "PATCH", "PUT")) else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    data = data.replace(url.netloc.encode(), b"<host>")  # error pages and URLs name the server's port
    answer = {"status": resp.status, "headers": {h: resp.getheader(h) for h in HEADERS if resp.getheader(h) is not None}}
    ctype = resp.getheader("Content-Type") or ""
    if "json" in ctype:
        try:
            answer["json"] = normalise(json.loads(data))
            return answer
        except ValueError:
            pass
    answer["body"] = data.decode("utf-8", "replace")
    return answer


def run_all(base, proxy):
    answers = {}
    for name, case in CASES.items():
        proxy.received.clear()
        proxy.status = case.get("proxy_status", 204)
        answers[name] = send(base, case)
        if case.get("proxy"):
            answers[name]["proxy_received"] = normalise(list(proxy.received))
    return answers


def metric_families(text):
    """/metrics as the set of its `# TYPE` lines and sample names with their label names."""
    out = set()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            out.add(line)
        elif line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            labels = sorted(p.split("=")[0] for p in line.split("{", 1)[1].split("}")[0].split(",")) if "{" in line else []
            out.add(f"{name} {','.join(labels)}".strip())
    return sorted(out)


if __name__ == "__main__":
    proxy = Proxy(int(sys.argv[2]))
    answers = run_all(sys.argv[1], proxy)
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(sys.argv[1]).hostname, urllib.parse.urlsplit(sys.argv[1]).port)
    conn.request("GET", "/metrics")
    answers["/metrics families"] = metric_families(conn.getresponse().read().decode())
    print(json.dumps(answers, indent=1, ensure_ascii=False, sort_keys=True))
