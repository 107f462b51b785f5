"""Application-style: an HTTP API verifying HMAC-signed requests with a keyring, a client signing with its own
keyring, and two `rotator rotate --now` runs (real CLI subprocesses on a local store) under continuous
traffic. No valid request may be rejected; a request signed with a retired key must be."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rotator.keyring import Keyring
from tests.conftest import Workspace

pytestmark = pytest.mark.xdist_group("processes")

MANIFEST = """
    version: 1
    defaults: {every: 1h, grace: 4s, notice: 1m}
    secrets:
      - {name: api/request-signing, kind: hmac, bytes: 32, consumers: [client]}
"""


class Api:
    """A tiny stdlib HTTP API: POST /orders is accepted only with a valid X-Key-Id / X-Signature pair."""

    def __init__(self, keyring: Keyring) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = keyring.verify(body, self.headers.get("X-Signature", ""), self.headers.get("X-Key-Id"))
                with api.lock:
                    api.verified += ok
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.lock = threading.Lock()
        self.verified = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def post(self, body: bytes, key_id: str, signature: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/orders", body, {"X-Key-Id": key_id, "X-Signature": signature})
            return conn.getresponse().status
        finally:
            conn.close()


@pytest.fixture
def app(workspace: Workspace) -> Iterator[tuple[Workspace, Api, Keyring]]:
    """The secret created by `rotator run`, the API with a server keyring, and a separate client keyring."""
    workspace.write_manifest(MANIFEST)
    assert workspace.cli("run").code == 0
    server_ring = Keyring.from_manifest(workspace.manifest, "api/request-signing", ttl=0.5)
    client_ring = Keyring.from_manifest(workspace.manifest, "api/request-signing", ttl=0.5)
    api = Api(server_ring)
    yield workspace, api, client_ring
    api.server.shutdown()
    server_ring.close()
    client_ring.close()


def test_rotations_under_traffic_reject_nothing_valid(app: tuple[Workspace, Api, Keyring]) -> None:
    """Hundreds of signed requests across two rotations are all accepted; retired keys are then refused."""
    workspace, api, client = app
    statuses: list[int] = []
    key_ids: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            body = f'{{"order": {i}}}'.encode()
            key_id, signature = client.sign(body)
            statuses.append(api.post(body, key_id, signature))
            key_ids.append(key_id)
            i += 1
            time.sleep(0.005)

    first_key, first_sig = client.sign(b"old order")
    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        for rotation in (1, 2):
            time.sleep(0.7)
            result = workspace.cli("rotate", "--now", "api/request-signing")
            assert result.code == 0, result.err
            deadline = time.monotonic() + 10
            while len(set(key_ids)) <= rotation and time.monotonic() < deadline:
                time.sleep(0.05)  # until the client's cache picked up the new key
        # sign with the middle key now, while it is surely inside its grace (the test may run slowly)
        middle_key = list(dict.fromkeys(key_ids))[1]
        middle_sig = _sign_with(client, middle_key, b"late order")
        time.sleep(0.3)
    finally:
        stop.set()
        sender.join()
    assert len(statuses) >= 200, f"only {len(statuses)} requests"
    assert statuses.count(401) == 0, f"{statuses.count(401)} valid requests rejected"
    versions = list(dict.fromkeys(key_ids))
    assert len(versions) == 3
    assert versions[0] == first_key
    # two rotations inside one grace period: the first key keeps its own grace (several previous values)
    assert api.post(b"old order", first_key, first_sig) == 200
    assert versions[1] == middle_key
    last_key = versions[2]
    assert api.post(b"late order", middle_key, middle_sig) == 200  # still in grace: accepted
    time.sleep(4.1)  # the grace of the middle key ends ...
    assert workspace.cli("run").code == 0  # ... and the CronJob-style pass retires it
    client.refresh()
    assert [v.id for v in client.accepted_keys()] == [last_key]
    assert api.post(b"late order", middle_key, middle_sig) == 401
    assert api.post(b"fresh", *client.sign(b"fresh")) == 200


def _sign_with(keyring: Keyring, key_id: str, message: bytes) -> str:
    """An HMAC by a specific (still cached) version, as a client that had not refreshed yet would send."""
    import hashlib
    import hmac

    version = next(v for v in keyring.accepted_keys() if v.id == key_id)
    assert version.value is not None
    return hmac.new(version.value.reveal().encode(), message, hashlib.sha256).hexdigest()
