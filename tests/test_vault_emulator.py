"""The Vault emulator answers like Vault (shared/reference facts), checked through the real hvac client."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests

from tests.vault_emulator import VaultEmulator

CAS_MISMATCH = "check-and-set parameter did not match the current version"


@pytest.fixture(scope="module")
def vault() -> Iterator[VaultEmulator]:
    """One emulator for the module; tests use their own paths."""
    with VaultEmulator(root_token="root") as emulator:
        yield emulator
    assert emulator.internal_errors == []


@pytest.fixture
def client(vault: VaultEmulator) -> hvac.Client:
    """A root hvac client."""
    return hvac.Client(url=vault.address, token="root")


@pytest.fixture
def kv(client: hvac.Client) -> object:
    """The KV v2 API of the root client."""
    return client.secrets.kv.v2


def raw(vault: VaultEmulator, method: str, path: str, *, json: object = None,
        headers: dict[str, str] | None = None) -> requests.Response:
    """One HTTP request straight to the emulator (to see status, headers and body as sent)."""
    return requests.request(method, f"{vault.address}/v1/{path}", json=json,
                            headers={"X-Vault-Token": "root", **(headers or {})}, timeout=5)


def test_write_envelope_and_content_type(vault: VaultEmulator) -> None:
    """A write answers 200, bare application/json, and the documented envelope fields in order."""
    resp = raw(vault, "POST", "secret/data/env/one", json={"data": {"a": "b"}, "options": {}})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert list(body) == ["request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info",
                          "warnings", "auth", "mount_type"]
    assert body["mount_type"] == "kv"
    assert set(body["data"]) == {"version", "created_time", "deletion_time", "destroyed", "custom_metadata"}
    assert (body["data"]["version"], body["data"]["deletion_time"], body["data"]["custom_metadata"]) == (1, "", None)
    assert body["data"]["created_time"].endswith("Z")


def test_cas_rules(kv: object) -> None:
    """cas=0 creates once; a stale or absent-key cas gives the exact CAS error; "1" is weak-decoded."""
    kv.create_or_update_secret("cas/a", {"v": 1}, cas=0)  # type: ignore[attr-defined]
    for path, cas in (("cas/a", 0), ("cas/a", 5), ("cas/missing", 3)):
        with pytest.raises(hvac.exceptions.InvalidRequest) as caught:
            kv.create_or_update_secret(path, {"v": 2}, cas=cas)  # type: ignore[attr-defined]
        assert caught.value.errors == [CAS_MISMATCH]
    assert kv.create_or_update_secret("cas/a", {"v": 2}, cas="1")["data"]["version"] == 2  # type: ignore[attr-defined]


def test_cas_required_parse_and_no_data(vault: VaultEmulator) -> None:
    """cas_required, an unparsable cas and a missing data field each give their exact 400 message."""
    assert raw(vault, "POST", "secret/metadata/cas/req", json={"cas_required": True}).status_code == 204
    cases = [({"data": {"x": 1}}, "check-and-set parameter required for this call"),
             ({"data": {"x": 1}, "options": {"cas": "x"}}, "error parsing check-and-set parameter"),
             ({"options": {"cas": 0}}, "no data provided")]
    for body, message in cases:
        resp = raw(vault, "POST", "secret/data/cas/req", json=body)
        assert (resp.status_code, resp.json()) == (400, {"errors": [message]})


def test_read_missing_deleted_and_destroyed(kv: object, vault: VaultEmulator) -> None:
    """Missing -> 404 {"errors":[]}; deleted -> 404 envelope with data null; destroyed never deleted raises."""
    with pytest.raises(hvac.exceptions.InvalidPath) as caught:
        kv.read_secret_version("rd/none", raise_on_deleted_version=True)  # type: ignore[attr-defined]
    assert caught.value.json == {"errors": []}
    kv.create_or_update_secret("rd/a", {"v": 1})  # type: ignore[attr-defined]
    kv.create_or_update_secret("rd/a", {"v": 2})  # type: ignore[attr-defined]
    kv.delete_latest_version_of_secret("rd/a")  # type: ignore[attr-defined]
    deleted = kv.read_secret_version("rd/a", raise_on_deleted_version=False)  # type: ignore[attr-defined]
    assert deleted["data"]["data"] is None
    assert deleted["data"]["metadata"]["deletion_time"] != ""
    resp = raw(vault, "GET", "secret/data/rd/a")
    assert (resp.status_code, resp.headers["Content-Type"], resp.json()["mount_type"]) == (404, "application/json",
                                                                                          "kv")
    kv.destroy_secret_versions("rd/a", versions=[1])  # type: ignore[attr-defined]
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version("rd/a", version=1, raise_on_deleted_version=False)  # type: ignore[attr-defined]
    kv.undelete_secret_versions("rd/a", versions=[1, 2])  # type: ignore[attr-defined]
    assert kv.read_secret_version("rd/a", raise_on_deleted_version=True)["data"]["data"] == {"v": 2}  # type: ignore[attr-defined]
    meta = kv.read_secret_metadata("rd/a")["data"]["versions"]  # type: ignore[attr-defined]
    assert meta["1"]["destroyed"] is True


def test_version_errors_spelling(vault: VaultEmulator) -> None:
    """Empty versions: "No version number provided" for delete/undelete, lower-case for destroy."""
    for action, message in (("delete", "No"), ("undelete", "No"), ("destroy", "no")):
        resp = raw(vault, "POST", f"secret/{action}/anything", json={"versions": []})
        assert resp.json() == {"errors": [f"{message} version number provided"]}


def test_max_versions_window(kv: object) -> None:
    """oldest_version stays 0 until the window is full, then old versions are pruned and read as 404."""
    kv.update_metadata("mv/a", max_versions=3)  # type: ignore[attr-defined]
    oldest = []
    for n in range(5):
        kv.create_or_update_secret("mv/a", {"n": n})  # type: ignore[attr-defined]
        oldest.append(kv.read_secret_metadata("mv/a")["data"]["oldest_version"])  # type: ignore[attr-defined]
    assert oldest == [0, 0, 1, 2, 3]
    meta = kv.read_secret_metadata("mv/a")["data"]  # type: ignore[attr-defined]
    assert sorted(meta["versions"]) == ["3", "4", "5"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version("mv/a", version=2, raise_on_deleted_version=False)  # type: ignore[attr-defined]


def test_metadata_write_rules(kv: object, vault: VaultEmulator) -> None:
    """An empty metadata write creates nothing; a real one lists the key though data reads 404."""
    assert raw(vault, "POST", "secret/metadata/md/none", json={}).status_code == 204
    assert raw(vault, "GET", "secret/metadata/md/none").json() == {"errors": []}
    kv.update_metadata("md/only", custom_metadata={"a": "1"})  # type: ignore[attr-defined]
    assert "only" in kv.list_secrets("md")["data"]["keys"]  # type: ignore[attr-defined]
    assert raw(vault, "GET", "secret/data/md/only").json() == {"errors": []}
    meta = kv.read_secret_metadata("md/only")["data"]  # type: ignore[attr-defined]
    assert (meta["current_version"], meta["delete_version_after"], meta["max_versions"]) == (0, "0s", 0)


def test_custom_metadata_replace_and_patch(vault: VaultEmulator, kv: object) -> None:
    """POST replaces custom_metadata; PATCH (merge-patch only, else 415) merges and null removes a key."""
    kv.update_metadata("cm/a", custom_metadata={"a": "1", "b": "2"})  # type: ignore[attr-defined]
    kv.update_metadata("cm/a", custom_metadata={"c": "3"})  # type: ignore[attr-defined]
    assert kv.read_secret_metadata("cm/a")["data"]["custom_metadata"] == {"c": "3"}  # type: ignore[attr-defined]
    assert raw(vault, "PATCH", "secret/metadata/cm/a", json={"custom_metadata": {}}).status_code == 415
    patched = raw(vault, "PATCH", "secret/metadata/cm/a", json={"custom_metadata": {"c": None, "d": 4}},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert patched.status_code == 204
    assert kv.read_secret_metadata("cm/a")["data"]["custom_metadata"] == {"d": "4"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("custom", "fragment"), [
    ({f"k{i}": "v" for i in range(65)}, "payload must contain at most 64 keys, provided 65"),
    ({"k" * 129: "v"}, "but must be 0 < len(key) <= 128"),
    ({"k": "v" * 513}, "but must be 0 < len(value) <= 512"),
    ({"k": ""}, "length of value for key \"k\" is 0"),
])
def test_custom_metadata_limits(vault: VaultEmulator, custom: dict[str, str], fragment: str) -> None:
    """Limits of 64 keys / 128-byte keys / 512-byte values give Vault's multierror 400."""
    resp = raw(vault, "POST", "secret/metadata/cm/limits", json={"custom_metadata": custom})
    assert resp.status_code == 400
    (message,) = resp.json()["errors"]
    assert message.startswith("1 error occurred:\n\t* custom_metadata validation failed: ")
    assert fragment in message
    assert message.endswith("\n\n")


def test_cas_required_false_warning(vault: VaultEmulator) -> None:
    """cas_required=false on a CAS-mandatory mount answers 200 with only the documented warning."""
    vault.enable_kv("strict", cas_required=True)
    resp = raw(vault, "POST", "strict/metadata/w", json={"cas_required": False})
    assert resp.status_code == 200
    assert resp.json()["warnings"] == ['"cas_required" set to false, but is mandated by backend config. '
                                       "This value will be ignored."]


def test_list_both_verbs(vault: VaultEmulator) -> None:
    """LIST and GET ?list=true both list children ("dir/" for folders); an empty folder is 404."""
    client = hvac.Client(url=vault.address, token="root")
    client.secrets.kv.v2.create_or_update_secret("ls/a", {"x": 1})
    client.secrets.kv.v2.create_or_update_secret("ls/sub/b", {"x": 1})
    strict = hvac.Client(url=vault.address, token="root", strict_http=True)
    for c in (client, strict):
        assert c.secrets.kv.v2.list_secrets("ls")["data"]["keys"] == ["a", "sub/"]
    with pytest.raises(hvac.exceptions.InvalidPath) as caught:
        client.secrets.kv.v2.list_secrets("ls/empty")
    assert caught.value.json == {"errors": []}


def test_mount_config_defaults(client: hvac.Client, vault: VaultEmulator) -> None:
    """The mount config reads with Vault's defaults and is writable."""
    vault.enable_kv("cfg")
    assert client.secrets.kv.v2.read_configuration(mount_point="cfg")["data"] == {
        "cas_required": False, "delete_version_after": "0s", "max_versions": 0}
    client.secrets.kv.v2.configure(max_versions=4, mount_point="cfg")
    assert client.secrets.kv.v2.read_configuration(mount_point="cfg")["data"]["max_versions"] == 4


def test_tokens_and_policy(vault: VaultEmulator) -> None:
    """Bad tokens are 403 "permission denied"; Bearer works; a path policy allows reads but not writes."""
    assert not hvac.Client(url=vault.address, token="nope").is_authenticated()
    resp = requests.get(f"{vault.address}/v1/secret/data/x", headers={"Authorization": "Bearer root"}, timeout=5)
    assert resp.status_code == 404
    vault.add_token("reader", {"secret/data/pol/*": ["read"]})
    root = hvac.Client(url=vault.address, token="root")
    root.secrets.kv.v2.create_or_update_secret("pol/a", {"v": "1"})
    reader = hvac.Client(url=vault.address, token="reader").secrets.kv.v2
    assert reader.read_secret_version("pol/a", raise_on_deleted_version=True)["data"]["data"] == {"v": "1"}
    with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
        reader.create_or_update_secret("pol/a", {"v": "2"})
    with pytest.raises(hvac.exceptions.Forbidden):
        reader.read_secret_version("other", raise_on_deleted_version=True)


def test_seal_and_unseal(vault: VaultEmulator) -> None:
    """Sealed: every API path answers 503 {"errors":["Vault is sealed"]} until unsealed."""
    client = hvac.Client(url=vault.address, token="root")
    client.sys.seal()
    try:
        resp = raw(vault, "GET", "secret/data/x")
        assert (resp.status_code, resp.json()) == (503, {"errors": ["Vault is sealed"]})
        with pytest.raises(hvac.exceptions.VaultDown):
            client.secrets.kv.v2.read_secret_version("x", raise_on_deleted_version=True)
        assert client.sys.is_sealed()
    finally:
        client.sys.submit_unseal_key("key")
    assert not vault.sealed


def test_auth_logins_and_renewal(vault: VaultEmulator) -> None:
    """AppRole and Kubernetes logins issue tokens with the role's TTL; renew-self extends, lookup-self shows it."""
    vault.add_approle("role-1", "sid-1", {"secret/*": ["read"]}, ttl=60)
    vault.add_kubernetes_role("app", "jwt-1", {"secret/*": ["read"]}, ttl=90)
    client = hvac.Client(url=vault.address)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid role or secret ID"):
        client.auth.approle.login("role-1", "wrong")
    auth = client.auth.approle.login("role-1", "sid-1")["auth"]
    assert (auth["lease_duration"], auth["renewable"]) == (60, True)
    vault.advance(50)
    assert client.auth.token.lookup_self()["data"]["ttl"] <= 10
    assert client.auth.token.renew_self()["auth"]["lease_duration"] == 60
    vault.advance(61)
    assert not client.is_authenticated()
    k8s = client.auth.kubernetes.login("app", "jwt-1")["auth"]
    assert k8s["lease_duration"] == 90
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.kubernetes.login("app", "wrong")


def test_latency_and_counter() -> None:
    """Injected latency delays each request, and every request is counted."""
    with VaultEmulator(latency=0.05) as slow:
        client = hvac.Client(url=slow.address, token="root")
        started = time.monotonic()
        client.secrets.kv.v2.create_or_update_secret("lat", {"x": 1})
        assert time.monotonic() - started >= 0.05
        assert slow.requests == 1
        assert slow.request_log == [("POST", "/v1/secret/data/lat")]


def test_standalone_process() -> None:
    """``python tests/vault_emulator.py`` prints its address and serves until killed."""
    script = Path(__file__).with_name("vault_emulator.py")
    proc = subprocess.Popen([sys.executable, str(script), "--token", "t0k"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        client = hvac.Client(url=address, token="t0k")
        client.secrets.kv.v2.create_or_update_secret("p", {"x": 1})
        assert client.secrets.kv.v2.read_secret_version("p", raise_on_deleted_version=True)["data"]["data"] == {"x": 1}
    finally:
        proc.kill()
        proc.wait()
