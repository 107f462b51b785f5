"""Rotate N PostgreSQL roles (default 200) with ``alternating`` through the postgres target, against a bare loop.

Set-up (untimed): a fresh PostgreSQL 15 (``tests/pg_server.py``, run as the ``postgres`` user, statement log
off); N roles for the baseline with a password, and N alternating bindings prepared (group role + both
identities) with the primary enabled, as after ``create``.

Measured, interleaved (``--repeats`` rounds, median of the pairwise ratios):

- baseline: per role, ``ALTER ROLE r PASSWORD '<plaintext>'`` on one superuser connection, then one login as
  ``r`` with the new password and ``SELECT 1``: the least any tool that changes and checks a password does.
- target: per role, what one alternating rotation asks of the target through the SPI: ``prepare`` (the
  idempotent check), ``enable`` of a new password on the idle identity (SCRAM verifier computed client-side),
  ``login`` with it, and ``disable`` of the previous password on the other identity (retire).

- engine: ``Engine.reconcile(force=True)`` (what ``rotate --all --now`` runs), in-process, on the ``local``
  store, for N secrets bound to the same server with ``alternating`` and ``grace: 0s`` (each forced rotation
  stages on the idle identity, logs in, promotes, and retires the previous value on the target at once).
  This includes the store's fsync'd commits and the audit log, which the baseline does not have.

Goal (issue 13): at most 2x the baseline.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import fmt_ratio, interleave, machine_line, median, print_table, ratios

GOAL = 2.0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import psycopg
    from psycopg import sql
    from rotator_postgres import PostgresConfig, PostgresTarget

    from rotator.target import Binding, Credential, Strategy
    from tests.pg_server import start_postgres

    server = start_postgres(log_statement="none")
    admin = Credential({"username": server.superuser, "password": server.password})
    config = PostgresConfig(host=server.host, port=server.port)
    target = PostgresTarget(name="bench", config=config, base_dir=Path("."), admin=lambda: [admin])
    try:
        plain = [f"bench_plain_{i}" for i in range(args.n)]
        bindings = [Binding(f"bench/{i}", "bench", f"bench_alt_{i}", Strategy.ALTERNATING) for i in range(args.n)]
        with server.connect() as conn:
            for name in plain:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(secrets.token_urlsafe(24))))
        active: dict[str, Credential] = {}
        for binding in bindings:
            target.prepare(binding)
            first = Credential({"username": binding.username, "password": secrets.token_urlsafe(24)})
            target.enable(binding, first)
            active[binding.secret] = first

        admin_conn = server.connect()

        def baseline() -> float:
            start = time.perf_counter()
            for name in plain:
                password = secrets.token_urlsafe(24)
                admin_conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)))
                with psycopg.connect(host=server.host, port=server.port, dbname="postgres", user=name,
                                     password=password, autocommit=True) as conn:
                    conn.execute("SELECT 1").fetchone()
            return time.perf_counter() - start

        def through_target() -> float:
            start = time.perf_counter()
            for binding in bindings:
                previous = active[binding.secret]
                new = Credential({"username": binding.other(previous.username),
                                  "password": secrets.token_urlsafe(24)})
                target.prepare(binding)
                target.enable(binding, new)
                target.login(binding, new)
                target.disable(binding, previous)
                active[binding.secret] = new
            return time.perf_counter() - start

        runtime, policies = _engine_setup(server, args.n)

        def through_engine() -> float:
            start = time.perf_counter()
            outcomes = runtime.engine.reconcile(policies, force=True)
            elapsed = time.perf_counter() - start
            failed = [o for o in outcomes if not o.ok]
            assert not failed, failed[:3]
            return elapsed

        try:
            times = interleave(baseline, {"target": through_target, "engine": through_engine}, args.repeats)
        finally:
            runtime.close()
            shutil.rmtree(runtime.manifest.base_dir, ignore_errors=True)
        admin_conn.close()
    finally:
        target.close()
        server.stop()
    ratio = median(ratios(times["target"], times["baseline"]))
    engine_ratio = median(ratios(times["engine"], times["baseline"]))
    ms = {name: 1000 * median(values) / args.n for name, values in times.items()}
    print(machine_line())
    print_table(["path", "ms per role", "ratio"], [
        ["bare ALTER ROLE + login", f"{ms['baseline']:.2f}", "1.00x"],
        ["postgres target (prepare, enable, login, disable)", f"{ms['target']:.2f}", fmt_ratio(ratio, GOAL)],
        ["engine: reconcile(force=True), local store", f"{ms['engine']:.2f}", fmt_ratio(engine_ratio, GOAL)],
    ], title=f"{args.n} PostgreSQL roles rotated with alternating, {args.repeats} interleaved rounds")
    return {"n": args.n, "goal": GOAL, "ratio": ratio, "engine_ratio": engine_ratio, "ms_per_role": ms}


def _engine_setup(server: Any, n: int) -> tuple[Any, list[Any]]:
    """A runtime over a temp local store with N alternating secrets on ``server``, all created (untimed)."""
    import os
    import tempfile

    from rotator.app import build_runtime

    root = Path(tempfile.mkdtemp(prefix="rotator-bench-pg-"))
    os.environ["BENCH_PG_ADMIN"] = server.password
    os.environ["ROTATOR_AUDIT_LOG"] = str(root / "audit.jsonl")
    lines = ["version: 1", "defaults: {provider: local, every: 30d, grace: 0s}",
             "providers:", "  local: {type: local, path: store.db}",
             "targets:", f"  bench: {{type: postgres, host: {server.host}, port: {server.port}, "
             'admin: {username: postgres, password: "${BENCH_PG_ADMIN}"}}',
             "secrets:"]
    lines += [f"  - {{name: app{i}, kind: password, target: {{name: bench, username: bench_eng_{i}, "
              "strategy: alternating}}" for i in range(n)]
    (root / "rotation.yaml").write_text("\n".join(lines) + "\n")
    runtime = build_runtime(root / "rotation.yaml", actor="cli:bench", notify=False)
    policies = list(runtime.manifest.secrets.values())
    outcomes = runtime.engine.reconcile(policies)
    assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:3]
    return runtime, policies


if __name__ == "__main__":
    main()
