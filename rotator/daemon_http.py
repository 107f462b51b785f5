"""The daemon's HTTP endpoints as a WSGI app, served by cheroot with HTTP/1.1 keep-alive.

Routes: ``/metrics`` (``prometheus_client``'s own WSGI app: content negotiation, gzip, ``name[]``
filters), ``/healthz`` (the process answers), ``/readyz`` (the last pass reached every provider and the
daemon is not stopping), ``/.well-known/jwks/<name>.json`` (:mod:`rotator.jwks_http`).

Why cheroot: a pure-Python, production WSGI server (CherryPy's) that parks idle keep-alive connections in a
selector instead of a thread, so hundreds of open connections need only a few worker threads, and closes a
connection idle for ``idle_timeout`` seconds. It was already the test suite's server (tests/moto_server.py).
waitress fits too, but its default ``connection_limit`` of 100 would queue the 101st client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, make_wsgi_app

from rotator.errors import RotatorError
from rotator.jwks_http import JWKS_PATH, Response, jwks_response

if TYPE_CHECKING:
    from cheroot.wsgi import Server

    from rotator.app import Runtime

__all__ = ["DaemonHttp", "make_app"]

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_TEXT = "text/plain; charset=utf-8"
_KEEP_ALIVE_LIMIT = 1024


def _send(start_response: StartResponse, response: Response) -> list[bytes]:
    code, headers, body = response
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}.get(code, "")
    start_response(f"{code} {reason}".strip(), [*headers.items(), ("Content-Length", str(len(body)))])
    return [body]


def make_app(registry: CollectorRegistry, *, ready: Callable[[], tuple[bool, str]],
             runtime: Callable[[], Runtime | None]) -> WsgiApp:
    """The router: ``ready()`` gives (ready, reason) for ``/readyz``, ``runtime()`` the current runtime."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _send(start_response, (405, {"Content-Type": _TEXT, "Allow": "GET, HEAD"},
                                          b"method not allowed\n"))
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _send(start_response, (200, {"Content-Type": _TEXT}, b"ok\n"))
        if path == "/readyz":
            ok, reason = ready()
            return _send(start_response, (200 if ok else 503, {"Content-Type": _TEXT}, (reason + "\n").encode()))
        if path.startswith(JWKS_PATH):
            return _send(start_response, jwks_response(runtime(), path))
        return _send(start_response, (404, {"Content-Type": _TEXT}, b"not found\n"))

    return app


class DaemonHttp:
    """A cheroot server for ``app`` on ``listen:port``; ``start()`` binds (errors are RotatorError)."""

    def __init__(self, app: WsgiApp, listen: str, port: int, *, idle_timeout: int = 15,
                 threads: int = 8) -> None:
        self.app, self.listen, self.port = app, listen, port
        self.idle_timeout, self.threads = idle_timeout, threads
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from cheroot.wsgi import Server

        server = Server(
            (self.listen, self.port), self.app, numthreads=self.threads, server_name="rotator",
            # The listen backlog: http.server's default of 5 made a burst of 200 clients wait for SYN
            # retransmits (1 s, 3 s, 7 s ...) until some timed out.
            request_queue_size=512,
            timeout=self.idle_timeout,  # a keep-alive connection idle this long is closed
            shutdown_timeout=2,
        )
        # cheroot answers `Connection: close` once 10 idle keep-alive connections are parked; a scrape, probe
        # and JWKS fleet keeps far more open. Parked connections cost a selector entry, not a thread.
        server.keep_alive_conn_limit = _KEEP_ALIVE_LIMIT
        try:
            server.prepare()
        except OSError as exc:
            raise RotatorError(f"cannot listen on {self.listen}:{self.port}: {exc.strerror or exc}",
                               hint="choose another --metrics-port") from None
        self._server = server
        self.port = server.bind_addr[1]
        self._thread = threading.Thread(target=server.serve, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close open connections and join the worker threads."""
        if self._server is not None:
            self._server.stop()
            self._server = None
