"""Every broken manifest in ``tests/manifests/broken`` fails ``rotator validate`` cleanly: exit 2, one line.

Each file states what it expects in its header comments::

    # expect: secrets[1].grace: must be a duration     (repeatable: each must appear in the error line)
    # env: NAME=VALUE                                  (set for the run; VALUE must never be printed)
    # line: 7                                          (the error's FILE:LINE:COL starts with this line)

Fifty interpreter start-ups would cost half a minute of CPU, so one driver process imports the CLI once
and forks a real child process per file that runs ``rotator.cli.main`` (the console script's entry point)
with its own stdout, stderr and exit status. A few files also go through the installed ``rotator`` script.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "manifests" / "broken"
FILES = sorted(CORPUS.glob("*.yaml"))
ROTATOR = Path(sys.executable).with_name("rotator")
ERROR = re.compile(r"rotator: error: (?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<why>.+)")
SCRIPT_SAMPLE = ("tab-indentation", "missing-env-var", "env-value-hidden", "not-utf8")

pytestmark = pytest.mark.xdist_group("manifest_corpus")  # one worker runs the corpus once


@dataclass(frozen=True)
class Expectation:
    """What one corpus file's header asks for."""

    messages: tuple[str, ...]
    line: int
    env: dict[str, str]


@dataclass(frozen=True)
class Result:
    """How ``rotator -f FILE validate`` ended."""

    code: int
    stdout: str
    stderr: str


def expectation(path: Path) -> Expectation:
    """Parse the ``# expect:`` / ``# line:`` / ``# env:`` header of a corpus file."""
    header = path.read_bytes().decode("utf-8", "replace").splitlines()
    pairs = [line[2:].partition(": ") for line in header if line.startswith("# ")]
    lines = [int(v) for k, _, v in pairs if k == "line"]
    env = dict(v.partition("=")[::2] for k, _, v in pairs if k == "env")
    assert len(lines) == 1, f"{path.name}: needs exactly one '# line:' header"
    return Expectation(tuple(v for k, _, v in pairs if k == "expect"), lines[0], env)


def _clean_env(path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env.update(expectation(path).env, NO_COLOR="1")
    return env


def _drive(paths: list[Path], out_dir: Path) -> dict[str, tuple[int, str, str]]:
    """In the driver process: fork one child per manifest running the CLI entry point."""
    import traceback

    import rotator.app
    import rotator.cli
    import rotator.manifest  # imported once here, inherited by every child

    results = {}
    for i, path in enumerate(paths):
        out, err = out_dir / f"{i}.out", out_dir / f"{i}.err"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: behave like `rotator -f PATH validate`
            code = 1
            try:
                os.environ.clear()
                os.environ.update(_clean_env(path))
                os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT), 1)
                os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT), 2)
                rotator.cli.main(["-f", str(path), "validate"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # what the interpreter would print for an escaped exception
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        results[path.name] = (os.waitstatus_to_exitcode(status), out.read_text(), err.read_text())
    return results


def _run_script(path: Path, cwd: Path) -> Result:
    proc = subprocess.run([str(ROTATOR), "-f", str(path), "validate"], capture_output=True, text=True,
                          cwd=cwd, env=_clean_env(path), timeout=60, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Run the whole corpus once through the forking driver."""
    tmp = tmp_path_factory.mktemp("corpus")
    proc = subprocess.run([sys.executable, __file__, str(tmp), *map(str, FILES)], capture_output=True, text=True,
                          cwd=tmp, timeout=120, check=True)
    return {name: Result(*row) for name, row in json.loads(proc.stdout).items()}


@pytest.fixture(scope="module")
def script_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Run a sample of the corpus through the installed ``rotator`` console script, in parallel."""
    tmp = tmp_path_factory.mktemp("script")
    sample = [p for p in FILES if p.stem.split("-", 1)[1] in SCRIPT_SAMPLE]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(lambda p: (p.name, _run_script(p, tmp)), sample))


def check_result(path: Path, result: Result) -> None:
    """Exit 2, nothing on stdout, one ``rotator: error: FILE:LINE:COL: why`` line (+ an optional hint)."""
    expect = expectation(path)
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    if len(lines) == 2:
        assert lines[1].startswith("  hint: "), result.stderr
    match = ERROR.fullmatch(lines[0])
    assert match, lines[0]
    assert match["file"] == path.name
    assert int(match["line"]) == expect.line, lines[0]
    for message in expect.messages:
        assert message in match["why"], lines[0]
    for value in expect.env.values():
        assert value not in result.stderr


def test_corpus_is_large_enough() -> None:
    """The corpus holds at least 30 broken manifests, each with a header saying what it expects."""
    assert len(FILES) >= 30
    assert all(expectation(p).messages for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_broken_manifest_fails_cleanly(path: Path, results: dict[str, Result]) -> None:
    """The CLI entry point, in a process of its own, exits 2 with the expected one-line error."""
    check_result(path, results[path.name])


def test_console_script_sample(script_results: dict[str, Result]) -> None:
    """The installed ``rotator`` script itself gives the same clean errors (a sample of the corpus)."""
    assert len(script_results) == len(SCRIPT_SAMPLE)
    for name, result in script_results.items():
        check_result(CORPUS / name, result)


def test_missing_variable_hint_names_it(results: dict[str, Result]) -> None:
    """A missing ``${VAR}`` is named in the error and the hint shows how to set or default it."""
    (name,) = [p.name for p in FILES if "missing-env-var" in p.name]
    stderr = results[name].stderr
    assert "ROTATOR_TEST_UNSET_HOOK is not set" in stderr
    assert "hint: export ROTATOR_TEST_UNSET_HOOK=... or use ${ROTATOR_TEST_UNSET_HOOK:-default}" in stderr


if __name__ == "__main__":  # the driver process: python test_manifest_corpus.py OUT_DIR FILE...
    found = _drive([Path(a) for a in sys.argv[2:]], Path(sys.argv[1]))
    sys.stdout.write(json.dumps(found))
