"""``rotator daemon``: APScheduler 3 loop with one date job per secret at its next action, a periodic
reconcile that re-reads the manifest and backends, and an HTTP endpoint for /metrics, /healthz, /readyz.

SIGTERM/SIGINT stop scheduling, let the in-flight step finish (the engine checks between steps), and exit 0.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from rotator.app import Runtime, build_runtime, default_actor, resolve_manifest_path
from rotator.errors import ExitCode, RotatorError
from rotator.logs import get_logger
from rotator.manifest import SecretPolicy
from rotator.metrics import METRICS
from rotator.outcome import Outcome
from rotator.plan import decide

__all__ = ["Daemon"]

log = get_logger("rotator.daemon")


class Daemon:
    """One long-running process; safe to run several replicas against the same backends."""

    def __init__(self, manifest: str | None, *, listen: str, port: int, reconcile_every: timedelta,
                 shutdown_timeout: timedelta = timedelta(seconds=90)) -> None:
        self.manifest_path = resolve_manifest_path(manifest)
        self.listen, self.port, self.every = listen, port, reconcile_every
        self.shutdown_timeout = shutdown_timeout
        self.stopping = threading.Event()
        self.runtime: Runtime | None = None
        self.ready = False
        self.ready_reason = "starting"
        self._mtime: float | None = None
        self._lock = threading.Lock()
        self._scheduler: Any = None
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def run(self) -> ExitCode:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.blocking import BlockingScheduler

        self.runtime = self._load()  # a broken manifest at start-up is exit 2, like every command
        self._serve_http()
        self._scheduler = BlockingScheduler(
            timezone="UTC", executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: thread stacks on stderr
        METRICS.up.set(1)
        first = self.reconcile()
        self._print_plan()
        from rotator.schedule import format_duration

        log.info("daemon.started", secrets=len(self.runtime.manifest.secrets), listen=f"{self.listen}:{self.port}",
                 reconcile_every=format_duration(self.every), first_pass_ok=first)
        self._scheduler.add_job(self.reconcile, "interval", seconds=self.every.total_seconds(), id="reconcile")
        if not self.stopping.is_set():
            self._scheduler.start()
        self._shutdown()
        log.info("daemon.stopped")
        return ExitCode.OK

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.stopping.is_set():
            return
        log.info("daemon.stopping", signal=signal.Signals(signum).name)
        self.stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            threading.Thread(target=self._scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        """Bound the graceful stop: a backend call that hangs must not keep the process past its grace.

        Leaving is safe at any instant (every step is one conditional write; the next actor resumes or
        discards a pending attempt); the thread stacks go to stderr so the hang can be diagnosed.
        """
        time.sleep(self.shutdown_timeout.total_seconds())
        log.error("daemon.shutdown_timeout", seconds=self.shutdown_timeout.total_seconds(),
                  detail="in-flight steps did not finish; leaving them to the next actor")
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        os._exit(int(ExitCode.OK))

    def _shutdown(self) -> None:
        METRICS.up.set(0)
        if self._server is not None:
            self._server.shutdown()
        if self.runtime is not None:
            self.runtime.close(timeout=10)

    # --- work ------------------------------------------------------------------------------------------

    def _load(self) -> Runtime:
        runtime = build_runtime(self.manifest_path, actor=default_actor("daemon"),
                                stop_requested=self.stopping.is_set)
        self._mtime = _mtime(self.manifest_path)
        return runtime

    def _refresh(self) -> Runtime:
        """Re-read the manifest when it changed; keep the old one (and say so) if the new one is broken."""
        assert self.runtime is not None
        if _mtime(self.manifest_path) != self._mtime:
            try:
                fresh = self._load()
            except RotatorError as exc:
                log.error("manifest.reload_failed", error=exc.message)
                self._mtime = _mtime(self.manifest_path)
            else:
                old, self.runtime = self.runtime, fresh
                old.close(timeout=10)
                log.info("manifest.reloaded", secrets=len(fresh.manifest.secrets))
        return self.runtime

    def reconcile(self) -> bool:
        """A full pass over every secret, then (re)schedule each secret's next action."""
        with self._lock:
            runtime = self._refresh()
        problems = self._check_providers(runtime)
        policies = list(runtime.manifest.secrets.values())
        outcomes = runtime.engine.reconcile(policies, concurrency=4)
        runtime.audit.anchor()  # the pass's audit head to the backend: one write, only if the log grew
        for policy, outcome in zip(policies, outcomes, strict=True):
            self._schedule_next(runtime, policy, outcome)
        outcomes += _deliver(runtime, policies)
        failed = [o for o in outcomes if not o.ok]
        for outcome in failed:
            log.warning("reconcile.secret_failed", secret=outcome.secret, error=outcome.message)
        self.ready = not problems
        self.ready_reason = "; ".join(problems) if problems else "ok"
        return not failed

    def _run_secret(self, name: str) -> None:
        runtime = self.runtime
        if runtime is None or self.stopping.is_set() or name not in runtime.manifest.secrets:
            return
        policy = runtime.manifest.secrets[name]
        outcome = runtime.engine.reconcile_one(policy)
        runtime.audit.anchor()
        if not outcome.ok:
            log.warning("secret.job_failed", secret=name, error=outcome.message)
        self._schedule_next(runtime, policy, outcome)
        _deliver(runtime, [policy])

    def _schedule_next(self, runtime: Runtime, policy: SecretPolicy, outcome: Outcome) -> None:
        """A job at the secret's next action time: from the pass's settled decision, else from a fresh read."""
        if self._scheduler is None or self.stopping.is_set():
            return
        now = runtime.engine.clock()
        next_at = outcome.next_at
        if next_at is None:  # the pass ended on a step (or failed): decide on what is stored now
            try:
                keyset = runtime.engine.read(policy, values=False)
            except RotatorError:
                return  # the periodic reconcile retries; readiness reports the backend
            next_at = decide(policy, keyset, now).next_at
        if next_at is None:
            return
        run_at = max(next_at, now) + timedelta(milliseconds=50)
        self._scheduler.add_job(self._run_secret, "date", run_date=run_at, args=[policy.name],
                                id=f"secret:{policy.name}", replace_existing=True)

    def _check_providers(self, runtime: Runtime) -> list[str]:
        problems = []
        for name in runtime.providers.names():
            try:
                runtime.providers.get(name).check()
            except RotatorError as exc:
                METRICS.backend_errors.labels(provider=name).inc()
                problems.append(f"provider {name}: {exc.message}")
        return problems

    def _print_plan(self) -> None:
        from rotator.commands import plan_rows

        if self.runtime is None:
            return
        try:
            plan_rows(self.runtime, self.runtime.engine.clock(), "table")
            sys.stdout.flush()
        except RotatorError as exc:
            log.warning("plan.failed", error=exc.message)

    # --- HTTP ------------------------------------------------------------------------------------------

    def _serve_http(self) -> None:
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, METRICS.render(), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    code = 200 if daemon.ready and not daemon.stopping.is_set() else 503
                    self._send(code, (daemon.ready_reason + "\n").encode())
                elif path.startswith("/.well-known/jwks/"):
                    from rotator.jwks import serve_jwks

                    serve_jwks(self, daemon.runtime, path)
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._server = ThreadingHTTPServer((self.listen, self.port), Handler)
        except OSError as exc:
            raise RotatorError(f"cannot listen on {self.listen}:{self.port}: {exc.strerror}",
                               hint="choose another --metrics-port") from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="http", daemon=True).start()


def _deliver(runtime: Runtime, policies: list[SecretPolicy]) -> list[Outcome]:
    """Bring the sinks up to date (rotator.sinks logs and reports failures; the next pass retries)."""
    from rotator.sinks.reconcile import deliver

    return deliver(runtime, policies, note=lambda text: log.warning("sink.skipped", detail=text))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
