"""A webhook receiver on loopback that keeps what it was sent (alerts, callbacks).

Scenario: alerts and signed callbacks leave the flows as HTTP POSTs; the local stack needs a
place to send them, and tests need to see exactly what arrived, and to make the receiver
answer with errors first (to show the sender's retries).
Solution: one threaded HTTP server per `Receiver`, keeping every request. Given the callbacks'
`secret`, it verifies each request as a real receiver would (`toolkit.callbacks.verify`: 401
on a bad signature or a stale timestamp) and keeps one callback per idempotency key; `script`
holds statuses to answer the (verified) requests with first, 204 once it is spent.
How to run: ``receiver = Receiver(secret=b"whsec-..."); ...; receiver.statuses()``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from toolkit.callbacks import IDEMPOTENCY_HEADER, verify


class Receiver:
    def __init__(self, secret: bytes | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        """Every request in order: path, headers, body, whether it verified, the answer."""
        self.accepted: dict[str, Any] = {}
        """With a secret: the verified callbacks by idempotency key (a retried one once)."""
        self.script: list[int] = []
        receiver, lock = self, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = dict(self.headers)
                verified = secret is None or verify(secret, headers, body)
                with lock:
                    status = receiver._answer(verified, headers, body)
                    receiver.received.append(
                        {
                            "path": self.path,
                            "headers": headers,
                            "body": body,
                            "verified": verified,
                            "status": status,
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.secret = secret
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _answer(self, verified: bool, headers: dict[str, str], body: bytes) -> int:
        if not verified:
            return 401
        if self.script:
            return self.script.pop(0)
        if self.secret is not None:
            self.accepted.setdefault(headers.get(IDEMPOTENCY_HEADER, ""), json.loads(body))
        return 204

    def json_bodies(self) -> list[Any]:
        return [json.loads(item["body"]) for item in self.received]

    def statuses(self) -> list[int]:
        return [item["status"] for item in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
