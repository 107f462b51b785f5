"""Run every benchmark and print one summary table (``make bench``); ``--quick`` uses small sizes.

Goals are reported, never asserted: the exit code is 1 only if a benchmark itself crashed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_plan
import bench_rotate_local
import bench_startup
from _common import fmt_ratio, machine_line, print_table, require_rotator

QUICK: dict[str, list[str]] = {"rotate": ["--n", "200"], "plan": ["--n", "2000"], "startup": ["--repeats", "5"]}


def _rows(name: str, s: dict[str, Any]) -> list[list[object]]:
    """Summary lines of one benchmark's result."""
    if name == "rotate":
        return [[f"rotate --all --now, N={s['n']}, --concurrency {c}",
                 f"{s[f'c{c}']['ms_per_rotation']:.2f} ms/rotation, {s[f'c{c}']['rss_mib']:.0f} MiB",
                 fmt_ratio(s[f"c{c}"]["ratio"], s["goal"])]
                for c in (1, 4) if f"c{c}" in s]
    if name == "plan":
        return [[f"{cmd}, N={s['n']}", f"{s[cmd]['wall_s']:.2f} s, {s[cmd]['rss_mib']:.0f} MiB "
                 f"(yaml.load {s['baseline']['rss_mib']:.0f} MiB)", fmt_ratio(s[cmd]["ratio"], s["goal"])]
                for cmd in ("validate", "plan")]
    return [[f"rotator {cmd} start-up",
             f"{s[cmd]['overhead_ms']:.0f} ms over python -c pass (cpu {s[cmd]['cpu_overhead_ms']:.0f} ms)",
             f"{'ok' if s[cmd]['overhead_ms'] <= s['goal_ms'] else 'OVER'} <= {s['goal_ms']:.0f} ms"
             + (f"; eager: {', '.join(s[cmd]['eager_forbidden'])}" if s[cmd]["eager_forbidden"] else "")]
            for cmd in ("help", "validate")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute in all)")
    parser.add_argument("--only", choices=["rotate", "plan", "startup"], action="append", help="run just these")
    args = parser.parse_args(argv)
    require_rotator()
    benches: dict[str, Callable[[list[str]], dict[str, Any]]] = {
        "startup": bench_startup.main, "plan": bench_plan.main, "rotate": bench_rotate_local.main}
    rows: list[list[object]] = []
    failed = False
    started = time.perf_counter()
    for name, fn in benches.items():
        if args.only and name not in args.only:
            continue
        print(f"\n{'=' * 20} {name} {'=' * 20}", flush=True)
        try:
            rows += _rows(name, fn(QUICK[name] if args.quick else []))
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            rows.append([name, "CRASHED (see above)", "-"])
            failed = True
    print(f"\n{'=' * 20} summary {'=' * 20}\n{machine_line()}")
    print_table(["benchmark", "measured", "ratio / goal"], rows,
                title=f"rotator benchmarks{' (--quick)' if args.quick else ''}, "
                      f"{time.perf_counter() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
