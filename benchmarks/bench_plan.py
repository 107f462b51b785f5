"""``rotator validate`` and ``rotator plan -o json`` on a generated N-secret manifest vs ``yaml.load``.

Baseline: ``yaml.load(f, Loader=yaml.CSafeLoader)`` of the same file in a subprocess of the same interpreter,
so Python start-up is in both. Subjects: the real CLI. ``plan`` reads every keyset from the local store:
by default the store is empty (first run: every secret plans ``create``); ``--populated`` first creates all
secrets with ``rotator run`` so that plan also decrypts N keysets (slower set-up). Goal (issue 2): each
ratio <= 4x. Peak RSS of every process is reported too.
"""

from __future__ import annotations

import argparse
import json
import sys
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

GOAL = 4.0
DEFAULT_N = 10_000
BASELINE = "import sys, yaml\nwith open(sys.argv[1], 'rb') as f:\n    yaml.load(f, Loader=yaml.CSafeLoader)\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, return the summary (used by run_all.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"secrets (default {DEFAULT_N})")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--populated", action="store_true", help="create every secret before planning")
    args = parser.parse_args(argv)
    require_rotator()
    print(f"bench_plan: N={args.n}, repeats={args.repeats}, store {'populated' if args.populated else 'empty'}"
          f"\n{machine_line()}")

    with workspace() as root:
        manifest = root / "rotation.yaml"
        write_manifest(manifest, args.n)
        size_kib = manifest.stat().st_size / 1024
        rotator = [*rotator_cmd(), "-f", str(manifest)]
        if args.populated:
            setup = run([*rotator, "run", "-o", "json"], cwd=root)
            print(f"set-up: `rotator run` created the secrets in {setup.wall:.1f}s")
        else:
            run([*rotator, "plan", "-o", "json"], cwd=root)  # creates the empty store (and key) once
        runs: dict[str, list[Run]] = {"baseline": [], "validate": [], "plan": []}

        def timed(name: str, argv: list[str], check_out: bool = False) -> float:
            result = run(argv, cwd=root)
            if check_out:
                planned = len(json.loads(result.stdout)["secrets"])
                if planned != args.n:
                    raise RuntimeError(f"plan listed {planned} of {args.n} secrets")
            runs[name].append(result)
            return result.wall

        times = interleave(
            lambda: timed("baseline", [PYTHON, "-c", BASELINE, str(manifest)]),
            {"validate": lambda: timed("validate", [*rotator, "validate"]),
             "plan": lambda: timed("plan", [*rotator, "plan", "-o", "json"], check_out=True)},
            args.repeats,
        )

    rows: list[list[object]] = []
    summary: dict[str, Any] = {"n": args.n, "goal": GOAL, "manifest_kib": size_kib}
    for name in ("baseline", "validate", "plan"):
        wall, cpu = median(times[name]), median([r.cpu for r in runs[name]])
        rss = max(r.rss_mib for r in runs[name])
        if name == "baseline":
            rows.append(["yaml.load (CSafeLoader)", f"{wall:.2f}", f"{cpu:.2f}", f"{rss:.0f}", "-", "-"])
            summary["baseline"] = {"wall_s": wall, "cpu_s": cpu, "rss_mib": rss}
            continue
        ratio = median(ratios(times[name], times["baseline"]))
        cpu_ratio = median(ratios([r.cpu for r in runs[name]], [r.cpu for r in runs["baseline"]]))
        label = f"rotator {name}" + (" -o json" if name == "plan" else "")
        rows.append([label, f"{wall:.2f}", f"{cpu:.2f}", f"{rss:.0f}", fmt_ratio(ratio, GOAL), f"{cpu_ratio:.2f}x"])
        summary[name] = {"wall_s": wall, "cpu_s": cpu, "rss_mib": rss, "ratio": ratio, "cpu_ratio": cpu_ratio}
    print_table(["run", "wall s", "cpu s", "peak MiB", "median wall ratio", "cpu ratio"], rows,
                title=f"{args.n}-secret manifest ({size_kib:.0f} KiB), median of {args.repeats}, interleaved")
    print("raw wall seconds: " + "; ".join(f"{k}: {', '.join(f'{t:.2f}' for t in v)}" for k, v in times.items()))
    return summary


if __name__ == "__main__":
    main()
