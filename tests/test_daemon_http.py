"""The daemon's HTTP endpoints on cheroot: HTTP/1.1 keep-alive under 200 concurrent clients, idle connections
closed after --http-idle-timeout, and the router's answers (a real daemon subprocess, real sockets)."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.conftest import Workspace

pytestmark = pytest.mark.xdist_group("processes")

CLIENTS, REQUESTS = 200, 4
PATHS = ("/healthz", "/metrics", "/readyz", "/.well-known/jwks/signing.json")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _wait_ready(port: int, proc: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert getattr(proc, "poll")() is None, "the daemon exited"  # noqa: B009
        try:
            if _get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("daemon not ready in time")


@pytest.fixture
def daemon(workspace: Workspace) -> Iterator[tuple[Workspace, int]]:
    """A daemon with one signing key and one API key, idle connections closed after 2 s."""
    port = _port()
    workspace.write_manifest("""
        version: 1
        defaults: {every: 30d, grace: 1d, notice: 1d}
        secrets:
          - {name: signing, kind: ed25519}
          - {name: api, kind: api_key}
    """)
    proc = workspace.spawn("daemon", "--metrics-port", str(port), "--reconcile-every", "10m",
                           "--http-idle-timeout", "2")
    try:
        _wait_ready(port, proc)
        yield workspace, port
    finally:
        proc.send_signal(signal.SIGTERM)
        workspace.collect(proc, timeout=60)
    assert proc.returncode == 0


def test_200_concurrent_keep_alive_clients_are_all_answered(daemon: tuple[Workspace, int]) -> None:
    """200 clients at once, each making 4 requests on one HTTP/1.1 connection: 800 answers, none times out,
    and every client's 4 requests travelled on the same socket (keep-alive)."""
    workspace, port = daemon
    start = threading.Barrier(CLIENTS)
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    reused: list[bool] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            start.wait(timeout=120)
            sockets = set()
            for path in PATHS[:REQUESTS]:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                assert response.version == 11
                sockets.add(id(conn.sock))
                with lock:
                    statuses[response.status] += 1
                    if path == "/metrics":
                        workspace.outputs.append(body.decode())
            with lock:
                reused.append(len(sockets) == 1)
        except Exception as exc:  # collected and reported below: one failing client must not hide others
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert errors == [], f"{len(errors)} of {CLIENTS} clients failed, e.g. {errors[:3]}"
    assert statuses == {200: CLIENTS * REQUESTS}
    assert reused == [True] * CLIENTS


def test_idle_keep_alive_connection_is_closed_after_the_timeout(daemon: tuple[Workspace, int]) -> None:
    """After an answered request the server keeps the connection open, then closes it once idle for
    --http-idle-timeout (2 s): the client reads end-of-file instead of waiting forever."""
    _, port = daemon
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"ok\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, "closed before answering"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"connection: close" not in answer.lower()
        assert sock.recv(4096) == b""  # blocks until the server closes the idle connection (60 s bound)


def test_router_answers(daemon: tuple[Workspace, int]) -> None:
    """Each route's status and content type; HEAD works, POST is 405, unknown paths and secrets are 404."""
    workspace, port = daemon
    status, headers, body = _get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"rotator_up 1.0" in body
    workspace.outputs.append(body.decode())
    assert _get(port, "/healthz")[::2] == (200, b"ok\n")
    assert _get(port, "/readyz")[::2] == (200, b"ok\n")
    status, headers, body = _get(port, "/.well-known/jwks/signing.json")
    assert status == 200
    assert headers["content-type"] == "application/jwk-set+json"
    assert headers["cache-control"] == "public, max-age=3600"
    (key,) = json.loads(body)["keys"]
    assert key["kty"] == "OKP"
    assert key["alg"] == "EdDSA"
    assert "d" not in key
    assert _get(port, "/.well-known/jwks/api.json")[0] == 404  # not a signing key
    assert _get(port, "/.well-known/jwks/nope.json")[0] == 404
    assert _get(port, "/nope")[0] == 404
    assert _get(port, "/healthz", "HEAD")[0] == 200
    status, headers, _ = _get(port, "/healthz", "POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_port_in_use_is_one_clear_line(workspace: Workspace) -> None:
    """A taken --metrics-port is exit 1 with one line naming the address, before anything rotates."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        workspace.write_manifest("""
            version: 1
            secrets:
              - {name: api, kind: api_key}
        """)
        result = workspace.cli("daemon", "--metrics-port", str(port))
    assert result.code != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.err
    assert "hint: choose another --metrics-port" in result.err
