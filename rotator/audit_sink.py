"""Ship every audit record, as it is written, to an append-only sink outside the log's volume.

``audit.sink`` in the manifest (or ``ROTATOR_AUDIT_SINK``, which wins) names it:

- ``udp://HOST:PORT`` / ``tcp://HOST:PORT``: syslog, one RFC 5424 message per record (facility ``auth``,
  severity ``notice``, APP-NAME ``rotator``, MSGID ``audit``, the record's canonical JSON line as MSG). TCP
  uses octet-counting framing (RFC 6587 section 3.4.1) on one kept-open connection.
- ``file:///PATH``: append the line to a file (mount another volume there, ideally append-only).

The copy is best effort: a sink that is down never fails a step (the log itself is the record and is written
first); a failure is logged once per outage and counted. Lines hold no secret values (see :mod:`rotator.audit`).
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from rotator.errors import UsageError
from rotator.logs import get_logger

__all__ = ["Sink", "parse_sink"]

log = get_logger("rotator.audit")
_FACILITY_AUTH, _SEVERITY_NOTICE = 4, 5
_TIMEOUT = 2.0


class Sink:
    """Where copies of audit lines go; :meth:`send` never raises."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failing = False
        self.failures = 0
        if parts.scheme in ("udp", "tcp"):
            if not parts.hostname or not parts.port:
                raise UsageError(f"audit sink '{url}': give host and port, e.g. {parts.scheme}://127.0.0.1:514")
            self.address = (parts.hostname, parts.port)
        elif parts.scheme == "file":
            if not parts.path:
                raise UsageError(f"audit sink '{url}': give an absolute path, e.g. file:///mnt/audit/rotator.jsonl")
            self.file = Path(parts.path)
        else:
            raise UsageError(f"audit sink '{url}': unknown scheme (use udp://, tcp:// or file://)")
        self._host = socket.gethostname()[:255] or "-"

    def send(self, line: bytes) -> None:
        """Copy one audit line (without its newline) to the sink; failures are logged and counted."""
        with self._lock:
            try:
                if self.scheme == "file":
                    self._append(line)
                else:
                    self._syslog(line)
            except OSError as exc:
                self.failures += 1
                self._close()
                if not self._failing:
                    log.warning("audit.sink_failed", sink=self.url, error=str(exc.strerror or exc))
                self._failing = True
                return
            if self._failing:
                log.info("audit.sink_recovered", sink=self.url)
            self._failing = False

    def _append(self, line: bytes) -> None:
        fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def message(self, line: bytes) -> bytes:
        """The RFC 5424 syslog message carrying ``line``."""
        stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        pri = _FACILITY_AUTH * 8 + _SEVERITY_NOTICE
        return f"<{pri}>1 {stamp} {self._host} rotator {os.getpid()} audit - ".encode() + line

    def _syslog(self, line: bytes) -> None:
        message = self.message(line)
        if self.scheme == "udp":
            if self._sock is None:
                self._sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET,
                                           socket.SOCK_DGRAM)
            self._sock.sendto(message, self.address)
            return
        framed = str(len(message)).encode() + b" " + message
        for attempt in (1, 2):  # a dropped connection is reopened once
            if self._sock is None:
                self._sock = socket.create_connection(self.address, timeout=_TIMEOUT)
            try:
                self._sock.sendall(framed)
                return
            except OSError:
                self._close()
                if attempt == 2:
                    raise

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def close(self) -> None:
        with self._lock:
            self._close()


def parse_sink(configured: str | None) -> Sink | None:
    """The sink from ``ROTATOR_AUDIT_SINK`` or the manifest's ``audit.sink``; ``None`` when neither is set."""
    url = os.environ.get("ROTATOR_AUDIT_SINK") or configured
    return Sink(url) if url else None
