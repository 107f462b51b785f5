"""Start-up cost: ``rotator --help`` and ``rotator validate`` (sample rotation.yaml) minus ``python -c pass``.

Each command runs ``--repeats`` times (default 10), interleaved with the ``python -c pass`` baseline of the
same interpreter; the overhead is median(rotator) - median(python). Goal (issue 2): <= 250 ms, which needs
boto3/hvac/apscheduler (and, for ``--help``, cryptography and pydantic) imported lazily. Also prints the
``-X importtime`` top imports of ``validate`` and which heavy packages each command loads.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    REPO,
    Run,
    clean_env,
    interleave,
    machine_line,
    median,
    print_table,
    require_rotator,
    rotator_cmd,
    run,
    workspace,
)

GOAL_MS = 250.0
HEAVY = ("boto3", "botocore", "hvac", "requests", "apscheduler", "cryptography", "pydantic", "pydantic_core",
         "yaml", "structlog", "rich", "prometheus_client", "httpx", "jinja2")
# validate may parse a cron expression (apscheduler.triggers.cron, ~5 ms) but must not load the scheduler.
FORBIDDEN = {"help": {"boto3", "hvac", "apscheduler", "cryptography", "pydantic"},
             "validate": {"boto3", "hvac", "apscheduler.schedulers"}}
# Loads the CLI as the console script does, runs the command, then lists the heavy packages imported.
PROBE = """
import sys
from rotator.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = set(%r)
found = {m.split(".")[0] for m in sys.modules} & heavy
found |= {"apscheduler.schedulers"} & set(sys.modules)
print("MODULES", " ".join(sorted(found)))
"""


def importtime(argv: list[str], cwd: Path, top: int = 10) -> list[tuple[int, int, str]]:
    """``(cumulative us, self us, module)`` of the ``top`` slowest imports (by cumulative time)."""
    result = run([PYTHON, "-X", "importtime", *argv], cwd=cwd)
    rows = []
    for line in result.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        own, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|", 2))
        rows.append((int(cumulative), int(own), name))
    return sorted(rows, reverse=True)[:top]


def heavy_modules(args: list[str], cwd: Path) -> list[str]:
    result = run([PYTHON, "-c", PROBE % (HEAVY,), *args], cwd=cwd, check=False)
    for line in result.stdout.decode().splitlines():
        if line.startswith("MODULES"):
            return line.split()[1:]
    raise RuntimeError(f"probe failed: {result.stderr.decode(errors='replace')[-1000:]}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables, return the summary (used by run_all.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="runs of each command (default 10)")
    args = parser.parse_args(argv)
    require_rotator()
    print(f"bench_startup: repeats={args.repeats}\n{machine_line()}")

    with workspace() as root:
        shutil.copy(REPO / "rotation.yaml", root / "rotation.yaml")
        env = clean_env()
        commands = {"help": [*rotator_cmd(), "--help"],
                    "validate": [*rotator_cmd(), "-f", "rotation.yaml", "validate"]}
        for argv in commands.values():
            run(argv, cwd=root, env=env)  # warm the page cache and .pyc files once
        runs: dict[str, list[Run]] = {"baseline": [], **{name: [] for name in commands}}

        def timed(name: str, argv: list[str]) -> float:
            runs[name].append(run(argv, cwd=root, env=env))
            return runs[name][-1].wall

        def subject(name: str) -> Callable[[], float]:
            return lambda: timed(name, commands[name])

        times = interleave(lambda: timed("baseline", [PYTHON, "-c", "pass"]),
                           {name: subject(name) for name in commands}, args.repeats)
        base = median(times["baseline"])
        base_cpu = median([r.cpu for r in runs["baseline"]])
        summary: dict[str, Any] = {"goal_ms": GOAL_MS, "python_ms": base * 1000}
        rows: list[list[object]] = [["python -c pass", f"{base * 1000:.0f}", "-", f"{base_cpu * 1000:.0f}", "-",
                                     "-", ""]]
        loaded = {}
        for name in commands:
            wall, cpu = median(times[name]), median([r.cpu for r in runs[name]])
            overhead, cpu_overhead = (wall - base) * 1000, (cpu - base_cpu) * 1000
            loaded[name] = heavy_modules(commands[name][1:], root)
            bad = sorted(FORBIDDEN[name] & set(loaded[name]))
            verdict = "ok" if overhead <= GOAL_MS else "OVER"
            rows.append([f"rotator {' '.join(commands[name][1:])}", f"{wall * 1000:.0f}", f"{overhead:.0f}",
                         f"{cpu * 1000:.0f}", f"{cpu_overhead:.0f}", f"{verdict} <= {GOAL_MS:.0f}",
                         "none" if not bad else "EAGER: " + ", ".join(bad)])
            summary[name] = {"wall_ms": wall * 1000, "overhead_ms": overhead, "cpu_overhead_ms": cpu_overhead,
                             "heavy": loaded[name], "eager_forbidden": bad}
        print_table(["command", "wall ms", "minus python", "cpu ms", "minus python", "goal (wall)",
                     "forbidden heavy imports"], rows,
                    title=f"start-up, median of {args.repeats} (interleaved with python -c pass)")
        for name in commands:
            print(f"heavy packages loaded by `{name}`: {', '.join(loaded[name]) or 'none'}")

        validate = commands["validate"]
        top = importtime(validate[1:] if validate[0] == PYTHON else validate, root)  # script or -m rotator
        print_table(["module (python -X importtime, rotator validate)", "cumulative ms", "self ms"],
                    [[name, f"{cum / 1000:.1f}", f"{own / 1000:.1f}"] for cum, own, name in top],
                    title="top 10 imports by cumulative time")
        summary["importtime_top"] = [(name, cum / 1000) for cum, _, name in top]
    return summary


if __name__ == "__main__":
    main()
