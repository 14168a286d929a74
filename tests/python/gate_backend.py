"""A small OpenAI-like backend for gate tests, run as its own process so that tests can kill it.

Usage: gate_backend.py --key-file FILE [--events N] [--gap SECONDS]
Prints the port it listens on (127.0.0.1) as one line, then serves until killed. It answers the
gate's job key proof (GET /chatai/proof, see include/chatai/core/key_proof.hpp) as chatai serve
does. Other requests
without "Authorization: Bearer <the key in FILE>" get 401. POST /v1/chat/completions answers JSON, or
server-sent events (N chunks, one per gap, then a usage chunk when stream_options.include_usage
is set, then [DONE]) when the body has "stream": true. Every request is logged as one JSON
line on stderr (path, whether it was authorised, the body's stream_options).
"""

import argparse
import hashlib
import hmac
import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROOF_PATH = "/chatai/proof"
PROOF_LABEL = b"chatai-job-key-proof-v1\n"


def key_proof(key: str, challenge: str):
    """The answer to the gate's challenge (None for a malformed one): hex(HMAC-SHA256(key, label + challenge))."""
    if not re.fullmatch(r"[0-9a-f]{64}", challenge or ""):
        return None
    return hmac.new(key.encode(), PROOF_LABEL + challenge.encode(), hashlib.sha256).hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--gap", type=float, default=0.05)
    args = parser.parse_args()
    with open(args.key_file) as f:
        key = f.read().strip()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def send_chunk(self, data: bytes):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def do_GET(self):
            if self.path != PROOF_PATH:
                self.send_error(404)
                return
            proof = key_proof(key, self.headers.get("X-Chatai-Challenge"))
            answer = (proof or "bad challenge").encode()
            self.send_response(200 if proof else 400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            authorised = self.headers.get("Authorization") == "Bearer " + key
            request = json.loads(body or b"{}")
            print(json.dumps({"path": self.path, "authorised": authorised,
                              "stream_options": request.get("stream_options")}), file=sys.stderr, flush=True)
            if not authorised:
                answer = b'{"error":{"message":"unauthorised"}}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            if not request.get("stream"):
                answer = json.dumps({"choices": [{"message": {"content": "hello"}}],
                                     "usage": {"prompt_tokens": 7, "completion_tokens": 1}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(args.events):
                chunk = {"choices": [{"delta": {"content": f"t{i}"}}], "usage": None}
                self.send_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                time.sleep(args.gap)
            if (request.get("stream_options") or {}).get("include_usage"):
                usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": args.events}}
                self.send_chunk(b"data: " + json.dumps(usage).encode() + b"\n\n")
            self.send_chunk(b"data: [DONE]\n\n")
            self.send_chunk(b"")

    class Server(ThreadingHTTPServer):
        request_queue_size = 2048  # many gates connect at once in the tunnel's load tests

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
