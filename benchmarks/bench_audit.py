"""Cost of the keyed audit chain: appends with HMAC + checkpoint (keys in a memory provider) against plain
SHA-256 appends, interleaved in the same interpreter; prints the median ratio. Both fsync every record; the
keyed one also writes and fsyncs the checkpoint, so about 2x is the expected ceiling on a disk where fsync
dominates.

    python benchmarks/bench_audit.py [--n 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, interleave, machine_line, median, print_table, ratios

sys.path.insert(0, str(REPO))

from rotator.audit import AuditLog
from rotator.audit_key import AuditKeys
from rotator.provider import SecretRef
from rotator.testing.memory import MemoryProvider

GOAL = 2.5


def _appends(n: int, keyed: bool) -> float:
    folder = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    keys = AuditKeys(MemoryProvider(name=uuid.uuid4().hex), SecretRef("k", "k"), "memory:k") if keyed else None
    with AuditLog(folder / "audit.jsonl", keys=keys) as log:
        if keys is not None:
            keys.signing(create=True)  # the one-off key creation is not per-append cost
        started = time.perf_counter()
        for i in range(n):
            log.append({"type": "event", "event": "rotation.succeeded", "secret": f"svc/key-{i}", "i": i})
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = interleave(lambda: _appends(args.n, False), {"keyed": lambda: _appends(args.n, True)}, args.repeats)
    ratio = median(ratios(times["keyed"], times["baseline"]))
    print(machine_line())
    print_table(["audit append", "ms/append", "ratio"], [
        ["SHA-256 (baseline)", f"{median(times['baseline']) / args.n * 1e3:.2f}", "1.00x"],
        ["HMAC + checkpoint", f"{median(times['keyed']) / args.n * 1e3:.2f}",
         f"{ratio:.2f}x ({'ok' if ratio <= GOAL else 'OVER'} <= {GOAL}x)"],
    ])


if __name__ == "__main__":
    main()
