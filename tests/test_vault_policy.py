"""The shipped Vault policies: the provider's every step works under vault-policy.hcl and nothing more is
granted; vault-readonly-policy.hcl lets consumers read documents and nothing else."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
from rotator_vault.provider import VaultConfig, VaultProvider
from structlog.testing import capture_logs

from rotator.errors import AccessDenied
from rotator.keyset import State
from rotator.provider import SecretRef
from rotator.testing.contract import GRACE, NOW, WINDOW, make_version
from tests.vault_emulator import VaultEmulator

POLICIES = Path(__file__).resolve().parent.parent / "deploy" / "policies"
RULE = re.compile(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}')


def load_policy(name: str) -> dict[str, list[str]]:
    """The path rules of an HCL policy file, as {path glob: capabilities}."""
    text = "\n".join(line.split("#")[0] for line in (POLICIES / name).read_text().splitlines())
    rules = {path: re.findall(r'"([^"]+)"', caps) for path, caps in RULE.findall(text)}
    assert rules, f"no rules parsed from {name}"
    return rules


@pytest.fixture(scope="module")
def vault() -> Iterator[VaultEmulator]:
    """An emulated Vault with one token per shipped policy."""
    with VaultEmulator(root_token="root") as emulator:
        emulator.add_token("rotator-token", load_policy("vault-policy.hcl"))
        emulator.add_token("consumer-token", load_policy("vault-readonly-policy.hcl"))
        yield emulator
    assert emulator.internal_errors == []


def test_policy_grants_only_the_verbs_used() -> None:
    """The rotator policy has no delete, destroy, sudo or root-wide rule."""
    rules = load_policy("vault-policy.hcl")
    granted = {cap for caps in rules.values() for cap in caps}
    assert granted == {"create", "read", "update", "patch", "list"}
    assert all(path.startswith(("secret/data/", "secret/metadata/", "auth/token/")) for path in rules)
    assert load_policy("vault-readonly-policy.hcl") == {"secret/data/*": ["read"]}


def test_every_step_works_under_the_policy(vault: VaultEmulator, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """create/stage/promote/retire/rollback/discard/purge/update_meta/list/check all pass, mirror included."""
    monkeypatch.setenv("VAULT_TOKEN", "rotator-token")
    provider = VaultProvider(name="v", config=VaultConfig(url=vault.address, max_versions=5), base_dir=tmp_path)
    ref = SecretRef(name="p", path=f"apps/{uuid.uuid4().hex}")
    with capture_logs() as logs:
        ks = provider.create(ref, make_version(State.CURRENT, when=NOW - timedelta(days=9)), {})
        ks = provider.stage(ref, ks, make_version())
        ks = provider.promote(ref, ks, ks.pending.id, NOW, GRACE)  # type: ignore[union-attr]
        ks = provider.retire(ref, ks, ks.previous.id, NOW, "ended")  # type: ignore[union-attr]
        ks = provider.rollback(ref, ks, NOW, "test", WINDOW)
        ks = provider.stage(ref, ks, make_version())
        ks = provider.discard(ref, ks, ks.pending.id)  # type: ignore[union-attr]
        ks = provider.update_meta(ref, ks, {"k": "v"})
        ks = provider.purge(ref, ks, NOW + WINDOW * 2, WINDOW)
        provider.check()
        assert ref.path in provider.list()
    assert provider.read(ref) == ks
    assert [entry for entry in logs if entry["log_level"] in ("warning", "error", "info")] == []
    provider.close()


def test_outside_the_policy_is_denied(vault: VaultEmulator, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Another mount is outside the policy: AccessDenied names the path and the policy file."""
    vault.enable_kv("kv")
    monkeypatch.setenv("VAULT_TOKEN", "rotator-token")
    provider = VaultProvider(name="v", config=VaultConfig(url=vault.address, mount="kv"), base_dir=tmp_path)
    with pytest.raises(AccessDenied, match=r"^vault: permission denied on kv/data/x \(check the policy in "
                                           r"deploy/policies/vault-policy.hcl\)$"):
        provider.read(SecretRef(name="x", path="x"))


def test_readonly_policy_reads_documents_only(vault: VaultEmulator, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer token reads current/previous but cannot write, list or touch metadata."""
    monkeypatch.setenv("VAULT_TOKEN", "root")
    owner = VaultProvider(name="v", config=VaultConfig(url=vault.address), base_dir=tmp_path)
    ref = SecretRef(name="c", path=f"apps/{uuid.uuid4().hex}")
    created = owner.create(ref, make_version(State.CURRENT), {})
    consumer = hvac.Client(url=vault.address, token="consumer-token").secrets.kv.v2
    doc = consumer.read_secret_version(ref.path, raise_on_deleted_version=True)["data"]["data"]
    assert doc["current"] == created.current.value.reveal()  # type: ignore[union-attr]
    for denied in (lambda: consumer.create_or_update_secret(ref.path, {"current": "x"}),
                   lambda: consumer.list_secrets("apps"),
                   lambda: consumer.read_secret_metadata(ref.path)):
        with pytest.raises(hvac.exceptions.Forbidden):
            denied()
    owner.close()
