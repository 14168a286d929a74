"""The `chat_service` fixture: the chat page and the OpenAI API behind one address, yielding
(base_url, api_key).

A small stdlib HTTP server serves the page's files from src/gateway/web with the gateway's
Content-Security-Policy and forwards /v1/* to a real `chatai serve` on the real model, streaming
the answer through unbuffered. Every /v1 request needs the key. /v1/models gives each model a
"state", and lists a second model, "echo", whose answer streams back the last user message
word by word, so that a test can choose the model's exact text. Two more echo models answer
with an error first: "starting" (state starting) answers 503 with Retry-After: 1 once, and
"limited" always answers 429 with Retry-After: 7.
"""

import http.client
import json
import pathlib
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from test_serve import start_server, stop_server

WEB_DIR = pathlib.Path(__file__).resolve().parents[2] / "src" / "gateway" / "web"
CSP = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
       "script-src 'self'; frame-ancestors 'none'; base-uri 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
ECHO = "echo"
# Echo models that fail first: name -> (state, status, Retry-After, how many requests fail).
FAILING = {"starting": ("starting", 503, "1", 1), "limited": ("ready", 429, "7", float("inf"))}


def make_handler(api_key, upstream_port):
    failures_left = {name: count for name, (_, _, _, count) in FAILING.items()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def reply(self, status, body, content_type="application/json", headers=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def error(self, status, message, code, headers=()):
            body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
            self.reply(status, json.dumps(body).encode(), headers=headers)

        def start_stream(self, status=200, content_type="text/event-stream", retry_after=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def chunk(self, data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def authorised(self):
            if self.headers.get("Authorization") == f"Bearer {api_key}":
                return True
            self.error(401, "Invalid API key.", "invalid_api_key")
            return False

        def do_GET(self):
            if self.path.startswith("/v1/"):
                if not self.authorised():
                    return
                if self.path != "/v1/models":
                    return self.error(404, f"Unknown path {self.path}", "not_found")
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                conn.request("GET", "/v1/models")
                listing = json.loads(conn.getresponse().read())
                conn.close()
                for model in listing["data"]:
                    model["state"] = "ready"
                for name, model_state in [(ECHO, "ready")] + [(n, f[0]) for n, f in FAILING.items()]:
                    listing["data"].append({"id": name, "object": "model", "owned_by": "chatai", "state": model_state})
                return self.reply(200, json.dumps(listing).encode())
            name = "index.html" if self.path == "/" else self.path.lstrip("/")
            path = WEB_DIR / name
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path.is_file():
                return self.reply(404, b"not found", "text/plain")
            self.reply(200, path.read_bytes(), TYPES[path.suffix], [("Content-Security-Policy", CSP)])

        def do_POST(self):
            if not self.authorised():
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = json.loads(body or b"{}")
            model = request.get("model")
            if failures_left.get(model, 0) > 0:
                failures_left[model] -= 1
                _, status, retry_after, _ = FAILING[model]
                return self.error(status, f"{model} can't answer now", "unavailable", [("Retry-After", retry_after)])
            try:
                if model == ECHO or model in FAILING:
                    self.echo(request)
                else:
                    self.forward(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser stopped the answer

        def echo(self, request):
            text = next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")
            self.start_stream()
            for piece in re.findall(r"\S+\s*|\s+", text):
                event = {"object": "chat.completion.chunk", "model": ECHO, "choices": [{"index": 0, "delta": {"content": piece}}]}
                self.chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
                time.sleep(0.02)
            self.chunk(b"data: [DONE]\n\n")
            self.chunk(b"")

        def forward(self, body):
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=300)
            try:
                conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                upstream = conn.getresponse()
                self.start_stream(upstream.status, upstream.getheader("Content-Type", "application/json"),
                                  upstream.getheader("Retry-After"))
                while data := upstream.read1(65536):
                    self.chunk(data)
                self.chunk(b"")
            finally:
                conn.close()  # a stopped answer ends the model's work too

    return Handler


@pytest.fixture(scope="module")
def chat_service(build_dir, test_model):
    proc, event = start_server(build_dir, test_model, "--ctx", "512")
    api_key = "sk-" + secrets.token_hex(16)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api_key, event["port"]))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", api_key
    server.shutdown()
    server.server_close()
    stop_server(proc)
