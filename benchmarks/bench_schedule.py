"""``plan.decide`` for N secrets with time zones, jitter and freeze windows, against plain ``every`` schedules.

Baseline: N secrets ``every: 90d`` (UTC, no jitter, no freeze). Subjects, each on the same N keysets: ``jitter``
(every + jitter: a SHA-256 per decision), ``utc cron`` (a weekly cron + window, as before time zones) and
``tz cron`` (the same in Europe/Berlin, on the wall clock; compare it with ``utc cron``), ``frozen`` (every +
jitter, due, inside a weekend cron freeze plus an absolute range: the freeze end is searched), and
``manual`` (kind manual, overdue). In-process, interleaved rounds, median ratio per subject.
Goal: each ratio <= 10x (decide stays far below a backend read, which is what a pass waits on), except cron,
whose cost is APScheduler's fire-time search: there ``tz cron`` <= 1.5x ``utc cron``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rotator.keyset import Keyset, KeyVersion, State
from rotator.manifest import SecretPolicy, parse_manifest
from rotator.plan import decide

GOAL = 10.0
NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)  # a Saturday: inside the weekend freeze
SUBJECTS = {
    "baseline": "{every: 90d, grace: 7d, notice: 14d}",
    "jitter": "{every: 90d, grace: 7d, notice: 14d, jitter: 6h}",
    "utc cron": '{cron: "0 3 * * MON", window: 2h, grace: 1d, notice: 1d}',
    "tz cron": '{cron: "0 3 * * MON", window: 2h, tz: Europe/Berlin, grace: 1d, notice: 1d}',
    "frozen": '{every: 90d, grace: 7d, notice: 14d, jitter: 6h, tz: Europe/Berlin, freeze: ['
              '{cron: "0 0 * * SAT", duration: 48h}, {start: "2026-12-20", end: "2027-01-04"}]}',
    "manual": "{kind: manual, every: 90d, grace: 7d, notice: 14d}",
}


def policies(defaults: str, n: int) -> list[SecretPolicy]:
    kind = "manual" if "kind: manual" in defaults else "hmac"
    body = "".join(f"  - {{name: tenant-{i:05d}/key, kind: {kind}}}\n" for i in range(n))
    text = f"version: 1\ndefaults: {defaults.replace('kind: manual, ', '')}\nsecrets:\n{body}"
    return list(parse_manifest(text, Path("rotation.yaml"), {}).secrets.values())


def keysets(n: int, age: timedelta) -> list[Keyset]:
    at = NOW - age
    return [Keyset(f"tenant-{i:05d}/key", "1", (KeyVersion("cur", State.CURRENT, at, promoted_at=at),),
                   {"notices": {"cycle": "cur", "sent": ["14d", "1d"]}}) for i in range(n)]


def one_pass(chosen: list[SecretPolicy], stored: list[Keyset]) -> float:
    started = time.perf_counter()
    for policy, keyset in zip(chosen, stored, strict=True):
        decide(policy, keyset, NOW)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    due = keysets(args.n, timedelta(days=91))
    built = {name: policies(defaults, args.n) for name, defaults in SUBJECTS.items()}
    times: dict[str, list[float]] = {name: [] for name in SUBJECTS}
    for _ in range(args.repeats):
        for name, chosen in built.items():
            times[name].append(one_pass(chosen, due))
    base, cron = times["baseline"], times["utc cron"]
    print(f"bench_schedule: N={args.n}, repeats={args.repeats} (interleaved), decide() per secret")
    summary = {}
    for name, runs in times.items():
        ratio = statistics.median(t / b for t, b in zip(runs, base, strict=True))
        per = statistics.median(runs) / args.n * 1e6
        mark = "" if name == "baseline" else (" ok" if ratio <= GOAL else f" MISS (goal {GOAL:g}x)")
        if "cron" in name:
            vs_cron = statistics.median(t / c for t, c in zip(runs, cron, strict=True))
            mark = f" ({vs_cron:.2f}x utc cron{'' if vs_cron <= 1.5 else ', MISS (goal 1.5x)'})"
        print(f"  {name:9} {per:7.1f} us/secret  {ratio:5.2f}x{mark}")
        summary[name] = ratio
    return summary


if __name__ == "__main__":
    main()
