"""The manifest loader: the sample resolves, defaults and overrides, interpolation, selection, schema."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from rotator.errors import ManifestError, UsageError
from rotator.manifest import Manifest, SecretPolicy, load_manifest, manifest_json_schema, parse_manifest
from rotator.provider import installed_providers

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "rotation.yaml"
D = timedelta(days=1)
H = timedelta(hours=1)


def parse(text: str, env: dict[str, str] | None = None, name: str = "rotation.yaml") -> Manifest:
    """Parse ``text`` as if read from ``/srv/rotator/<name>`` with only ``env`` in the environment."""
    return parse_manifest(text, Path("/srv/rotator") / name, env or {})


def error(text: str, env: dict[str, str] | None = None) -> str:
    """The one-line message of the ManifestError ``text`` raises."""
    with pytest.raises(ManifestError) as caught:
        parse(text, env)
    assert caught.value.exit_code == 2
    return caught.value.message


def one(body: str, defaults: str = "", env: dict[str, str] | None = None) -> SecretPolicy:
    """The policy of the single secret ``a`` (kind hmac) with extra ``body`` lines and ``defaults``."""
    text = f"version: 1\n{defaults}secrets:\n  - name: a\n    kind: hmac\n{body}"
    return parse(text, env).secrets["a"]


# --- the sample --------------------------------------------------------------------------------------------


def test_sample_manifest_loads_and_resolves() -> None:
    """The shipped rotation.yaml loads: four secrets on the local provider with the compliance defaults."""
    m = load_manifest(SAMPLE, env={})
    assert list(m.secrets) == ["partner-api-key", "payments/webhook-hmac", "auth/jwt-signing",
                               "db/reporting-password"]
    api = m.secret("partner-api-key")
    assert (api.provider, api.schedule.every, api.grace, api.notices) == ("local", 90 * D, 7 * D, (14 * D, D))
    assert (api.rollback_window, api.stale_pending_after) == (24 * H, H)
    assert api.ref.path == "partner-api-key"
    assert api.ref.labels == {"team": "partners", "env": "dev"}
    assert api.params.prefix == "rtr_live_"
    assert api.spec.consumers == ["partner-gateway", "billing-worker"]
    assert api.spec.verify is not None
    assert api.spec.verify.timeout == timedelta(seconds=30)
    hmac = m.secret("payments/webhook-hmac")
    assert (hmac.schedule.every, hmac.grace, hmac.params.bytes) == (30 * D, 3 * D, 32)
    password = m.secret("db/reporting-password")
    assert password.schedule.every is None
    assert password.schedule.cron == "0 3 * * MON"
    assert (password.schedule.window, password.schedule.interval) == (2 * H, 7 * D)
    assert (password.notices, password.grace) == ((D,), 2 * D)
    assert password.params.exclude == "\"'`\\ O0Il1"
    assert set(m.provider_configs) == {"local"}


def test_notices_sorted_longest_first_and_deduplicated() -> None:
    """Several lead times become one tuple, longest first, without duplicates."""
    assert one("    notice: [1d, 14d, 3d, 1d]\n").notices == (14 * D, 3 * D, D)
    assert one("    notice: []\n").notices == ()


# --- defaults ----------------------------------------------------------------------------------------------


def test_builtin_defaults_apply_without_a_defaults_section() -> None:
    """With no ``defaults:`` a secret rotates every 90d with 7d grace and a 14d notice on ``local``."""
    p = one("")
    assert (p.schedule.every, p.grace, p.notices, p.provider, p.notify) == (
        90 * D, 7 * D, (14 * D,), "local", ())


def test_defaults_are_inherited_and_overridden_per_secret() -> None:
    """A secret inherits every default it does not set and keeps its own value where it does."""
    text = """version: 1
defaults: {every: 60d, grace: 5d, notice: 10d, notify: [ops], stale_pending_after: 2h, rollback_window: 2d,
           provider: mem}
providers: {mem: {type: memory}, local: {type: local}}
notifiers: {ops: {type: slack, webhook_url: "https://hooks.example.com/x"}}
secrets:
  - {name: inherits, kind: fernet}
  - {name: overrides, kind: fernet, every: 20d, grace: 1d, notice: 2d, notify: [], stale_pending_after: 5m,
     rollback_window: 1h, provider: local}
"""
    m = parse(text)
    a, b = m.secret("inherits"), m.secret("overrides")
    assert (a.schedule.every, a.grace, a.notices, a.notify, a.provider) == (60 * D, 5 * D, (10 * D,), ("ops",), "mem")
    assert (a.stale_pending_after, a.rollback_window) == (2 * H, 2 * D)
    assert (b.schedule.every, b.grace, b.notices, b.notify, b.provider) == (20 * D, D, (2 * D,), (), "local")
    assert (b.stale_pending_after, b.rollback_window) == (timedelta(minutes=5), H)
    assert set(m.provider_configs) == {"mem", "local"}


def test_defaults_cron_replaces_the_builtin_every() -> None:
    """``defaults: {cron: ...}`` schedules by cron; it is not shadowed by the built-in ``every: 90d``."""
    p = one("", defaults='defaults: {cron: "0 3 * * MON", window: 2h, grace: 1d, notice: 1d}\n')
    assert (p.schedule.every, p.schedule.cron, p.schedule.window) == (None, "0 3 * * MON", 2 * H)
    own = one("    every: 30d\n", defaults='defaults: {cron: "0 3 * * MON", grace: 1d, notice: 1d}\n')
    assert (own.schedule.every, own.schedule.cron) == (30 * D, None)


def test_grace_and_notice_checked_against_inherited_interval() -> None:
    """An inherited 7d grace cannot outlast a secret's own 1d interval."""
    assert "grace (7d) must be shorter than the rotation interval (1d)" in error(
        "version: 1\ndefaults: {notice: 1h}\nsecrets:\n  - {name: a, kind: hmac, every: 1d}\n")


# --- YAML values -------------------------------------------------------------------------------------------


def test_environment_interpolation_with_defaults() -> None:
    """``${VAR}`` comes from the environment, ``${VAR:-x}`` falls back to ``x``; several per string work."""
    text = """version: 1
secrets:
  - name: a
    kind: hmac
    path: "apps/${TEAM}/${APP:-web}/key"
    bytes: ${BYTES}
    description: "${EMPTY:-}"
    labels: {owner: "${OWNER:-nobody}"}
"""
    p = parse(text, {"TEAM": "payments", "BYTES": "48", "OWNER": "alice"}).secret("a")
    assert (p.ref.path, p.params.bytes, p.spec.description, p.spec.labels) == (
        "apps/payments/web/key", 48, "", {"owner": "alice"})


def test_missing_variable_names_it_and_its_place() -> None:
    """A missing variable is a ManifestError naming the variable and the key, with a hint."""
    with pytest.raises(ManifestError) as caught:
        parse('version: 1\nsecrets:\n  - {name: a, kind: hmac, path: "${NOPE}"}\n')
    assert caught.value.message == "rotation.yaml:3:33: secrets[0].path: environment variable NOPE is not set"
    assert caught.value.hint is not None
    assert "${NOPE:-default}" in caught.value.hint


def test_environment_values_never_appear_in_errors() -> None:
    """A value taken from the environment is masked in a validation error about it."""
    text = """version: 1
notifiers:
  mail: {type: email, host: smtp.example.com, from: "${FROM}", to: [a@example.com]}
"""
    message = error(text, {"FROM": "hunter2-is-my-password"})
    assert "hunter2" not in message
    assert message == "rotation.yaml:3:47: notifiers.mail.from: '**redacted**' is not an email address"


def test_quoted_scalars_stay_strings() -> None:
    """Quoted ``"on"``, ``'123'`` and ``"1.0"`` are strings; unquoted ``yes`` is a boolean (and rejected)."""
    p = one('    labels: {env: "on", build: \'123\', version: "1.0", empty: ""}\n')
    assert p.spec.labels == {"env": "on", "build": "123", "version": "1.0", "empty": ""}
    assert parse('version: 1\nsecrets: [{name: "007", kind: hmac}]\n').secret("007").name == "007"
    assert "secrets[0].labels.flag: Input should be a valid string" in error(
        "version: 1\nsecrets:\n  - {name: a, kind: hmac, labels: {flag: yes}}\n")


def test_enabled_false_pauses_a_secret() -> None:
    """``enabled: false`` loads (the planner reports it paused); the default is enabled."""
    assert one("    enabled: false\n").spec.enabled is False
    assert one("").spec.enabled is True


def test_union_and_tag_errors_name_real_keys() -> None:
    """Errors inside unions or tagged models point at keys that exist, not pydantic's internal tags."""
    notice = error("version: 1\nsecrets:\n  - name: a\n    kind: hmac\n    notice: {a: 1}\n")
    assert notice.startswith("rotation.yaml:5:5: secrets[0].notice: must be a duration")
    email = error("version: 1\nnotifiers:\n  ops: {type: email, host: h, from: a@b, to: [c@d], username: u,"
                  " starttls: false}\n")
    assert email.startswith("rotation.yaml:3:3: notifiers.ops: SMTP AUTH needs starttls or ssl")


@pytest.mark.parametrize(("text", "expected"), [
    ("version: 1\nx: \x00\n", "rotation.yaml:2:4: invalid YAML: unacceptable character #x0000"),
    ("version: 1\nx: é\ud800\n", "rotation.yaml:2:5: invalid YAML: unacceptable character #xd800"),
    ("version: 1\nsecrets: &a [*a]\n", "rotation.yaml:2:10: secrets[0]: recursive alias"),
    ("version: 1\nx: " + "[" * 5000 + "]" * 5000, "rotation.yaml:1:1: invalid YAML: nested too deeply"),
    ("version: 1\nx: " + "[" * 150 + "]" * 150, "nested more than 100 levels deep"),
    ("version: 1\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcde", "bcdef", strict=True)),
     "aliases expand to too much"),
], ids=["nul", "surrogate", "recursive-alias", "deep-flow", "deep-nesting", "billion-laughs"])
def test_hostile_yaml_is_a_clean_error(text: str, expected: str) -> None:
    """Control characters, surrogates, recursive or exploding aliases and deep nesting: a ManifestError."""
    assert expected in error(text)


def test_unreadable_files_are_manifest_errors(tmp_path: Path) -> None:
    """A missing file and a file that is not UTF-8 fail with exit code 2, the latter with its line."""
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "absent.yaml")
    latin = tmp_path / "rotation.yaml"
    latin.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(ManifestError, match=r"^rotation\.yaml:2:6: not UTF-8 \(byte 0xe9\)$"):
        load_manifest(latin)


# --- selection and paths -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> Manifest:
    """The shipped sample manifest."""
    return load_manifest(SAMPLE, env={})


def test_select_by_names_all_and_selector(sample: Manifest) -> None:
    """Names keep order without duplicates; --all is everything; a selector matches every label pair."""
    names = [p.name for p in sample.select(["auth/jwt-signing", "partner-api-key", "auth/jwt-signing"])]
    assert names == ["auth/jwt-signing", "partner-api-key"]
    assert len(sample.select(everything=True)) == 4
    assert sample.select() == []
    assert [p.name for p in sample.select(selector={"team": "payments"})] == ["payments/webhook-hmac"]
    assert [p.name for p in sample.select(selector={"team": "data", "env": "dev"})] == ["db/reporting-password"]
    assert sample.select(selector={"team": "data", "env": "prod"}) == []


def test_unknown_secret_is_a_usage_error_with_suggestions(sample: Manifest) -> None:
    """An unknown name is a UsageError (exit 2) that suggests close matches."""
    with pytest.raises(UsageError) as caught:
        sample.secret("partner-api-kye")
    assert not isinstance(caught.value, ManifestError)
    assert caught.value.exit_code == 2
    assert "unknown secret 'partner-api-kye'" in caught.value.message
    assert "did you mean: partner-api-key?" in caught.value.message
    with pytest.raises(UsageError, match=r"unknown secret 'zzz' in rotation\.yaml$"):
        sample.select(["zzz"])


def test_audit_path_resolves_next_to_the_manifest(tmp_path: Path) -> None:
    """A relative audit path is relative to the manifest's folder; ROTATOR_AUDIT_LOG overrides it."""
    manifest = tmp_path / "conf" / "rotation.yaml"
    manifest.parent.mkdir()
    manifest.write_text("version: 1\naudit: {path: logs/audit.jsonl}\n")
    assert load_manifest(manifest, env={}).audit_path == tmp_path / "conf" / "logs" / "audit.jsonl"
    other = tmp_path / "elsewhere.jsonl"
    assert load_manifest(manifest, env={"ROTATOR_AUDIT_LOG": str(other)}).audit_path == other
    relative = load_manifest(manifest, env={"ROTATOR_AUDIT_LOG": "x.jsonl"}).audit_path
    assert relative == tmp_path / "conf" / "x.jsonl"
    manifest.write_text("version: 1\n")
    assert load_manifest(manifest, env={}).audit_path == tmp_path / "conf" / ".rotator" / "audit.jsonl"


# --- JSON schema -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_schema() -> dict[str, object]:
    """What ``rotator schema`` prints, parsed."""
    rotator = Path(sys.executable).with_name("rotator")
    proc = subprocess.run([str(rotator), "schema"], capture_output=True, text=True, check=True, timeout=60)
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def test_schema_command_prints_the_manifest_schema(cli_schema: dict[str, object]) -> None:
    """``rotator schema`` prints the same schema as the library, with every installed provider's config."""
    assert cli_schema == json.loads(json.dumps(manifest_json_schema()))
    assert cli_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    properties = cli_schema["properties"]
    assert isinstance(properties, dict)
    assert set(properties) >= {"version", "defaults", "providers", "secrets"}
    variants = properties["providers"]["additionalProperties"]["anyOf"]
    titles = {v["title"] for v in variants}
    assert {"LocalConfig", "MemoryConfig"} <= titles
    local = next(v for v in variants if v["title"] == "LocalConfig")
    assert set(local["properties"]) == {"type", "path", "master_key_file"}


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_schema_references_all_resolve(cli_schema: dict[str, object]) -> None:
    """Every ``$ref`` points into the root ``$defs`` (a provider's own definitions are hoisted there)."""
    defs = cli_schema["$defs"]
    assert isinstance(defs, dict)
    for ref in _refs(cli_schema):
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in defs, ref


def test_sample_manifest_validates_against_the_schema(cli_schema: dict[str, object]) -> None:
    """The sample is valid under the schema and typos are not (checked with jsonschema when installed)."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(cli_schema)
    validator.check_schema(cli_schema)
    data = yaml.safe_load(SAMPLE.read_text())
    assert list(validator.iter_errors(data)) == []
    data["secrets"][0]["grce"] = "3d"
    data["secrets"][1]["every"] = "soon"
    assert len(list(validator.iter_errors(data))) == 2
    if "vault" in installed_providers():  # its auth models are nested definitions that must resolve
        vault = {"version": 1, "providers": {"v": {"type": "vault", "url": "https://v", "auth": {"method": "token"}}}}
        assert list(validator.iter_errors(vault)) == []
        vault["providers"]["v"]["auth"]["method"] = "tokn"
        assert list(validator.iter_errors(vault)) != []
