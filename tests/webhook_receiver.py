"""A loopback receiver of budget alert webhooks that checks each signature as the README says.

It runs http.server in a daemon thread on a real loopback port. Each POST is kept in
`.deliveries` with its headers, its parsed JSON and whether its X-Gateway-Signature was
right for the secret, checked here by its own code rather than the gateway's.
"""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def signature_is_valid(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
    """Check X-Gateway-Signature for the raw request body (bytes, before any JSON parsing).

    The README's snippet ("Budget alerts"), so that the suite runs what it documents.
    """
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields.get("v1", ""))


class WebhookReceiver:
    def __init__(self, secret, status=200):
        self.secret = secret
        # What every POST is answered with, after the statuses in `first_answers`, if any.
        self.status = status
        self.first_answers = []
        # Seconds each POST waits before it is answered, so that senders running at once
        # overlap.
        self.delay = 0
        self.deliveries = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.deliveries.append(
                        {
                            "headers": dict(self.headers),
                            "json": json.loads(body),
                            "signed": signature_is_valid(
                                receiver.secret, body, self.headers.get("X-Gateway-Signature", "")
                            ),
                        }
                    )
                    answers = receiver.first_answers
                    status = answers.pop(0) if answers else receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/budget"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
