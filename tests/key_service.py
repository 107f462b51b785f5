"""A small local HTTP key-issuing service, the kind of API a ``command`` target drives (think Stripe's or an
internal service's API keys). Started by the tests on 127.0.0.1 at a free port.

Admin endpoints take ``Authorization: Bearer <admin token>``; the service keeps at most two keys per user::

    POST   /v1/keys            {"username": u}  -> 201 {"id", "username", "api_key"}   409 when u has two keys
    GET    /v1/keys?username=u                  -> 200 {"keys": [{"id", "username"}]}
    DELETE /v1/keys/<id>                        -> 204, or 404 when there is no such key
    GET    /v1/whoami  (Bearer <api key>)       -> 200 {"id", "username"}, or 401

Any admin call with a wrong token gets 401. ``stop()`` closes the socket (clients get "connection refused").
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["KeyService"]

MAX_KEYS = 2


class KeyService:
    """The service's state and its HTTP server thread."""

    def __init__(self) -> None:
        self.admin_token = secrets.token_urlsafe(24)
        self.keys: dict[str, tuple[str, str]] = {}  # id -> (username, api key)
        self.lock = threading.Lock()
        self.requests: list[str] = []  # "METHOD path" of every request, for assertions
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Silent: request lines carry nothing secret, but tests read stderr."""

            def do_GET(self) -> None:
                service.handle(self, "GET")

            def do_POST(self) -> None:
                service.handle(self, "POST")

            def do_DELETE(self) -> None:
                service.handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def live_keys(self, username: str) -> list[str]:
        with self.lock:
            return [k for k, (user, _) in self.keys.items() if user == username]

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(request.path)
        self.requests.append(f"{method} {url.path}")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if method == "GET" and url.path == "/v1/whoami":
            with self.lock:
                found = [(k, u) for k, (u, key) in self.keys.items() if secrets.compare_digest(key, bearer)]
            return _reply(request, 200, {"id": found[0][0], "username": found[0][1]}) if found else \
                _reply(request, 401, {"error": "invalid api key"})
        if not secrets.compare_digest(bearer, self.admin_token):
            return _reply(request, 401, {"error": "invalid admin token"})
        if method == "POST" and url.path == "/v1/keys":
            length = int(request.headers.get("Content-Length") or 0)
            username = str(json.loads(request.rfile.read(length) or b"{}").get("username", ""))
            with self.lock:
                if not username:
                    return _reply(request, 400, {"error": "username required"})
                if sum(1 for u, _ in self.keys.values() if u == username) >= MAX_KEYS:
                    return _reply(request, 409, {"error": "key limit reached"})
                key_id, key = f"key_{secrets.token_hex(6)}", f"sk_{secrets.token_urlsafe(24)}"
                self.keys[key_id] = (username, key)
            return _reply(request, 201, {"id": key_id, "username": username, "api_key": key})
        if method == "GET" and url.path == "/v1/keys":
            username = urllib.parse.parse_qs(url.query).get("username", [""])[0]
            return _reply(request, 200, {"keys": [{"id": k, "username": username} for k in self.live_keys(username)]})
        if method == "DELETE" and url.path.startswith("/v1/keys/"):
            with self.lock:
                gone = self.keys.pop(url.path.rpartition("/")[2], None)
            return _reply(request, 204 if gone else 404, None)
        return _reply(request, 404, {"error": "no such endpoint"})


def _reply(request: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    payload = b"" if body is None else json.dumps(body).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(payload)))
    request.end_headers()
    request.wfile.write(payload)
