"""Two processes racing compare-and-set writes on one Vault secret: exactly one wins each round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from rotator_vault.provider import VaultConfig, VaultProvider

from rotator.keyset import State
from rotator.provider import SecretRef
from rotator.testing.contract import make_version
from tests.vault_emulator import VaultEmulator

pytestmark = pytest.mark.xdist_group("processes")
ROUNDS, SLOT = 10, 0.2

# Each round: read, wait for the round's start instant, then try ONE conditional write claiming the round.
# A process that reads after the other already claimed the round reports "late" and does not write.
RACER = """
import json, sys, time
from pathlib import Path
from rotator.errors import ConflictError
from rotator.provider import SecretRef
from rotator_vault.provider import VaultConfig, VaultProvider
address, me, start, rounds, slot = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
provider = VaultProvider(name="v", config=VaultConfig(url=address, mirror_metadata=False), base_dir=Path("."))
ref = SecretRef(name="raced", path="race/one")
provider.check()
for n in range(1, rounds + 1):
    time.sleep(max(0.0, start + n * slot - time.time()))
    keyset = provider.read(ref)
    if keyset.meta.get("round", 0) >= n:
        print(json.dumps([n, "late"]), flush=True)
        continue
    try:
        provider.update_meta(ref, keyset, {"round": n, "winner": me})
    except ConflictError:
        print(json.dumps([n, "lost"]), flush=True)
    else:
        print(json.dumps([n, "won"]), flush=True)
"""


def test_two_processes_one_winner_per_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two OS processes write with CAS at the same instants; every round has exactly one winner."""
    monkeypatch.setenv("VAULT_TOKEN", "race-root")
    with VaultEmulator(root_token="race-root") as vault:
        env = {**os.environ, "VAULT_TOKEN": "race-root",
               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        owner = VaultProvider(name="v", config=VaultConfig(url=vault.address), base_dir=tmp_path)
        owner.create(SecretRef(name="raced", path="race/one"), make_version(State.CURRENT), {"round": 0})
        start = time.time() + 2.5  # both interpreters are up and logged in by then
        procs = [subprocess.Popen([sys.executable, "-c", RACER, vault.address, name, str(start), str(ROUNDS),
                                   str(SLOT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for name in ("a", "b")]
        results = [proc.communicate(timeout=60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in results]
        final = owner.read(SecretRef(name="raced", path="race/one"))
        owner.close()
    outcomes: dict[int, Counter[str]] = {}
    for out, _ in results:
        for line in out.splitlines():
            number, outcome = json.loads(line)
            outcomes.setdefault(number, Counter())[outcome] += 1
    assert sorted(outcomes) == list(range(1, ROUNDS + 1))
    assert all(c["won"] == 1 and c["won"] + c["lost"] + c["late"] == 2 for c in outcomes.values()), outcomes
    assert sum(c["lost"] for c in outcomes.values()) > 0  # the processes really collided at least once
    assert final is not None
    assert final.meta["round"] == ROUNDS
    assert final.revision == str(1 + ROUNDS)  # one KV version per round: no write was lost or doubled
