"""VaultProvider storage behaviour on the emulator: document layout, adoption, CAS, errors, mirror, secrecy."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
from pydantic import ValidationError
from rotator_vault.auth import TokenAuth
from rotator_vault.provider import VaultConfig, VaultProvider
from structlog.testing import capture_logs

from rotator.errors import AccessDenied, BackendUnavailable, ConflictError, ExitCode, ProviderError, RotatorError
from rotator.keyset import Keyset, State
from rotator.provider import SecretRef, load_provider_class
from rotator.testing.contract import GRACE, NOW, make_version
from tests.vault_emulator import VaultEmulator

ROOT = "hvs.ROOT-provider-test-9f3a"
TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"
Factory = Callable[..., VaultProvider]


@pytest.fixture(scope="module")
def vault() -> Iterator[VaultEmulator]:
    """One emulated Vault for the module."""
    with VaultEmulator(root_token=ROOT) as emulator:
        yield emulator
    assert emulator.internal_errors == []


@pytest.fixture
def kv(vault: VaultEmulator) -> Any:
    """Root KV v2 API, to look at what the provider stored."""
    return hvac.Client(url=vault.address, token=ROOT).secrets.kv.v2


@pytest.fixture
def make(vault: VaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Factory]:
    """Build providers on the emulator (token from an env var); all closed at the end."""
    monkeypatch.setenv(TOKEN_ENV, ROOT)
    built: list[VaultProvider] = []

    def factory(**options: Any) -> VaultProvider:
        options.setdefault("auth", TokenAuth(token_env=TOKEN_ENV))
        options.setdefault("url", vault.address)
        built.append(VaultProvider(name="vault", config=VaultConfig(**options), base_dir=tmp_path))
        return built[-1]

    yield factory
    for provider in built:
        provider.close()


def new_ref() -> SecretRef:
    """A ref at an unused path."""
    return SecretRef(name="svc/key", path=f"apps/{uuid.uuid4().hex[:12]}")


def rotated(provider: VaultProvider, ref: SecretRef) -> Keyset:
    """Create, stage and promote: a keyset with current and previous."""
    created = provider.create(ref, make_version(State.CURRENT, when=NOW - timedelta(days=30)), {})
    staged = provider.stage(ref, created, make_version())
    pending = staged.pending
    assert pending is not None
    return provider.promote(ref, staged, pending.id, NOW, GRACE)


def test_registered_under_entry_point() -> None:
    """The ``vault`` entry point loads VaultProvider with its config model."""
    cls = load_provider_class("vault")
    assert cls is VaultProvider
    assert cls.config_model is VaultConfig


def test_config_validation() -> None:
    """Unknown keys are rejected; auth defaults to token and is discriminated by ``method``."""
    assert VaultConfig(url="http://v").auth == TokenAuth()
    assert VaultConfig.model_validate({"url": "x", "auth": {"method": "kubernetes", "role": "r"}}).auth.method \
        == "kubernetes"
    for bad in ({"url": "x", "bogus": 1}, {"url": "x", "auth": {"method": "ldap"}},
                {"url": "x", "auth": {"method": "approle", "secret_id": "inline"}}):
        with pytest.raises(ValidationError):
            VaultConfig.model_validate(bad)


def test_document_layout(make: Factory, kv: Any) -> None:
    """The KV document holds current/previous as plain fields and the version list under _rotator."""
    provider, ref = make(), new_ref()
    done = rotated(provider, ref)
    stored = kv.read_secret_version(ref.path, raise_on_deleted_version=True)["data"]
    doc = stored["data"]
    assert doc["current"] == done.current.value.reveal()  # type: ignore[union-attr]
    assert doc["previous"] == done.previous.value.reveal()  # type: ignore[union-attr]
    assert "pending" not in doc
    assert doc["_rotator"]["name"] == "svc/key"
    assert [v["state"] for v in doc["_rotator"]["versions"]] == ["previous", "current"]
    assert done.revision == str(stored["metadata"]["version"]) == "3"


def test_foreign_value_reads_unmanaged_then_adopts(make: Factory, kv: Any) -> None:
    """A plain {"value": ...} reads as managed=False with that value current; adopt makes it managed."""
    provider, ref = make(), new_ref()
    kv.create_or_update_secret(ref.path, {"value": "legacy-value-123"})
    found = provider.read(ref)
    assert found is not None
    assert not found.managed
    assert (found.revision, found.current.value.reveal()) == ("1", "legacy-value-123")  # type: ignore[union-attr]
    assert found.current.created_at.tzinfo is not None  # type: ignore[union-attr]
    adopted = provider.adopt(ref, found)
    assert adopted.managed
    assert adopted.revision == "2"
    again = provider.read(ref)
    assert again == adopted
    assert again.current.value.reveal() == "legacy-value-123"
    assert kv.read_secret_version(ref.path, raise_on_deleted_version=True)["data"]["data"]["current"] \
        == "legacy-value-123"


def test_foreign_multi_field_document_cannot_be_adopted(make: Factory, kv: Any) -> None:
    """A document with several fields has no single value: adopting it fails without naming values."""
    provider, ref = make(), new_ref()
    kv.create_or_update_secret(ref.path, {"value": "u-secret-1", "password": "p-secret-2"})
    found = provider.read(ref)
    assert found is not None
    assert not found.managed
    assert found.current.value is None
    with pytest.raises(ProviderError) as caught:
        provider.adopt(ref, found)
    assert "p-secret-2" not in str(caught.value)
    assert "u-secret-1" not in str(caught.value)


def test_cas_conflict_between_instances(make: Factory) -> None:
    """Two instances act on the same read: the second write is a ConflictError and changes nothing."""
    first, second, ref = make(), make(), new_ref()
    base = first.create(ref, make_version(State.CURRENT), {})
    seen = second.read(ref)
    assert seen == base
    won = first.stage(ref, base, make_version())
    with pytest.raises(ConflictError) as caught:
        second.stage(ref, seen, make_version())
    assert caught.value.exit_code is ExitCode.CONFLICT
    assert second.read(ref) == won


def test_deleted_latest_version_is_reported(make: Factory, kv: Any) -> None:
    """A soft-deleted latest version is an error that says how to recover, not an empty path."""
    provider, ref = make(), new_ref()
    provider.create(ref, make_version(State.CURRENT), {})
    kv.delete_latest_version_of_secret(ref.path)
    with pytest.raises(ProviderError, match="deleted or destroyed; undelete it"):
        provider.read(ref)


def test_list_with_prefix_and_folders(make: Factory) -> None:
    """list() walks folders under path_prefix and returns paths relative to it."""
    provider = make(path_prefix=f"team-{uuid.uuid4().hex[:6]}")
    assert provider.list() == []
    for path in ("a", "b/c", "b/d/e"):
        provider.create(SecretRef(name=path, path=path), make_version(State.CURRENT), {})
    assert provider.list() == ["a", "b/c", "b/d/e"]


def test_max_versions_set_on_create(make: Factory, kv: Any) -> None:
    """max_versions is written once on creation and Vault prunes older KV versions; the keyset is intact."""
    provider, ref = make(max_versions=3), new_ref()
    done = rotated(provider, ref)
    for _ in range(3):
        done = provider.update_meta(ref, done, {"n": uuid.uuid4().hex})
    meta = kv.read_secret_metadata(ref.path)["data"]
    assert (meta["max_versions"], meta["current_version"], sorted(meta["versions"])) == (3, 6, ["4", "5", "6"])
    assert provider.read(ref) == done


def test_custom_metadata_mirror(make: Factory, kv: Any, vault: VaultEmulator) -> None:
    """The mirror is written on create and promote (one PATCH), not on stage; values fit Vault's limits."""
    provider, ref = make(), new_ref()
    created = provider.create(ref, make_version(State.CURRENT), {"next_due": "x" * 600})
    mirror = kv.read_secret_metadata(ref.path)["data"]["custom_metadata"]
    assert mirror["rotator_state"] == "active"
    assert len(mirror["rotator_next_due"]) == 512
    vault.reset_counters()
    staged = provider.stage(ref, created, make_version())
    assert [m for m, _ in vault.request_log] == ["POST"]
    vault.reset_counters()
    provider.promote(ref, staged, staged.pending.id, NOW, GRACE)  # type: ignore[union-attr]
    assert [m for m, _ in vault.request_log] == ["POST", "PATCH"]
    mirror = kv.read_secret_metadata(ref.path)["data"]["custom_metadata"]
    assert (mirror["rotator_state"], mirror["rotator_rotated_at"]) == ("in-grace", NOW.isoformat())


def test_mirror_off_and_mirror_failure_do_not_fail_steps(make: Factory, vault: VaultEmulator,
                                                          tmp_path: Path) -> None:
    """With mirror_metadata false no PATCH is sent; a denied PATCH is logged, the step still succeeds."""
    quiet, ref = make(mirror_metadata=False), new_ref()
    vault.reset_counters()
    rotated(quiet, ref)
    assert "PATCH" not in [m for m, _ in vault.request_log]
    vault.add_token("no-patch", {"secret/data/*": ["create", "read", "update"]})
    (tmp_path / "no-patch.token").write_text("no-patch\n")
    limited = make(auth=TokenAuth(token_file="no-patch.token"))
    with capture_logs() as logs:
        assert rotated(limited, new_ref()).current is not None
    assert "vault: custom_metadata mirror not updated" in [entry["event"] for entry in logs]


def test_policy_denied_path(make: Factory, vault: VaultEmulator, tmp_path: Path) -> None:
    """A 403 becomes AccessDenied (exit 4) naming mount/data/path and the policy file."""
    vault.add_token("narrow", {"secret/data/other/*": ["read"]})
    (tmp_path / "narrow.token").write_text("narrow")
    provider, ref = make(auth=TokenAuth(token_file="narrow.token"), path_prefix="apps"), new_ref()
    with pytest.raises(AccessDenied) as caught:
        provider.read(ref)
    assert str(caught.value) == (f"vault: permission denied on secret/data/apps/{ref.path} "
                                 "(check the policy in deploy/policies/vault-policy.hcl)")
    assert caught.value.exit_code is ExitCode.BACKEND


def test_unreachable_and_timeout_name_the_address(make: Factory) -> None:
    """Connection refused and timeouts become BackendUnavailable naming the Vault address."""
    with VaultEmulator(root_token=ROOT) as doomed:
        address = doomed.address
    with pytest.raises(BackendUnavailable, match=f"vault at {address} is unreachable"):
        make(url=address).read(new_ref())
    with VaultEmulator(root_token=ROOT, latency=0.5) as slow, \
            pytest.raises(BackendUnavailable, match=r"did not answer within 0\.2s"):
        make(url=slow.address, timeout=0.2).read(new_ref())


def rotate_then_read(provider: VaultProvider, ref: SecretRef) -> None:
    """The requests of one rotation (read, stage, read back, promote + mirror), then one more read."""
    staged = provider.stage(ref, provider.read(ref), make_version())  # type: ignore[arg-type]
    assert provider.read(ref) == staged
    provider.promote(ref, staged, staged.pending.id, NOW, GRACE)  # type: ignore[union-attr]
    provider.read(ref)


@pytest.mark.parametrize("seal_at", range(6))
def test_sealed_mid_rotation_leaves_consistent_keyset(make: Factory, vault: VaultEmulator, seal_at: int) -> None:
    """Sealing before any request of a rotation gives BackendUnavailable; after unseal it resumes to one current."""
    provider, ref = make(), new_ref()
    base = provider.create(ref, make_version(State.CURRENT), {})
    seen = [0]

    def seal_on_nth(emulator: VaultEmulator, method: str, path: str) -> None:
        if seen[0] == seal_at:
            emulator.sealed = True
        seen[0] += 1

    vault.before_request = seal_on_nth
    try:
        with pytest.raises(BackendUnavailable, match=f"vault at {vault.address} is sealed"):
            rotate_then_read(provider, ref)
    finally:
        vault.before_request = None
        vault.sealed = False
    after = provider.read(ref)
    assert after is not None
    assert after.current is not None
    assert [v.state for v in after.versions].count(State.CURRENT) == 1
    if after.pending is None and after.current.id == base.current.id:  # type: ignore[union-attr]
        after = provider.stage(ref, after, make_version())  # sealed before the stage: start again
    if after.pending is not None:  # stopped between stage and promote: resume finishes it
        after = provider.promote(ref, after, after.pending.id, NOW, GRACE)
    assert after.current.id != base.current.id  # type: ignore[union-attr]
    assert after.previous is not None
    assert after.previous.id == base.current.id


def test_no_secret_or_token_in_output(make: Factory, vault: VaultEmulator, capsys: pytest.CaptureFixture[str],
                                      caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across successes and every kind of failure, no value or token reaches a log, error, cause or repr."""
    monkeypatch.setenv("ROTATOR_TEST_DENIED", "hvs.denied-token-77")
    vault.add_token("hvs.denied-token-77", {})
    provider, ref = make(), new_ref()
    texts: list[str] = []
    with capture_logs() as logs:
        done = rotated(provider, ref)
        failing: list[Callable[[], object]] = [
            lambda: provider.create(ref, make_version(State.CURRENT), {}),
            lambda: make(auth=TokenAuth(token_env="ROTATOR_TEST_DENIED")).read(ref),
            lambda: make(auth=TokenAuth(token_env="ROTATOR_TEST_MISSING")).read(ref),
            lambda: make(mirror_metadata=False, url="http://127.0.0.1:9").read(ref),
        ]
        for fail in failing:
            with pytest.raises(RotatorError) as caught:
                fail()
            texts += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
        vault.sealed = True
        try:
            with pytest.raises(BackendUnavailable) as sealed:
                provider.read(ref)
        finally:
            vault.sealed = False
        texts += [str(sealed.value), str(sealed.value.__cause__)]
    out = capsys.readouterr()
    texts += [repr(provider), repr(provider._session), repr(done), repr(provider.config), repr(logs), out.out,
              out.err, caplog.text]
    secrets = [ROOT, "hvs.denied-token-77"] + [v.value.reveal() for v in done.versions if v.value]
    assert not [s for s in secrets for t in texts if s in t]
