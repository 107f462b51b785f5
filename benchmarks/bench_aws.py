"""Rotate N secrets (default 500) in AWS Secrets Manager (moto, server mode) with 20 ms added per request.

Set-up (untimed): moto behind the gate of ``tests/moto_server.py`` in its own process (so moto's CPU does
not share a GIL with rotator), no added latency while N secrets are created through the real engine (one
``Engine.reconcile`` pass, what ``rotator run`` does) and N more with plain boto3 for the baseline.

Measured, with the latency on:

* baseline: the minimal sequential boto3 loop a script would use: put a new value as AWSPENDING, move
  AWSCURRENT to it, remove AWSPENDING (3 calls, no checks, no metadata, no read-back);
* provider floor: read the state, stage, read back, promote on ``AwsProvider`` in a thread pool;
* engine: ``Engine.reconcile(force=True)`` (what ``rotate --all --now`` runs) with ``--concurrency``, on a
  runtime built after the set-up (cold caches, as in a new process);
* CLI: ``rotator rotate --all --now --concurrency C`` in a subprocess, start-up, manifest and output included
  (its client CPU is the child's ``rusage``).

Reported: AWS calls per rotation by action (goal <= 5), wall time, speed-up over the loop (goal >= 10x at
concurrency 16) and the ratio to the RTT bound = calls x latency x N / concurrency (goal <= 1.5x: 1.00x
means nothing but network waits). "moto CPU" is the CPU time of the moto process during the run: moto
serves one request at a time under its GIL, so when it approaches the wall time the server, not rotator, is
the bottleneck. "CPU floor" = max(client CPU, (client + moto CPU) / cores): the client's Python work holds
one GIL, so a run whose floor exceeds its RTT bound is CPU-bound on this machine, not waiting on AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import clean_env, machine_line, print_table, require_rotator, rotator_cmd, run, run_all, workspace

GOALS = {"calls": 5, "speedup": 10.0, "ratio": 1.5}
DUMMY = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
         "AWS_EC2_METADATA_DISABLED": "true"}


class Gate:
    """The gated moto server process: set the latency, read the call counts."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.endpoint + path  # our own http://127.0.0.1 server
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",  # noqa: S310
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return dict(json.load(answer))

    def set(self, delay: float) -> None:
        """Latency per request from now on; counts start again at zero."""
        self._post("/_gate/set", {"delay": delay})

    def calls(self) -> Counter[str]:
        """Calls by action since the last ``set``, plus ``_cpu_ms``: CPU time the moto process used."""
        answer = self._post("/_gate/calls", {})
        return Counter({**answer["calls"], "_cpu_ms": int(answer["cpu_s"] * 1000)})


@contextmanager
def moto_process() -> Iterator[Gate]:
    script = Path(__file__).resolve().parent.parent / "tests" / "moto_server.py"
    env = {**os.environ, "PYTHONPATH": str(script.parent.parent)}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        yield Gate(proc.stdout.readline().strip())
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)


def write_manifest(path: Path, n: int, endpoint: str, prefix: str) -> None:
    lines = ["version: 1", "defaults: {provider: aws, every: 30d, grace: 1d, notice: 1d}", "providers:",
             f"  aws: {{type: aws, region: us-east-1, endpoint_url: '{endpoint}', name_prefix: '{prefix}'}}",
             f"audit: {{path: {path.parent / 'audit.jsonl'}}}", "secrets:"]
    for i in range(n):
        lines += [f"  - name: bench/s{i:04d}", f"    kind: {'hmac' if i % 2 else 'api_key'}"]
    path.write_text("\n".join(lines) + "\n")


def created(root: Path, gate: Gate, n: int, label: str) -> Path:
    """A manifest of N new secrets, created through the engine with no latency (untimed)."""
    from rotator.app import build_runtime

    manifest = root / f"rotation-{label}.yaml"
    write_manifest(manifest, n, gate.endpoint, f"{label}-{uuid.uuid4().hex[:6]}/")
    gate.set(0.0)
    runtime = build_runtime(manifest, actor="cli:bench", notify=False)
    try:
        runtime.engine.reconcile(list(runtime.manifest.secrets.values()), concurrency=16)
    finally:
        runtime.close()
    return manifest


def engine_pass(root: Path, gate: Gate, n: int, latency: float, concurrency: int) -> tuple[float, Counter[str]]:
    """Create N secrets (untimed, no latency), then time one forced reconcile on a fresh runtime."""
    from rotator.app import build_runtime

    manifest = created(root, gate, n, "engine")
    runtime = build_runtime(manifest, actor="cli:bench", notify=False)
    try:
        policies = list(runtime.manifest.secrets.values())
        gate.set(latency)
        started, cpu = time.perf_counter(), time.process_time()
        outcomes = runtime.engine.reconcile(policies, force=True, concurrency=concurrency)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        runtime.close()
    failed = [o for o in outcomes if not o.ok or o.action != "rotated"]
    if failed:
        raise RuntimeError(f"{len(failed)} rotations did not succeed: {failed[0]}")
    return wall, gate.calls() + Counter(_client_cpu_ms=int(cpu * 1000))


def cli_pass(root: Path, gate: Gate, n: int, latency: float, concurrency: int) -> tuple[float, Counter[str]]:
    """Create N secrets (untimed), then time ``rotator rotate --all --now`` in a subprocess."""
    manifest = created(root, gate, n, "cli")
    # untimed warm-up: the benchmark's fresh PYTHONPYCACHEPREFIX would otherwise make the timed run compile
    # rotator, boto3 and botocore (~2 s of CPU here), which an installed rotator never pays twice
    run([*rotator_cmd(), "-f", str(manifest), "plan"], env=clean_env(**DUMMY))
    gate.set(latency)
    done = run([*rotator_cmd(), "-f", str(manifest), "rotate", "--all", "--now", "-o", "json",
                "--concurrency", str(concurrency)], env=clean_env(**DUMMY))
    return done.wall, gate.calls() + Counter(_client_cpu_ms=int(done.cpu * 1000))


def provider_pass(gate: Gate, n: int, latency: float, concurrency: int) -> tuple[float, Counter[str]]:
    """The floor: read the state, stage, read back (verify), promote, straight on the provider."""
    from rotator_aws.config import AwsConfig
    from rotator_aws.provider import AwsProvider

    from rotator.keyset import KeyVersion, SecretValue, State
    from rotator.provider import SecretRef

    prefix = f"floor-{uuid.uuid4().hex[:6]}/"
    make = AwsProvider(config=AwsConfig(endpoint_url=gate.endpoint, region="us-east-1", name_prefix=prefix))
    now = datetime.now(UTC)

    def version(state: State) -> KeyVersion:
        return KeyVersion(id=uuid.uuid4().hex, state=state, created_at=now, value=SecretValue(os.urandom(16).hex()),
                          promoted_at=now if state is State.CURRENT else None)

    refs = [SecretRef(name=f"f{i}", path=f"f/{i}") for i in range(n)]
    gate.set(0.0)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda ref: make.create(ref, version(State.CURRENT), {}), refs))
    make.close()
    provider = AwsProvider(config=AwsConfig(endpoint_url=gate.endpoint, region="us-east-1", name_prefix=prefix))

    def rotate(ref: SecretRef) -> None:
        staged = provider.stage(ref, provider.read_state(ref), version(State.PENDING))  # type: ignore[arg-type]
        pending = staged.pending
        assert pending is not None
        assert provider.read_value(ref, pending.id) is not None
        provider.promote(ref, staged, pending.id, now, timedelta(days=1))

    gate.set(latency)
    started, cpu = time.perf_counter(), time.process_time()
    run_all(rotate, refs, concurrency)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    provider.close()
    return wall, gate.calls() + Counter(_client_cpu_ms=int(cpu * 1000))


def loop_pass(gate: Gate, n: int, latency: float) -> tuple[float, Counter[str]]:
    """The baseline script: put pending, move current, remove pending, one secret after the other."""
    import boto3

    client = boto3.client("secretsmanager", endpoint_url=gate.endpoint, region_name="us-east-1")
    prefix = f"loop-{uuid.uuid4().hex[:6]}/"
    gate.set(0.0)
    current = {}
    for i in range(n):
        made = client.create_secret(Name=f"{prefix}{i}", SecretString=os.urandom(16).hex())
        current[made["Name"]] = made["VersionId"]
    gate.set(latency)
    started, cpu = time.perf_counter(), time.process_time()
    for name, old in current.items():
        new = client.put_secret_value(SecretId=name, SecretString=os.urandom(16).hex(),
                                      VersionStages=["AWSPENDING"])["VersionId"]
        client.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=new,
                                           RemoveFromVersionId=old)
        client.update_secret_version_stage(SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=new)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    client.close()
    return wall, gate.calls() + Counter(_client_cpu_ms=int(cpu * 1000))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, return the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="secrets (default 500)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per request (default 20)")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    require_rotator()
    os.environ.update(DUMMY)
    from rotator.logs import configure_logging

    print(f"bench_aws: N={args.n}, {args.latency_ms:g} ms per request, engine = rotator.engine.Engine\n"
          f"{machine_line()}", flush=True)
    latency, n, c = args.latency_ms / 1000, args.n, args.concurrency
    rows: list[list[object]] = []
    summary: dict[str, Any] = {"n": n, "latency_ms": args.latency_ms, "goals": GOALS}
    with workspace("rotator-bench-aws-") as root, open(os.devnull, "w") as sink, moto_process() as gate:
        configure_logging("json", 0, stream=sink)
        loop_wall, loop_calls = loop_pass(gate, n, latency)
        cases: list[tuple[str, int, Callable[[], tuple[float, Counter[str]]]]] = [
            ("boto3 loop c1", 1, lambda: (loop_wall, loop_calls)),
            (f"provider floor c{c}", c, lambda: provider_pass(gate, n, latency, c)),
            (f"engine c{c}", c, lambda: engine_pass(root, gate, n, latency, c)),
            (f"CLI c{c}", c, lambda: cli_pass(root, gate, n, latency, c)),
        ]
        for label, conc, case in cases:
            wall, calls = case()
            busy = calls.pop("_cpu_ms", 0) / 1000
            mine = calls.pop("_client_cpu_ms", 0) / 1000
            per = sum(calls.values()) / n
            bound = per * latency * n / conc
            # no run can beat its CPU: the client's Python work holds one GIL (one core at most), and
            # client plus moto share the machine's cores
            floor = max(mine, (busy + mine) / (os.cpu_count() or 1))
            split = ", ".join(f"{action} {count / n:g}" for action, count in sorted(calls.items()))
            rows.append([label, f"{per:g}", f"{wall:.2f}", f"{loop_wall / wall:.1f}x", f"{bound:.2f}",
                         f"{wall / bound:.2f}x", f"{busy:.2f}", f"{mine:.2f}", f"{floor:.2f}", split])
            summary[label] = {"calls_per_rotation": per, "wall_s": wall, "speedup": loop_wall / wall,
                              "rtt_bound_s": bound, "ratio": wall / bound, "moto_cpu_s": busy, "client_cpu_s": mine,
                              "cpu_floor_s": floor,
                              "calls": dict(calls)}
            print(f"  {label}: {per:g} calls/rotation, {wall:.2f} s "
                  f"(CPU: moto {busy:.2f} s, rotator {mine:.2f} s)", flush=True)
    print_table(["run", "calls/rot", "wall s", "vs loop", "RTT bound s", "ratio", "moto CPU s", "client CPU s",
                 "CPU floor s", "AWS calls per rotation"],
                rows, title=f"rotating {n} secrets, {args.latency_ms:g} ms per request "
                            f"(goals: <= {GOALS['calls']} calls, >= {GOALS['speedup']:g}x, <= {GOALS['ratio']}x)")
    return summary


if __name__ == "__main__":
    main()
