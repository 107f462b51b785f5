"""moto in server mode for the AWS tests and benchmark: real boto3 over HTTP to 127.0.0.1.

:class:`GatedMotoServer` is moto's ``ThreadedMotoServer`` with a WSGI middleware in front that can add
latency, answer AccessDeniedException for chosen actions, fail chosen requests with a 500, and count calls by
action. ``stop()`` really closes the socket (connections are refused) and ``start()`` again reuses the port;
moto's state lives in the process, so it survives a restart. One server per process, created on first use.
Tests use unique secret names instead of resetting moto.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

__all__ = ["GatedMotoServer", "aws_env", "moto", "shared_server", "unique"]

Rule = Callable[[str, dict[str, Any]], bool]  # (action, request JSON) -> applies?
REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


class GatedMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose requests pass a gate: delay, deny, fail, count."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.delay = 0.0
        self.deny: Rule | None = None
        self.fail: Rule | None = None
        self.throttle = 0  # the next N requests get ThrottlingException
        self.calls: Counter[str] = Counter()
        self.access_keys: Counter[str] = Counter()
        self.cpu_since = time.process_time()  # CPU used by this process since the last reset_counts()
        self._count_lock = threading.Lock()
        self.running = False

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        self._app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self._ip_address, self._port, self._gate, True,
                                   request_handler=MotoRequestHandler)
        self._port = self._server.server_address[1]  # a restart binds the same port
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        super().start()
        self.running = True

    def stop(self) -> None:
        """Stop serving and close the socket: clients get "connection refused"."""
        super().stop()
        if self._server is not None:
            self._server.server_close()
        self.running = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def relax(self) -> None:
        """Back to a plain, fast, honest server with a zero call count."""
        self.delay, self.deny, self.fail, self.throttle = 0.0, None, None, 0
        self.reset_counts()

    def reset_counts(self) -> None:
        with self._count_lock:
            self.calls.clear()
            self.access_keys.clear()
            self.cpu_since = time.process_time()

    def count(self, actions: Iterable[str] | None = None) -> int:
        with self._count_lock:
            return sum(n for a, n in self.calls.items() if actions is None or a in actions)

    def _gate(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        action = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2]
        if not action and b"Action=" in body:  # query protocol (STS)
            action = urllib.parse.parse_qs(body.decode()).get("Action", [""])[0]
        action = action or str(environ.get("PATH_INFO", ""))
        try:
            request = json.loads(body) if body.startswith(b"{") else {}
        except ValueError:
            request = {}
        if str(action).startswith("/moto-api"):
            return self._app(environ, start_response)  # type: ignore[no-any-return]
        if str(action).startswith("/_gate"):
            return self._control(str(action), request, start_response)
        key = str(environ.get("HTTP_AUTHORIZATION", "")).partition("Credential=")[2].partition("/")[0]
        with self._count_lock:
            self.calls[action] += 1
            self.access_keys[key] += 1
            throttled, self.throttle = self.throttle > 0, max(0, self.throttle - 1)
        if throttled:
            return _error(start_response, "400 Bad Request", "ThrottlingException", "Rate exceeded")
        if self.delay:
            time.sleep(self.delay)
        if self.deny is not None and self.deny(action, request):
            return _error(start_response, "400 Bad Request", "AccessDeniedException",
                          f"User: arn:aws:iam::123456789012:user/rotator-test is not authorized to perform: "
                          f"secretsmanager:{action} on resource: {request.get('SecretId', '*')} because no "
                          "identity-based policy allows the action")
        if self.fail is not None and self.fail(action, request):
            return _error(start_response, "500 Internal Server Error", "InternalServiceError", "injected")
        return self._app(environ, start_response)  # type: ignore[no-any-return]

    def _control(self, path: str, request: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """``/_gate/calls``: counts and the server process's CPU time; ``/_gate/set``: set ``delay``, reset."""
        if path == "/_gate/set":
            self.delay = float(request.get("delay", self.delay))
            self.reset_counts()
        with self._count_lock:
            cpu = time.process_time() - self.cpu_since
            payload = json.dumps({"calls": dict(self.calls), "cpu_s": cpu}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    def reset_moto(self) -> None:
        """Forget every secret (POST /moto-api/reset)."""
        url = self.endpoint + "/moto-api/reset"
        req = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310 - fixed http://127.0.0.1 URL
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass


def _error(start_response: Callable[..., Any], status: str, code: str, message: str) -> list[bytes]:
    payload = json.dumps({"__type": code, "message": message}).encode()
    start_response(status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(payload))),
                            ("x-amzn-RequestId", uuid.uuid4().hex)])
    return [payload]


_SHARED: GatedMotoServer | None = None
_SHARED_LOCK = threading.Lock()


def shared_server() -> GatedMotoServer:
    """The process's moto server, started on first use and stopped at exit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = GatedMotoServer()
            _SHARED.start()
            atexit.register(lambda: _SHARED.stop() if _SHARED is not None and _SHARED.running else None)
        elif not _SHARED.running:
            _SHARED.start()
        return _SHARED


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials and region for boto3, and no real AWS config files."""
    for key, value in DUMMY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return dict(DUMMY_ENV)


@pytest.fixture
def moto(aws_env: dict[str, str]) -> Iterator[GatedMotoServer]:
    """The shared moto server, relaxed before and after the test (and restarted if a test stopped it)."""
    server = shared_server()
    server.relax()
    yield server
    server.relax()
    if not server.running:
        server.start()


if __name__ == "__main__":  # a gated moto server of its own (benchmarks): prints the endpoint, stops on EOF
    import sys

    logging.disable(logging.WARNING)
    served = GatedMotoServer()
    served.start()
    print(served.endpoint, flush=True)
    sys.stdin.read()
    served.stop()
