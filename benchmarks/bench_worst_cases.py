"""Worst cases, in process: each subject is timed against a baseline run beside it (interleaved).

The timing halves of tests that used to assert wall-clock limits (and failed on loaded machines) live here;
the tests keep the behaviour. Goals are reported, never asserted.

| subject | baseline | goal |
|---|---|---|
| hardest password policy (three one-character classes, length 8) | the default password policy | <= 30x |
| ``Schedule.due_at``, minutely cron + 10 s window, rotated a year ago | the same, a minute ago | <= 5x |
| refusing the 600 KB / 200k-alias manifest | ``yaml.compose`` of the same text (libyaml) | <= 3x and < 1 s |
| refusing a 100,000-digit integer | ``yaml.compose`` of the same text | <= 3x and < 1 s |
| refusing a 17 MB manifest and a FIFO | ``os.stat`` of the file | < 1 s each |
| 10,000 log lines with 5,000 registered secret values (redaction) | the same lines with none registered | <= 5x |
"""

from __future__ import annotations

import argparse
import os
import string
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from _common import fmt_ratio, machine_line, median, print_table

from rotator.errors import ManifestError
from rotator.generators import GeneratorParams, generate
from rotator.manifest import MAX_MANIFEST_BYTES, load_manifest, parse_manifest
from rotator.schedule import Schedule


def _timed(fn: Callable[[], object], loops: int) -> float:
    """Seconds per call of ``fn`` over ``loops`` calls."""
    started = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - started) / loops


def _pair(subject: Callable[[], object], baseline: Callable[[], object], loops: int,
          repeats: int) -> tuple[float, float]:
    """Median seconds per call of subject and baseline, measured alternately."""
    s, b = [], []
    for _ in range(repeats):
        b.append(_timed(baseline, loops))
        s.append(_timed(subject, loops))
    return median(s), median(b)


def _refuse(text: str) -> Callable[[], object]:
    def run() -> None:
        try:
            parse_manifest(text, Path("rotation.yaml"), {})
        except ManifestError:
            return
        raise AssertionError("the hostile manifest was accepted")

    return run


def _compose(text: str) -> Callable[[], object]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return lambda: yaml.compose(text, Loader=loader)


def _redaction(repeats: int) -> tuple[float, float]:
    """CPU seconds for 10,000 redacted JSON log lines with 5,000 registered values, and with none."""
    import io
    import secrets

    from rotator.logs import configure_logging, forget_secret, get_logger, register_secret

    configure_logging("json", stream=io.StringIO())
    values = [secrets.token_urlsafe(32) for _ in range(5000)]
    log = get_logger("bench")

    def lines() -> float:
        started = time.process_time()
        for i in range(10_000):
            log.info("rotation.succeeded", secret=f"team/app-{i}", provider="vault", actor="daemon",
                     new_version="v12", message=f"rotated with {values[i % 5000]}")
        return time.process_time() - started

    with_values, without = [], []
    for _ in range(max(1, repeats // 2)):
        without.append(lines())
        for v in values:
            register_secret(v)
        try:
            with_values.append(lines())
        finally:
            for v in values:
                forget_secret(v)
    return median(with_values), median(without)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every pair, print the table, return the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args(argv)
    print(f"bench_worst_cases: repeats={args.repeats}\n{machine_line()}")
    rows: list[list[object]] = []
    summary: dict[str, Any] = {}

    hardest = GeneratorParams(kind="password", length=8, symbols="!",
                              exclude=string.ascii_lowercase[1:] + string.digits[1:])
    plain = GeneratorParams(kind="password")
    s, b = _pair(lambda: generate(hardest), lambda: generate(plain), 50, args.repeats)
    summary["password"] = {"ratio": s / b, "goal": 30.0}
    rows.append(["hardest password policy", f"{s * 1e3:.3f} ms", f"{b * 1e3:.3f} ms",
                 fmt_ratio(s / b, 30.0)])

    schedule = Schedule(cron="* * * * *", window=timedelta(seconds=10))
    now = datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)
    s, b = _pair(lambda: schedule.due_at(now - timedelta(days=365), now),
                 lambda: schedule.due_at(now - timedelta(minutes=1), now), 200, args.repeats)
    summary["due_at"] = {"ratio": s / b, "goal": 5.0}
    rows.append(["due_at after a year's outage", f"{s * 1e6:.0f} us", f"{b * 1e6:.0f} us", fmt_ratio(s / b, 5.0)])

    bomb = "version: 1\nx: &a [1,2,3,4,5,6,7,8,9,10]\nsecrets: [" + ",".join(["*a"] * 200_000) + "]\n"
    digits = "version: 1\nsecrets:\n  - {name: a, kind: api_key, bytes: " + "9" * 100_000 + "}\n"
    for label, text in (("refuse 600 KB alias bomb", bomb), ("refuse 100,000-digit integer", digits)):
        s, b = _pair(_refuse(text), _compose(text), 1, args.repeats)
        verdict = fmt_ratio(s / b, 3.0) + ("" if s < 1 else "; OVER 1 s")
        summary[label] = {"ratio": s / b, "seconds": s}
        rows.append([label, f"{s * 1e3:.0f} ms", f"{b * 1e3:.0f} ms (compose)", verdict])

    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as folder:
        big, fifo = Path(folder) / "big.yaml", Path(folder) / "fifo"
        with big.open("wb") as out:
            out.truncate(MAX_MANIFEST_BYTES + 1_000_000)
        os.mkfifo(fifo)
        for label, path in (("refuse 17 MB manifest", big), ("refuse FIFO without writer", fifo)):
            def refuse(path: Path = path) -> None:
                try:
                    load_manifest(path, env={})
                except ManifestError:
                    return
                raise AssertionError("accepted")

            s, b = _pair(refuse, lambda path=path: os.stat(path), 20, args.repeats)
            summary[label] = {"seconds": s}
            rows.append([label, f"{s * 1e6:.0f} us", f"{b * 1e6:.0f} us (stat)", "ok" if s < 1 else "OVER 1 s"])

    s, b = _redaction(args.repeats)
    summary["redaction"] = {"ratio": s / b, "goal": 5.0}
    rows.append(["10,000 log lines, 5,000 values", f"{s:.2f} s", f"{b:.2f} s (none)", fmt_ratio(s / b, 5.0)])

    print_table(["subject", "time", "baseline", "ratio / goal"], rows)
    return summary


if __name__ == "__main__":
    main()
