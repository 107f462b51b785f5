"""``rotator rotate --all --now`` on the local store vs the same number of bare fsync'd SQLite writes.

Set-up (untimed): generate a manifest of N secrets, ``rotator run`` creates them all, and the ``.rotator``
folder (store, master key, audit log) is snapshotted. Before every timed run the snapshot is restored, so
each rotation starts from the realistic state (one ``current`` value, nothing in grace).

Subject: the real CLI in a subprocess, ``rotate --all --now`` with ``--concurrency 1`` and ``4``.
Baseline: a subprocess of the same interpreter that opens the same store file (WAL, ``synchronous=FULL``)
and performs exactly as many single-row ``BEGIN IMMEDIATE; UPDATE; COMMIT`` transactions as the engine
committed (counted from the sum of row revisions before/after: stage + promote = 2 per secret). The
subject's audit fsyncs, encryption, reads and process start-up are its own cost, not the baseline's.
Goal (issue 2): ratio <= 3x. ``--profile`` adds a cProfile of the in-process path (``Engine.reconcile``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    Run,
    fmt_ratio,
    interleave,
    machine_line,
    median,
    print_table,
    ratios,
    require_rotator,
    rotator_cmd,
    run,
    workspace,
    write_manifest,
)

GOAL = 3.0
DEFAULT_N = 1000  # 10,000 (the size) takes ~10 minutes here: run it with --n 10000

# The baseline: the same number of durable single-row writes to the same file, nothing else.
BASELINE = r"""
import sqlite3, sys
path, writes = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(path, isolation_level=None)
assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
conn.execute("PRAGMA synchronous = FULL")
rows = conn.execute("SELECT path, doc FROM keysets ORDER BY path").fetchall()
for i in range(writes):
    key, doc = rows[i * len(rows) // writes]  # consecutive writes hit the same row, like stage + promote
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE keysets SET revision = revision + 1, doc = ? WHERE path = ?", (doc, key))
    conn.execute("COMMIT")
conn.close()
"""


def _revisions(store: Path) -> int:
    conn = sqlite3.connect(store)
    try:
        return int(conn.execute("SELECT COALESCE(SUM(revision), 0) FROM keysets").fetchone()[0])
    finally:
        conn.close()


def _lines(path: Path) -> int:
    return sum(1 for _ in path.open("rb")) if path.exists() else 0


class Setup:
    """A workspace with N created secrets and a snapshot of ``.rotator`` to restore before each run."""

    def __init__(self, root: Path, n: int) -> None:
        self.root, self.n = root, n
        self.manifest = root / "rotation.yaml"
        self.state = root / ".rotator"
        self.snapshot = root / "snapshot"
        self.counts = write_manifest(self.manifest, n)
        result = run([*rotator_cmd(), "-f", str(self.manifest), "run", "-o", "json"], cwd=root)
        self.setup_seconds = result.wall
        conn = sqlite3.connect(self.state / "store.db")
        try:
            created = int(conn.execute("SELECT COUNT(*) FROM keysets").fetchone()[0])
        finally:
            conn.close()
        if created != n:
            raise RuntimeError(f"set-up: `rotator run` created {created} of {n} secrets")
        shutil.copytree(self.state, self.snapshot)
        self.base_revisions = _revisions(self.state / "store.db")
        self.base_audit = _lines(self.state / "audit.jsonl")

    def restore(self) -> None:
        shutil.rmtree(self.state)
        shutil.copytree(self.snapshot, self.state)

    def rotate(self, concurrency: int) -> tuple[float, Run]:
        argv = [*rotator_cmd(), "-f", str(self.manifest), "rotate", "--all", "--now",
                "--concurrency", str(concurrency), "-o", "json"]
        result = run(argv, cwd=self.root)
        results = json.loads(result.stdout)["results"]
        # "noticed": rotated, then a cron secret's next tick fell inside its notice lead (time-of-day luck)
        rotated = sum(r["ok"] and r["action"] in ("rotated", "noticed") for r in results)
        if rotated != self.n:
            raise RuntimeError(f"rotate --concurrency {concurrency}: {rotated} of {self.n} rotated")
        return result.wall, result

    def writes(self) -> tuple[int, int]:
        """Row writes committed and audit records appended since the snapshot."""
        return (_revisions(self.state / "store.db") - self.base_revisions,
                _lines(self.state / "audit.jsonl") - self.base_audit)

    def baseline(self, writes: int) -> float:
        return run([PYTHON, "-c", BASELINE, str(self.state / "store.db"), str(writes)], cwd=self.root).wall


def profile(setup: Setup, top: int = 30) -> str:
    """cProfile of ``Engine.reconcile(force=True, concurrency=1)`` in this process, sorted by cumtime."""
    from rotator.app import build_runtime
    from rotator.logs import configure_logging

    setup.restore()
    with open(os.devnull, "w") as sink:
        configure_logging("json", 0, stream=sink)  # the CLI logs JSON to stderr when it is not a TTY
        runtime = build_runtime(setup.manifest, actor="cli:bench")
        policies = list(runtime.manifest.secrets.values())
        profiler = cProfile.Profile()
        profiler.enable()
        outcomes = runtime.engine.reconcile(policies, force=True, concurrency=1)
        profiler.disable()
        runtime.close()
    if not all(o.ok for o in outcomes):
        raise RuntimeError("profile run: some rotations failed")
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    text.write("\n--- by own time ---\n")
    stats.sort_stats("tottime").print_stats(15)
    return text.getvalue()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, return the summary (used by run_all.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"secrets (default {DEFAULT_N})")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="values to measure")
    parser.add_argument("--profile", action="store_true", help="also cProfile the in-process path")
    args = parser.parse_args(argv)
    require_rotator()
    print(f"bench_rotate_local: N={args.n}, repeats={args.repeats}\n{machine_line()}")

    with workspace() as root:
        setup = Setup(root, args.n)
        print(f"set-up: `rotator run` created {args.n} secrets {setup.counts} in {setup.setup_seconds:.1f}s")
        setup.restore()
        setup.rotate(1)  # a warm-up run, also used to count the engine's durable writes
        writes, audits = setup.writes()
        print(f"engine per rotation: {writes / args.n:g} SQLite commits + {audits / args.n:g} audit fsyncs; "
              f"baseline does {writes} fsync'd single-row writes")
        extra: dict[int, list[Run]] = {c: [] for c in args.concurrency}

        def subject(c: int) -> Callable[[], float]:
            def once() -> float:
                wall, result = setup.rotate(c)
                extra[c].append(result)
                return wall
            return once

        subjects = {f"rotate c{c}": subject(c) for c in args.concurrency}
        times = interleave(lambda: setup.baseline(writes), subjects, args.repeats, before=setup.restore)

        base = median(times["baseline"])
        rows: list[list[object]] = [["baseline (bare SQLite)", f"{base:.2f}", "-", "-",
                                     f"{base / writes * 1000:.3f}/write", "-"]]
        summary: dict[str, Any] = {"n": args.n, "writes": writes, "audit_records": audits,
                                   "baseline_s": base, "goal": GOAL}
        for c in args.concurrency:
            name = f"rotate c{c}"
            ratio = median(ratios(times[name], times["baseline"]))
            wall = median(times[name])
            cpu = median([r.cpu for r in extra[c]])
            rss = max(r.rss_mib for r in extra[c])
            rows.append([name, f"{wall:.2f}", f"{cpu:.2f}", f"{rss:.0f}", f"{wall / args.n * 1000:.2f}/rotation",
                         fmt_ratio(ratio, GOAL)])
            summary[f"c{c}"] = {"wall_s": wall, "cpu_s": cpu, "rss_mib": rss, "ratio": ratio,
                                "ms_per_rotation": wall / args.n * 1000}
        print_table(["run", "wall s", "cpu s", "peak MiB", "ms", "median ratio vs baseline"], rows,
                    title=f"rotate --all --now of {args.n} secrets (median of {args.repeats}, interleaved)")
        print("raw wall seconds: " + "; ".join(f"{k}: {', '.join(f'{t:.2f}' for t in v)}"
                                                for k, v in times.items()))
        if args.profile:
            print(f"\nin-process profile (Engine.reconcile, concurrency 1, N={args.n}):")
            print(profile(setup))
    return summary


if __name__ == "__main__":
    main()
