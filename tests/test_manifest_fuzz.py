"""Fuzzing the manifest loader: whatever the text, it loads or fails with a ``rotation.yaml:LINE:COL:`` error.

Random YAML documents (shaped like manifests, or not) and random edits of the sample ``rotation.yaml`` go
through :func:`rotator.manifest.parse_manifest` in-process; a few edited samples also go through the real
``rotator validate`` to check that no traceback ever reaches the user.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.errors import ExitCode, ManifestError
from rotator.manifest import parse_manifest

SAMPLE = (Path(__file__).resolve().parent.parent / "rotation.yaml").read_text()
ENV = {"SET": "value-from-env-1234", "BYTES": "32"}
LOCATED = re.compile(r"rotation\.yaml:\d+:\d+: \S")
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SECRET_KEYS = ["name", "kind", "path", "description", "enabled", "bytes", "encoding", "prefix", "length",
               "require", "exclude", "symbols", "rsa_bits", "labels", "consumers", "verify", "post_check",
               "auto_rollback", "adopt", "provider", "every", "cron", "window", "grace", "notice", "notify",
               "stale_pending_after", "rollback_window"]
TOP_KEYS = ["version", "defaults", "providers", "notifiers", "audit", "secrets"]


def check(text: str) -> None:
    """``text`` loads, or fails with a located ManifestError (exit 2) that never shows an env value."""
    try:
        parse_manifest(text, Path("rotation.yaml"), ENV)
    except ManifestError as exc:
        failure: ManifestError | None = exc
    else:
        return
    assert failure is not None
    assert failure.exit_code == ExitCode.USAGE
    assert LOCATED.match(failure.message), failure.message
    assert "\n" not in failure.message
    assert "function-" not in failure.message  # a pydantic union tag instead of a real key
    assert ENV["SET"] not in failure.message + (failure.hint or "")


# --- random YAML documents ---------------------------------------------------------------------------------

durations = st.from_regex(r"\A-?[0-9]{1,16}(\.[0-9])?[smhdwx]{1,2}\Z") | st.sampled_from(["90d", "1h30m", "0s"])
crons = st.sampled_from(["0 3 * * MON", "* * * * *", "0 3 29 2 *", "61 * * * *", "0 3 * *", "@daily", ""])
special = st.sampled_from(["${SET}", "${UNSET}", "${UNSET:-7d}", "${BYTES}", "hmac", "local", "on", "~", "1e999",
                           "<<", "-1", "0x20", "rtr live", "ops", "&a [*a]", "*a", "!!binary x"])
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=20) | durations | crons | special)
keys = st.sampled_from(SECRET_KEYS + TOP_KEYS) | st.text(max_size=8)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(keys, inner, max_size=5), max_leaves=15)

secret_values = {
    "name": st.from_regex(r"\A[a-z0-9/_.-]{1,12}\Z") | scalars,
    "kind": st.sampled_from(["api_key", "hmac", "password", "ed25519", "rsa", "fernet", "aes"]),
    "every": durations | scalars, "grace": durations, "notice": durations | st.lists(durations, max_size=3),
    "cron": crons, "window": durations, "bytes": st.integers(0, 2000), "length": st.integers(0, 2000),
    "rsa_bits": st.sampled_from([1000, 2048, 4096]), "require": st.lists(st.sampled_from(
        ["lower", "upper", "digit", "symbol", "emoji"]), max_size=4), "notify": st.lists(special, max_size=2),
    "verify": st.fixed_dictionaries({"command": st.lists(st.text(max_size=5), max_size=2)}),
    "labels": st.dictionaries(st.text(max_size=5), scalars, max_size=3),
}
secrets = st.fixed_dictionaries(
    {"name": secret_values["name"], "kind": secret_values["kind"]},
    optional={k: secret_values.get(k, scalars) for k in SECRET_KEYS if k not in ("name", "kind")},
)
policy = st.fixed_dictionaries({}, optional={k: secret_values.get(k, scalars) for k in
                                             ("every", "cron", "window", "grace", "notice", "notify", "provider")})
providers = st.dictionaries(st.sampled_from(["local", "mem", "vault"]), st.fixed_dictionaries(
    {"type": st.sampled_from(["local", "memory", "nope"]) | scalars}, optional={"path": scalars, "pth": scalars}),
    max_size=2)
notifiers = st.dictionaries(st.sampled_from(["ops", "sec"]), st.fixed_dictionaries(
    {"type": st.sampled_from(["slack", "email", "webhook", "pigeon"])},
    optional={"webhook_url": st.sampled_from(["https://h.example/x", "${SET}", "ftp://x"]),
              "events": st.lists(st.sampled_from(["rotation.failed", "key.revoked", "nope"]), max_size=2),
              "url": scalars, "signing_secret": scalars, "host": scalars, "from": special, "to": scalars}),
    max_size=2)
manifests = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2, "1", None])},
    optional={"defaults": policy, "providers": providers, "notifiers": notifiers,
              "secrets": st.lists(secrets, max_size=3), "audit": scalars | anything, "extra": scalars},
)


@FUZZ
@given(manifests)
def test_random_manifest_shaped_documents(document: dict[str, object]) -> None:
    """Manifest-shaped documents with random values load or fail with a located error."""
    check(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


@FUZZ
@given(anything, st.booleans())
def test_random_yaml_documents(document: object, flow: bool) -> None:
    """Arbitrary YAML documents (any nesting of lists, maps and scalars) load or fail cleanly."""
    check(yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True))


@FUZZ
@given(st.text(alphabet=st.sampled_from([*":-[]{},#&*!|>'\"%@`?$ \n\tab1", "\x00", "\ufeff", "é"]),
               max_size=60))
def test_random_text(text: str) -> None:
    """Raw text built from YAML's punctuation never escapes as anything but a ManifestError."""
    check(text)


# --- mutations of the sample -------------------------------------------------------------------------------

value_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=20)


def mutate(lines: list[str], data: st.DataObject) -> list[str]:
    """One random edit of ``lines``: delete, duplicate, re-indent, swap characters or replace a value."""
    i = data.draw(st.integers(0, max(len(lines) - 1, 0)), label="line")
    if not lines:
        return [data.draw(value_text)]
    op = data.draw(st.sampled_from(["delete", "duplicate", "indent", "swap", "value", "insert"]), label="op")
    line = lines[i]
    if op == "delete":
        return lines[:i] + lines[i + 1:]
    if op == "duplicate":
        return [*lines[:i + 1], line, *lines[i + 1:]]
    if op == "indent":
        delta = data.draw(st.sampled_from([-4, -2, -1, 1, 2, 4, 0]), label="delta")
        new = "\t" + line if delta == 0 else (" " * delta + line if delta > 0 else line[-delta:])
        return [*lines[:i], new, *lines[i + 1:]]
    if op == "swap" and len(line) >= 2:
        j = data.draw(st.integers(0, len(line) - 2), label="at")
        return [*lines[:i], line[:j] + line[j + 1] + line[j] + line[j + 2:], *lines[i + 1:]]
    if op == "value" and ": " in line:
        key, _, _ = line.partition(": ")
        value = data.draw(value_text | special | durations, label="value")
        return [*lines[:i], f"{key}: {value}", *lines[i + 1:]]
    j = data.draw(st.integers(0, len(line)), label="at")
    return [*lines[:i], line[:j] + data.draw(value_text, label="inserted") + line[j:], *lines[i + 1:]]


@FUZZ
@given(st.data())
def test_mutated_sample(data: st.DataObject) -> None:
    """One to four random edits of the sample manifest: it loads or fails with a located error."""
    lines = SAMPLE.splitlines()
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        lines = mutate(lines, data)
    check("\n".join(lines) + "\n")


def test_unmutated_sample_loads() -> None:
    """The fuzzer's starting point is itself valid."""
    assert len(parse_manifest(SAMPLE, Path("rotation.yaml"), ENV).secrets) == 4


# --- a few through the real CLI ----------------------------------------------------------------------------


def _edited_samples(count: int) -> list[str]:
    """Deterministic edits of the sample (seeded): each a classic mistake the CLI must report cleanly."""
    rng = random.Random(20240607)
    lines = SAMPLE.splitlines()
    values = ["3x", "${UNSET}", "[", "{a: 1}", "-1d", "0 0 31 2 *", "", "'unclosed", "\t", "<<: *x"]
    out = []
    for n in range(count):
        edited = list(lines)
        i = rng.randrange(len(edited))
        if n % 3 == 0:
            del edited[i]
        elif n % 3 == 1:
            edited[i] = ("  " if n % 2 else "\t") + edited[i]
        else:
            while ": " not in edited[i]:
                i = rng.randrange(len(edited))
            edited[i] = edited[i].partition(": ")[0] + ": " + values[n % len(values)]
        out.append("\n".join(edited) + "\n")
    return out


def test_mutated_samples_through_the_cli(tmp_path: Path) -> None:
    """Edited samples through ``rotator validate``: exit 0 or 2, and never a traceback."""
    rotator = Path(sys.executable).with_name("rotator")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}

    def run(n_text: tuple[int, str]) -> tuple[str, subprocess.CompletedProcess[str]]:
        folder = tmp_path / str(n_text[0])
        folder.mkdir()
        (folder / "rotation.yaml").write_text(n_text[1])
        proc = subprocess.run([str(rotator), "validate"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        return n_text[1], proc

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, enumerate(_edited_samples(4))))
    for text, proc in results:
        assert "Traceback" not in proc.stdout + proc.stderr, text
        assert proc.returncode in (0, 2), (proc.stderr, text)
        if proc.returncode == 2:
            assert re.fullmatch(r"rotator: error: rotation\.yaml:\d+:\d+: .+(\n  hint: .+)?\n", proc.stderr), \
                proc.stderr


@pytest.mark.parametrize("seed", range(3))
def test_edited_samples_are_deterministic(seed: int) -> None:
    """The CLI sample is the same on every run (seeded), so a failure there reproduces."""
    assert _edited_samples(6) == _edited_samples(6)
