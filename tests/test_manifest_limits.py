"""Hostile manifests are refused quickly with one line and exit 2: oversized files, FIFOs and devices, alias
bombs, integers with huge digit counts. Speed is measured in benchmarks/bench_worst_cases.py; here the
subprocess timeouts only guard against a hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rotator import _yaml
from rotator.errors import ManifestError
from rotator.manifest import MAX_MANIFEST_BYTES, load_manifest, parse_manifest

REPO = Path(__file__).resolve().parent.parent


def _cli_validate(manifest: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`rotator -f MANIFEST validate` in a subprocess (killed after ``timeout``: a hang fails the test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    return subprocess.run([sys.executable, "-m", "rotator", "-f", manifest, "validate"], capture_output=True,
                          text=True, timeout=timeout, env={**env, "PYTHONPATH": str(REPO)}, check=False)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("  hint:")]
    assert len(lines) == 1, result.stderr
    assert "internal error" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "folder"])
def test_non_regular_manifest_is_refused_without_reading(tmp_path: Path, special: str) -> None:
    """`-f /dev/zero` and a FIFO without a writer used to hang: now exit 2 naming the kind of file."""
    path = {"/dev/zero": "/dev/zero", "fifo": str(tmp_path / "fifo"), "folder": str(tmp_path)}[special]
    if special == "fifo":
        os.mkfifo(path)
    line = _one_line(_cli_validate(path))
    if special == "folder":  # the CLI's -f option refuses a folder before the manifest reader sees it
        assert line == f"rotator: error: -f/--manifest: file '{path}' is a directory"
        return
    kind = {"/dev/zero": "a character device", "fifo": "a FIFO"}[special]
    assert line == f"rotator: error: manifest {path} is {kind}, not a regular file"


def test_oversized_manifest_is_refused_before_parsing(tmp_path: Path) -> None:
    """A manifest over the documented 16 MiB limit is refused from its size alone."""
    big = tmp_path / "rotation.yaml"
    with big.open("wb") as out:
        out.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: costs no disk
    assert MAX_MANIFEST_BYTES == 16 * 1024 * 1024
    line = _one_line(_cli_validate(str(big)))
    assert line.endswith(f"is {MAX_MANIFEST_BYTES + 1:,} bytes; the limit is {MAX_MANIFEST_BYTES:,}")


def test_manifest_at_the_limit_is_read(tmp_path: Path) -> None:
    """Exactly 16 MiB is still read (a YAML comment pads it); the limit is not off by one."""
    path = tmp_path / "rotation.yaml"
    head = b"version: 1\nsecrets: []\n#"
    path.write_bytes(head + b"x" * (MAX_MANIFEST_BYTES - len(head)))
    assert load_manifest(path, env={}).secrets == {}


def alias_bomb(aliases: int = 200_000) -> str:
    """The reported 600 KB manifest: one anchored list referenced 200,000 times."""
    return "version: 1\nx: &a [1,2,3,4,5,6,7,8,9,10]\nsecrets: [" + ",".join(["*a"] * aliases) + "]\n"


def test_alias_bomb_is_refused_after_a_bounded_amount_of_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """200k aliases (600 KB) took 32 s and 1 GB: the expansion is measured and stops after the document's
    own size plus 10,000 repeated values, so the builder visits a few thousand nodes, not two million."""
    text = alias_bomb()
    assert 590_000 < len(text) < 610_000
    visited = 0
    build = _yaml._Builder.build

    def counting(self: _yaml._Builder, node: object, path: tuple[str | int, ...]) -> object:
        nonlocal visited
        visited += 1
        return build(self, node, path)  # type: ignore[arg-type]

    monkeypatch.setattr(_yaml._Builder, "build", counting)
    with pytest.raises(ManifestError, match="aliases expand to too much") as caught:
        parse_manifest(text, tmp_path / "rotation.yaml", {})
    assert caught.value.message.startswith("rotation.yaml:2:")
    assert visited <= 2 * 10 + _yaml._ALIAS_SLACK + 20
    monkeypatch.undo()
    manifest = tmp_path / "rotation.yaml"
    manifest.write_text(text)
    assert "aliases expand to too much" in _one_line(_cli_validate(str(manifest)))


def test_scalar_alias_flood_is_refused() -> None:
    """Even aliases of one small scalar count: 200k `*a` items are 200k values written once."""
    text = "version: 1\nx: &a hello\nsecrets: [" + ",".join(["*a"] * 200_000) + "]\n"
    with pytest.raises(ManifestError, match="aliases expand to too much"):
        parse_manifest(text, Path("rotation.yaml"), {})


def test_modest_aliases_still_work() -> None:
    """Real use (one anchor of common labels reused by 2,000 secrets) stays well inside the budget."""
    first = "  - {name: s0, kind: hmac, labels: &common {team: payments, tier: gold, owner: alice}}\n"
    rest = "".join(f"  - {{name: s{i}, kind: hmac, labels: *common}}\n" for i in range(1, 2000))
    manifest = parse_manifest(f"version: 1\nsecrets:\n{first}{rest}", Path("rotation.yaml"), {})
    assert manifest.secrets["s1999"].spec.labels == {"team": "payments", "tier": "gold", "owner": "alice"}


def test_huge_integer_is_a_manifest_error(tmp_path: Path) -> None:
    """A 100,000-digit integer exited 1 with `internal error: ValueError`: now exit 2 at its position."""
    manifest = tmp_path / "rotation.yaml"
    manifest.write_text("version: 1\nsecrets:\n  - name: a\n    kind: api_key\n    bytes: " + "9" * 100_000 + "\n")
    line = _one_line(_cli_validate(str(manifest)))
    assert line == "rotator: error: rotation.yaml:5:12: secrets[0].bytes: integer has 100,000 digits (at most 4,300)"


def test_long_but_allowed_integer_is_range_checked_normally() -> None:
    """Up to Python's own 4,300 digits an integer parses and the field's own check reports it."""
    text = "version: 1\nsecrets:\n  - {name: a, kind: api_key, bytes: " + "9" * 4300 + "}\n"
    with pytest.raises(ManifestError, match=r"secrets\[0\]\.bytes"):
        parse_manifest(text, Path("rotation.yaml"), {})
