"""Application-style, JWTs: a real `rotator daemon` serves /.well-known/jwks/<name>.json, an HTTP API verifies
Ed25519 JWTs with PyJWT's JWKS client against it, a client signs with its own keyring, and two rotations
run under continuous traffic. No valid token may be rejected; tokens of retired keys must be."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest

from rotator.keyring import Keyring
from tests.conftest import Workspace

pytestmark = pytest.mark.xdist_group("processes")

SECRET = "auth/jwt"
MANIFEST = f"""
    version: 1
    defaults: {{every: 1h, grace: 4s, notice: 1m}}
    secrets:
      - {{name: {SECRET}, kind: ed25519}}
      - {{name: auth/hmac, kind: hmac}}
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError:
        return 0, {}, b""


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


class Api:
    """A stdlib HTTP API accepting GET /me only with a JWT that verifies against the daemon's JWKS."""

    def __init__(self, jwks_url: str, max_age: int) -> None:
        client = jwt.PyJWKClient(jwks_url, cache_jwk_set=max_age > 0, lifespan=max(max_age, 1))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                try:
                    key = client.get_signing_key_from_jwt(token)
                    jwt.decode(token, key.key, algorithms=["EdDSA"], audience="api")
                    code = 200
                except jwt.PyJWTError:
                    code = 401
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def call(self, token: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/me", headers={"Authorization": f"Bearer {token}"})
            return conn.getresponse().status
        finally:
            conn.close()


@pytest.fixture
def daemon(workspace: Workspace) -> Iterator[tuple[Workspace, int]]:
    """A `rotator daemon` subprocess (reconciling every second) with the secrets created and served."""
    workspace.write_manifest(MANIFEST)
    port = _port()
    proc = workspace.spawn("daemon", "--metrics-port", str(port), "--reconcile-every", "1s")
    try:
        _wait(lambda: _get(port, f"/.well-known/jwks/{SECRET}.json")[0] == 200)
        yield workspace, port
    finally:
        proc.send_signal(signal.SIGTERM)
        workspace.collect(proc)
    assert proc.returncode == 0


def test_jwks_endpoint_headers_and_404s(daemon: tuple[Workspace, int]) -> None:
    """The JWKS has Cache-Control max-age = grace/4 and the jwk-set type; hmac and unknown names are 404."""
    _, port = daemon
    code, headers, body = _get(port, f"/.well-known/jwks/{SECRET}.json")
    assert code == 200
    assert headers["Cache-Control"] == "public, max-age=1"
    assert headers["Content-Type"] == "application/jwk-set+json"
    assert [k["alg"] for k in json.loads(body)["keys"]] == ["EdDSA"]
    for path in ("auth/hmac.json", "nope.json", SECRET, f"{SECRET}.json/x"):
        assert _get(port, f"/.well-known/jwks/{path}")[0] == 404


def test_jwt_rotations_under_traffic(daemon: tuple[Workspace, int]) -> None:
    """Hundreds of JWT calls across two rotations all pass; tokens of retired keys are refused afterwards."""
    workspace, port = daemon
    _, headers, _ = _get(port, f"/.well-known/jwks/{SECRET}.json")
    max_age = int(headers["Cache-Control"].rsplit("=", 1)[1])
    api = Api(f"http://127.0.0.1:{port}/.well-known/jwks/{SECRET}.json", max_age)
    ring = Keyring.from_manifest(workspace.manifest, SECRET, ttl=0.5)
    signer = ring.jwt_signer()
    claims = {"sub": "client", "aud": "api", "exp": int(time.time()) + 300}
    statuses: list[int] = []
    tokens: dict[str, str] = {}  # the last token signed with each key, by kid
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            token = signer.sign(claims)
            tokens[jwt.get_unverified_header(token)["kid"]] = token
            statuses.append(api.call(token))
            time.sleep(0.005)

    first = signer.sign(claims)
    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        for rotation in (1, 2):
            time.sleep(0.7)
            result = workspace.cli("rotate", "--now", SECRET)
            assert result.code == 0, result.err
            _wait(lambda n=rotation: len(tokens) > n, timeout=10)  # the signer switched (after max-age)
        time.sleep(0.3)
    finally:
        stop.set()
        sender.join()
    assert len(statuses) >= 150, f"only {len(statuses)} calls"
    assert statuses.count(401) == 0, f"{statuses.count(401)} valid tokens rejected"
    _first_kid, middle_kid, last_kid = tokens
    assert api.call(tokens[middle_kid]) == 200  # previous, in grace
    time.sleep(max_age + 0.2)  # the API's cached JWKS may list the superseded first key until then
    assert api.call(first) == 401
    _wait(lambda: _states(workspace)[middle_kid] == "retired", timeout=20)  # the daemon ends the grace
    time.sleep(max_age + 0.2)
    assert api.call(tokens[middle_kid]) == 401
    assert api.call(tokens[last_kid]) == 200
    ring.close()


def _states(workspace: Workspace) -> dict[str, str]:
    from rotator.localstore import LocalConfig, LocalProvider
    from rotator.provider import SecretRef

    provider = LocalProvider(name="check", config=LocalConfig(), base_dir=workspace.root)
    try:
        keyset = provider.read(SecretRef(SECRET, SECRET))
        assert keyset is not None
        return {v.id: str(v.state) for v in keyset.versions}
    finally:
        provider.close()
