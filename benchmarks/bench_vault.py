"""Rotate N secrets (default 200) in Vault through the real engine, with 20 ms injected per HTTP request.

Set-up (untimed): the in-process Vault emulator (``tests/vault_emulator.py``) with ``--latency-ms`` added to
every request, a manifest of N secrets on the ``vault`` provider, and one ``Engine.reconcile`` pass that
creates them all.

Measured: ``Engine.reconcile(force=True)`` (what ``rotate --all --now`` runs) sequentially and with
``--concurrency 16``, with the ``custom_metadata`` mirror on (default) and off; and, as the floor, the bare
provider step sequence a rotation needs (read, stage, read-back for verify, promote).

Reported: HTTP requests per rotation (goal <= 4) split by route, wall time, and the ratio to the RTT bound
= requests x latency x N / concurrency (1.00x means nothing but network waits).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine_line, print_table, require_rotator, run_all, workspace

GOAL_REQUESTS = 4
TOKEN = "bench-root-token"


def write_manifest(path: Path, n: int, address: str, mirror: bool) -> None:
    """N api_key/hmac secrets on one vault provider."""
    lines = ["version: 1", "defaults: {provider: vault, every: 30d, grace: 1d, notice: 1d}",
             "providers:",
             f"  vault: {{type: vault, url: '{address}', mirror_metadata: {str(mirror).lower()}, "
             "auth: {method: token}}",
             f"audit: {{path: {path.parent / 'audit.jsonl'}}}",
             "secrets:"]
    for i in range(n):
        kind = "hmac" if i % 2 else "api_key"
        lines += [f"  - name: bench/s{i:04d}", f"    kind: {kind}"]
    path.write_text("\n".join(lines) + "\n")


def engine_pass(root: Path, vault: Any, n: int, mirror: bool, concurrency: int) -> tuple[float, Counter[str]]:
    """Create N secrets (untimed), then time one forced reconcile; returns (seconds, requests by route)."""
    from rotator.app import build_runtime

    manifest = root / f"rotation-{int(mirror)}-{concurrency}.yaml"
    write_manifest(manifest, n, vault.address, mirror)
    runtime = build_runtime(manifest, actor="cli:bench", notify=False)
    try:
        policies = list(runtime.manifest.secrets.values())
        runtime.engine.reconcile(policies, concurrency=16)  # creates them
        vault.reset_counters()
        started = time.perf_counter()
        outcomes = runtime.engine.reconcile(policies, force=True, concurrency=concurrency)
        wall = time.perf_counter() - started
    finally:
        runtime.close()
    failed = [o for o in outcomes if not o.ok or o.action != "rotated"]
    if failed:
        raise RuntimeError(f"{len(failed)} rotations did not succeed: {failed[0]}")
    return wall, Counter(vault.by_route)


def provider_pass(root: Path, vault: Any, n: int, concurrency: int) -> tuple[float, Counter[str]]:
    """The floor: read, stage, read back, promote, straight on the provider (mirror off)."""
    from rotator_vault.provider import VaultConfig, VaultProvider

    from rotator.keyset import KeyVersion, SecretValue, State
    from rotator.provider import SecretRef

    provider = VaultProvider(name="v", config=VaultConfig(url=vault.address, mirror_metadata=False,
                                                          path_prefix="floor"), base_dir=root)
    now = datetime.now(UTC)

    def version(state: State) -> KeyVersion:
        return KeyVersion(id=os.urandom(8).hex(), state=state, created_at=now, value=SecretValue(os.urandom(16).hex()))

    refs = [SecretRef(name=f"f{i}", path=f"f{concurrency}/{i}") for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda ref: provider.create(ref, version(State.CURRENT), {}), refs))

    def rotate(ref: SecretRef) -> None:
        staged = provider.stage(ref, provider.read(ref), version(State.PENDING))  # type: ignore[arg-type]
        back = provider.read(ref)
        assert back is not None
        assert back.pending is not None
        provider.promote(ref, staged, back.pending.id, now, timedelta(days=1))

    vault.reset_counters()
    started = time.perf_counter()
    run_all(rotate, refs, concurrency)
    wall = time.perf_counter() - started
    provider.close()
    return wall, Counter(vault.by_route)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, return the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="secrets (default 200)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per request (default 20)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args(argv)
    require_rotator()
    from rotator.logs import configure_logging
    from tests.vault_emulator import VaultEmulator

    print(f"bench_vault: N={args.n}, {args.latency_ms:g} ms per request\n{machine_line()}")
    os.environ["VAULT_TOKEN"] = TOKEN
    latency = args.latency_ms / 1000
    rows: list[list[object]] = []
    summary: dict[str, Any] = {"n": args.n, "latency_ms": args.latency_ms, "goal_requests": GOAL_REQUESTS}
    with workspace("rotator-bench-vault-") as root, open(os.devnull, "w") as sink, \
            VaultEmulator(root_token=TOKEN, latency=latency) as vault:
        configure_logging("json", 0, stream=sink)
        cases: list[tuple[str, Callable[[int], tuple[float, Counter[str]]]]] = [
            ("provider floor", lambda c: provider_pass(root, vault, args.n, c)),
            ("engine, mirror off", lambda c: engine_pass(root, vault, args.n, False, c)),
            ("engine, mirror on", lambda c: engine_pass(root, vault, args.n, True, c)),
        ]
        for label, case in cases:
            for c in args.concurrency:
                wall, routes = case(c)
                per = sum(routes.values()) / args.n
                bound = per * latency * args.n / c
                split = ", ".join(f"{route.split(' ')[0]} {route.split('/')[-1]} {count / args.n:g}"
                                  for route, count in sorted(routes.items()))
                rows.append([f"{label} c{c}", f"{per:g}", "ok" if per <= GOAL_REQUESTS else "OVER",
                             f"{wall:.2f}", f"{bound:.2f}", f"{wall / bound:.2f}x", split])
                summary[f"{label} c{c}"] = {"requests_per_rotation": per, "wall_s": wall, "rtt_bound_s": bound,
                                            "ratio": wall / bound, "routes": dict(routes)}
    print_table(["run", "req/rot", f"<= {GOAL_REQUESTS}", "wall s", "RTT bound s", "ratio", "requests per rotation"],
                rows, title=f"rotating {args.n} secrets, {args.latency_ms:g} ms per request")
    return summary


if __name__ == "__main__":
    main()
