"""Tests for rotator.audit_sink: every audit line reaches a real syslog receiver (UDP datagrams and TCP with
octet counting, both socketserver servers the test starts on 127.0.0.1) or a file on another path, as RFC 5424
messages carrying the exact line; a dead sink never fails an append; bad sink URLs are usage errors."""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.audit import AuditLog
from rotator.audit_sink import Sink, parse_sink
from rotator.errors import UsageError

# RFC 5424: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP STRUCTURED-DATA SP MSG
RFC5424 = re.compile(rb"^<37>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ rotator \d+ audit - (?P<msg>\{.*\})$")


class _Received:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.cond = threading.Condition()

    def add(self, message: bytes) -> None:
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 10) -> list[bytes]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


def _serve(server: socketserver.BaseServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def udp_receiver() -> Iterator[tuple[str, _Received]]:
    """A syslog receiver on UDP: one message per datagram."""
    received = _Received()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            received.add(self.request[0])

    with socketserver.UDPServer(("127.0.0.1", 0), Handler) as server:
        _serve(server)
        yield f"udp://127.0.0.1:{server.server_address[1]}", received
        server.shutdown()


@pytest.fixture
def tcp_receiver() -> Iterator[tuple[str, _Received]]:
    """A syslog receiver on TCP that parses octet-counted frames (RFC 6587 section 3.4.1)."""
    received = _Received()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while True:
                length = b""
                while (ch := self.rfile.read(1)) not in (b" ", b""):
                    length += ch
                if not length:
                    return
                received.add(self.rfile.read(int(length)))

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server(("127.0.0.1", 0), Handler) as server:
        _serve(server)
        yield f"tcp://127.0.0.1:{server.server_address[1]}", received
        server.shutdown()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_every_line_reaches_the_syslog_receiver(tmp_path: Path, transport: str, request: pytest.FixtureRequest) -> None:
    """Each appended record arrives once, in order, as an RFC 5424 message whose MSG is the exact log line."""
    url, received = request.getfixturevalue(f"{transport}_receiver")
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, sink=Sink(url)) as log:
        for i in range(5):
            log.append({"type": "test", "i": i})
    messages = received.wait(5)
    matches = [RFC5424.match(m) for m in messages]
    assert all(matches), messages
    assert [m.group("msg") for m in matches if m] == _lines(path)


def test_file_sink_gets_the_same_lines(tmp_path: Path) -> None:
    """A file sink (another volume in production) holds a byte-identical copy, mode 0600."""
    copy = tmp_path / "other-volume" / "audit-copy.jsonl"
    copy.parent.mkdir()
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, sink=Sink(f"file://{copy}")) as log:
        for i in range(3):
            log.append({"type": "test", "i": i})
    assert _lines(copy) == _lines(path)
    assert oct(copy.stat().st_mode & 0o777) == "0o600"


def test_dead_tcp_sink_never_fails_an_append(tmp_path: Path) -> None:
    """With nobody listening the append still succeeds; failures are counted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = Sink(f"tcp://127.0.0.1:{port}")
    with AuditLog(tmp_path / "audit.jsonl", sink=sink) as log:
        log.append({"type": "test"})
        log.append({"type": "test"})
    assert sink.failures == 2
    assert len(_lines(tmp_path / "audit.jsonl")) == 2


def test_tcp_sink_reconnects_after_the_receiver_restarts(tmp_path: Path, tcp_receiver: tuple[str, _Received]) -> None:
    """A dropped connection is reopened for the next record."""
    url, received = tcp_receiver
    sink = Sink(url)
    with AuditLog(tmp_path / "audit.jsonl", sink=sink) as log:
        log.append({"type": "test", "i": 0})
        received.wait(1)
        assert sink._sock is not None
        sink._sock.shutdown(socket.SHUT_RDWR)  # as if the receiver had gone away
        time.sleep(0.05)
        log.append({"type": "test", "i": 1})
        log.append({"type": "test", "i": 2})
    assert len(received.wait(3)) >= 2  # the write on the dead socket may be lost (best effort), later ones arrive


@pytest.mark.parametrize(("url", "needle"), [
    ("syslog://x:1", "unknown scheme"),
    ("udp://127.0.0.1", "give host and port"),
    ("file://", "absolute path"),
])
def test_bad_sink_urls(url: str, needle: str) -> None:
    """A malformed sink is a usage error naming what to write."""
    with pytest.raises(UsageError, match=needle):
        Sink(url)


def test_env_overrides_the_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """ROTATOR_AUDIT_SINK wins over audit.sink; neither means no sink."""
    monkeypatch.delenv("ROTATOR_AUDIT_SINK", raising=False)
    assert parse_sink(None) is None
    configured = parse_sink("udp://127.0.0.1:514")
    assert configured is not None
    assert configured.url == "udp://127.0.0.1:514"
    monkeypatch.setenv("ROTATOR_AUDIT_SINK", "tcp://127.0.0.1:601")
    chosen = parse_sink("udp://127.0.0.1:514")
    assert chosen is not None
    assert chosen.url == "tcp://127.0.0.1:601"
