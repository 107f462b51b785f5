"""The daemon's HTTP endpoints under a burst: C clients (default 200) each making 4 requests on one connection.

Subject: `rotator daemon` (cheroot) answering /healthz, /metrics, /readyz and one JWKS on a generated manifest.
Baselines, each in a subprocess of its own answering the same paths with fixed bodies of the same sizes:
(a) a bare cheroot WSGI app with the daemon's server settings: the ratio is what rotator's routing, metric
rendering and JWKS read cost; (b) stdlib ThreadingHTTPServer, the daemon's previous server, for the count of
clients that time out (the issue: 35 of 800 requests at 30 s). Runs interleave and repeat; medians reported.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, clean_env, median, print_table, rotator_cmd, workspace

PATHS = ("/healthz", "/metrics", "/readyz", "/.well-known/jwks/signing.json")

_SERVER = r'''
import sys
kind, port, sizes = sys.argv[1], int(sys.argv[2]), dict(zip(sys.argv[3::2], map(int, sys.argv[4::2])))
bodies = {path: b"x" * size for path, size in sizes.items()}
if kind == "cheroot":
    from cheroot.wsgi import Server
    def app(environ, start_response):
        body = bodies.get(environ["PATH_INFO"], b"not found\n")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    server = Server(("127.0.0.1", port), app, numthreads=8, request_queue_size=512, timeout=15)
    server.keep_alive_conn_limit = 1024
    server.safe_start()
else:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = bodies.get(self.path, b"not found\n")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", port), H)
    server.daemon_threads = True
    server.serve_forever()
'''


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(port: int, path: str = "/healthz") -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on {port} not ready")


def burst(port: int, clients: int, timeout: float) -> tuple[float, int, int]:
    """(seconds, failed requests, reconnects) for ``clients`` x 4 requests started together."""
    start = threading.Barrier(clients + 1)
    failed = reconnects = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal failed, reconnects
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        start.wait()
        sockets = set()
        for path in PATHS:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                sockets.add(id(conn.sock))
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
            if not ok:
                with lock:
                    failed += 1
        with lock:
            reconnects += max(len(sockets) - 1, 0)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    return time.monotonic() - began, failed, reconnects


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args(argv)
    with workspace() as root:
        manifest = root / "rotation.yaml"
        manifest.write_text("version: 1\ndefaults: {every: 30d, grace: 1d}\nsecrets:\n"
                            "  - {name: signing, kind: ed25519}\n"
                            + "".join(f"  - {{name: s{i}, kind: hmac}}\n" for i in range(50)))
        env = clean_env()
        port = _port()
        daemon = subprocess.Popen([*rotator_cmd(), "-f", str(manifest), "daemon", "--metrics-port", str(port),
                                   "--reconcile-every", "1h"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        others: dict[str, subprocess.Popen[bytes]] = {}
        try:
            _wait(port, "/readyz")
            sizes = []
            for path in PATHS:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                    sizes += [path, str(len(response.read()))]
            ports = {"rotator daemon (cheroot)": port}
            for kind, label in (("cheroot", "bare cheroot app"), ("stdlib", "http.server (before)")):
                ports[label] = _port()
                others[label] = subprocess.Popen([PYTHON, "-c", _SERVER, kind, str(ports[label]), *sizes], env=env,
                                                 stderr=subprocess.DEVNULL)  # http.server: broken pipes
                _wait(ports[label])
            runs: dict[str, list[tuple[float, int, int]]] = {name: [] for name in ports}
            for _ in range(args.repeats):
                for name, p in ports.items():
                    runs[name].append(burst(p, args.clients, args.timeout))
                    time.sleep(1)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            for proc in others.values():
                proc.kill()
                proc.wait()
    base = median([r[0] for r in runs["bare cheroot app"]])
    rows = []
    for name, results in runs.items():
        wall = median([r[0] for r in results])
        rows.append([name, f"{wall:.2f} s", f"{wall / base:.2f}x", max(r[1] for r in results),
                     max(r[2] for r in results)])
    print_table(["server", f"{args.clients} x 4 requests (median)", "vs bare cheroot", "failed (worst run)",
                 "reconnects (worst run)"], rows, title="daemon HTTP burst")
    subject = runs["rotator daemon (cheroot)"]
    return {"ratio": median([r[0] for r in subject]) / base, "failed": max(r[1] for r in subject)}


if __name__ == "__main__":
    main()
