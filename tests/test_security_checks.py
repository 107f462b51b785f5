"""Security checks that `make test` also runs: bandit finds nothing of medium or high severity in the shipped
code, and every dependency installed from the pyproject files is pinned in constraints.txt, which make uses."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from importlib import metadata

import pytest

from tests.conftest import REPO

OURS = {"rotator", "rotator-vault", "rotator-aws"}  # installed editable from this repository
EXTRAS = ("vault", "aws", "dev")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_bandit_reports_no_medium_or_high_findings() -> None:
    """bandit over rotator/ and providers/ with the pyproject config finds nothing of medium/high severity."""
    if importlib.util.find_spec("bandit") is None:
        pytest.skip("bandit is not installed (pip install -c constraints.txt '.[dev]')")
    proc = subprocess.run([sys.executable, "-m", "bandit", "-q", "-r", "rotator", "providers", "-c",
                           "pyproject.toml", "-f", "json"], capture_output=True, text=True, cwd=REPO,
                          timeout=300, check=False)
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    assert not report["errors"], report["errors"]
    serious = [f"{r['filename']}:{r['line_number']}: {r['test_id']} {r['issue_text']}"
               for r in report["results"] if r["issue_severity"] in ("MEDIUM", "HIGH")]
    assert not serious, "\n".join(serious)


def _requirements(dist: str, extras: set[str]) -> list[tuple[str, set[str]]]:
    """The (name, extras) this installed distribution requires when installed with ``extras``."""
    from packaging.requirements import Requirement

    out = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        wanted = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras})
        if wanted:
            out.append((req.name, set(req.extras)))
    return out


def _installed_closure() -> dict[str, str]:
    """Every installed distribution that rotator (with all extras) and the providers pull in: name -> version."""
    todo: list[tuple[str, set[str]]] = [("rotator", set(EXTRAS)), ("rotator-vault", set()), ("rotator-aws", set())]
    seen: dict[str, set[str]] = {}
    found: dict[str, str] = {}
    while todo:
        name, extras = todo.pop()
        key = _canonical(name)
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | extras
        try:
            found[key] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency whose marker does not apply here (platform, Python version)
        todo += _requirements(name, extras)
    return found


def test_constraints_pin_every_installed_dependency() -> None:
    """Each dependency installed from pyproject (transitively) appears in constraints.txt as name==version."""
    pytest.importorskip("packaging")
    try:
        metadata.version("rotator")
    except metadata.PackageNotFoundError:
        pytest.skip("rotator is not installed in this environment (run make dev)")
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: '{line}' is not pinned with =="
            pins[_canonical(name)] = version.strip()
    installed = {k: v for k, v in _installed_closure().items() if k not in OURS}
    assert len(installed) > 20  # the walk found the dependency tree, not just the top level
    unpinned = sorted(f"{name}=={version}" for name, version in installed.items() if pins.get(name) != version)
    assert not unpinned, f"installed but not pinned (or pinned to another version) in constraints.txt: {unpinned}"


def test_make_installs_with_the_constraints() -> None:
    """The Makefile installs with `-c constraints.txt` and `make test` runs the bandit step."""
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^PIP_INSTALL :=.*-c constraints\.txt", makefile, re.M)
    assert re.search(r"^test:.*\bsecurity\b", makefile, re.M)
    assert re.search(r"^security:\n\t\$\(BIN\)/bandit .*-r rotator providers", makefile, re.M)
