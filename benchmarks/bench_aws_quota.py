"""Rotate N secrets (default 500) in AWS Secrets Manager (moto, server mode) that enforces 10 writes/s.

Set-up (untimed): moto behind the gate of ``tests/moto_server.py`` in its own process, no quota while N
secrets are created through the engine. Measured: one forced ``Engine.reconcile`` (what ``rotate --all --now``
runs) at concurrency 16 with the provider configured for the same write quota the server enforces
(``quotas: {writes_per_second: Q}``).

Reported: writes needed (PutSecretValue + UpdateSecret + UpdateSecretVersionStage the server answered), the
quota bound = writes / Q (no tool can finish sooner), the elapsed time and elapsed / bound (goal <= 1.15),
failed rotations and the calls the server throttled (goal: 0; botocore would retry them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine_line, print_table, require_rotator, workspace
from bench_aws import DUMMY, Gate, moto_process

GOAL = 1.15
WRITES = ("PutSecretValue", "UpdateSecret", "UpdateSecretVersionStage")


def write_manifest(path: Path, n: int, endpoint: str, quota: float) -> None:
    lines = ["version: 1", "defaults: {provider: aws, every: 30d, grace: 1d, notice: 1d}", "providers:",
             f"  aws: {{type: aws, region: us-east-1, endpoint_url: '{endpoint}', name_prefix: 'quota/', "
             f"quotas: {{writes_per_second: {quota:g}}}}}",
             f"audit: {{path: {path.parent / 'audit.jsonl'}}}", "secrets:"]
    for i in range(n):
        lines += [f"  - name: bench/s{i:04d}", f"    kind: {'hmac' if i % 2 else 'api_key'}"]
    path.write_text("\n".join(lines) + "\n")


def set_quotas(gate: Gate, quotas: dict[str, float]) -> None:
    gate._post("/_gate/set", {"delay": 0.0, "quotas": quotas})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, return the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="secrets (default 500)")
    parser.add_argument("--quota", type=float, default=10.0, help="writes/s, enforced and configured (10)")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    require_rotator()
    os.environ.update(DUMMY)
    from rotator.app import build_runtime
    from rotator.logs import configure_logging

    print(f"bench_aws_quota: N={args.n}, moto enforcing {args.quota:g} writes/s, concurrency {args.concurrency}\n"
          f"{machine_line()}", flush=True)
    with workspace("rotator-bench-aws-quota-") as root, open(os.devnull, "w") as sink, moto_process() as gate:
        configure_logging("json", 0, stream=sink)
        manifest = root / "rotation.yaml"
        write_manifest(manifest, args.n, gate.endpoint, args.quota)
        runtime = build_runtime(manifest, actor="cli:bench", notify=False)
        try:
            policies = list(runtime.manifest.secrets.values())
            runtime.engine.reconcile(policies, concurrency=16)  # create (untimed, no quota)
        finally:
            runtime.close()
        runtime = build_runtime(manifest, actor="cli:bench", notify=False)
        try:
            set_quotas(gate, {"writes": args.quota})
            started = time.perf_counter()
            outcomes = runtime.engine.reconcile(list(runtime.manifest.secrets.values()), force=True,
                                                concurrency=args.concurrency)
            elapsed = time.perf_counter() - started
            answer = gate._post("/_gate/calls", {})
            set_quotas(gate, {})
        finally:
            runtime.close()
    calls, throttled = answer["calls"], answer.get("throttled", {})
    refused = sum(throttled.values())
    writes = sum(calls.get(a, 0) for a in WRITES) - throttled.get("writes", 0)
    failed = sum(1 for o in outcomes if not o.ok or o.action != "rotated")
    bound = writes / args.quota
    ratio = elapsed / bound if bound else float("inf")
    print_table(["secrets", "writes", "writes/rot", "bound s", "elapsed s", "ratio", "failed", "throttled"],
                [[args.n, writes, f"{writes / args.n:g}", f"{bound:.1f}", f"{elapsed:.1f}", f"{ratio:.3f}x",
                  failed, refused]],
                title=f"rotate --all --now against {args.quota:g} writes/s (goal: ratio <= {GOAL}x, 0 failed, "
                      "0 throttled)")
    return {"n": args.n, "writes": writes, "bound_s": bound, "elapsed_s": elapsed, "ratio": ratio,
            "failed": failed, "throttled": throttled, "calls": calls}


if __name__ == "__main__":
    main()
