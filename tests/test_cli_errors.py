"""One error style everywhere (rotator/cli/_main.py): click's usage errors, rotator's own errors and manifest
errors all print ``rotator: error: ...`` plus at most one ``  hint:`` line, with the contract's exit code,
and suggest the closest command, option, choice or enum value. Real CLI subprocesses; canary-scanned."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Result, Workspace

MANIFEST = """
version: 1
secrets:
  - {name: partner-api-key, kind: api_key, consumers: [partner-gateway]}
  - {name: jwt, kind: ed25519}
"""


def _one_error(result: Result, code: int = 2) -> tuple[str, str | None]:
    """The error line and the hint of a failed run that printed exactly that (and nothing on stdout)."""
    assert result.code == code, (result.out, result.err)
    assert result.out == ""
    lines = result.err.splitlines()
    assert 1 <= len(lines) <= 2, result.err
    assert lines[0].startswith("rotator: error: "), result.err
    if len(lines) == 2:
        assert lines[1].startswith("  hint: "), result.err
    return lines[0].removeprefix("rotator: error: "), lines[1].removeprefix("  hint: ") if len(lines) == 2 else None


@pytest.mark.parametrize(("args", "message", "hint"), [
    (("rotate", "--nwo", "jwt"), "rotate: no such option: --nwo (did you mean --now?)", "see 'rotator rotate --help'"),
    (("statsu",), "unknown command 'statsu' (did you mean 'status'?)", "see 'rotator --help'"),
    (("status", "-o", "jsn"), "status: -o/--output: 'jsn' is not one of table, json, yaml (did you mean 'json'?)",
     "see 'rotator status --help'"),
    (("rollback",), "rollback: missing argument 'NAME'", "see 'rotator rollback --help'"),
    (("rotate", "--concurrency", "0", "jwt"), "rotate: --concurrency: 0 is not in the range 1<=x<=64",
     "see 'rotator rotate --help'"),
    (("--color", "sometimes", "status"), "--color: 'sometimes' is not one of auto, always, never",
     "see 'rotator --help'"),
    (("audit", "verfy"), "audit: unknown command 'verfy' (did you mean 'verify'?)", "see 'rotator audit --help'"),
    (("completion", "tcsh"), "completion: SHELL: 'tcsh' is not one of bash, zsh, fish",
     "see 'rotator completion --help'"),
])
def test_click_errors_are_one_line_with_a_hint(workspace: Workspace, args: tuple[str, ...], message: str,
                                               hint: str) -> None:
    """Click's own errors (unknown option, command, choice, missing argument, range) print one line + hint."""
    workspace.write_manifest(MANIFEST)
    assert _one_error(workspace.cli(*args)) == (message, hint)


def test_global_option_after_the_command_gets_a_hint(workspace: Workspace) -> None:
    """`rotator run -v` says that -v is a global option and where it goes."""
    workspace.write_manifest(MANIFEST)
    message, hint = _one_error(workspace.cli("run", "-v"))
    assert message == "run: no such option: -v"
    assert hint == "-v is a global option: put it before the command, as in 'rotator -v run'"


def test_daemon_blames_only_the_bad_duration(workspace: Workspace) -> None:
    """`--reconcile-every 5min` names that option and the value, not all three duration options."""
    workspace.write_manifest(MANIFEST)
    message, _ = _one_error(workspace.cli("daemon", "--reconcile-every", "5min"))
    assert message.startswith("--reconcile-every '5min': must be a duration like 7d")
    assert "--circuit-cooldown" not in message
    assert "--shutdown-timeout" not in message


def test_manifest_enum_value_gets_did_you_mean(workspace: Workspace) -> None:
    """`kind: hmca` is an unknown kind with a suggestion and the list, at its file:line:col."""
    workspace.write_manifest("version: 1\nsecrets:\n  - name: s\n    kind: hmca\n")
    message, _ = _one_error(workspace.cli("validate"))
    assert message == ("rotation.yaml:4:5: secrets[0].kind: unknown kind 'hmca' (did you mean 'hmac'?); "
                       "one of: api_key, hmac, password, ed25519, rsa, fernet")
    workspace.write_manifest("version: 1\nsecrets:\n  - {name: s, kind: hmac, encoding: bas64}\n")
    message, _ = _one_error(workspace.cli("validate"))
    assert "secrets[0].encoding: unknown encoding 'bas64' (did you mean 'base64'?)" in message


@pytest.mark.parametrize(("where", "env", "said"), [
    (("-f", "missing.yaml"), {}, "(from -f)"),
    ((), {"ROTATOR_MANIFEST": "elsewhere/rotation.yaml"}, "(from ROTATOR_MANIFEST)"),
])
def test_manifest_not_found_says_where_it_looked(workspace: Workspace, where: tuple[str, ...],
                                                 env: dict[str, str], said: str) -> None:
    """A missing manifest names the absolute path looked at and where that path came from."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "rotator", *where, "status"], capture_output=True, text=True,
                          cwd=workspace.root, env={**workspace.env, **env}, timeout=60, check=False)
    result = Result(where, proc.returncode, proc.stdout, proc.stderr)
    message, hint = _one_error(result)
    relative = where[1] if where else env["ROTATOR_MANIFEST"]
    assert message == f"manifest not found: {workspace.root / relative} {said}"
    assert hint == "pass -f PATH or set ROTATOR_MANIFEST"


def test_default_manifest_not_found(workspace: Workspace) -> None:
    """Without -f or ROTATOR_MANIFEST the error says it looked for ./rotation.yaml and that both are unset."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "rotator", "plan"], capture_output=True, text=True,
                          cwd=workspace.root, env=workspace.env, timeout=60, check=False)
    message, _ = _one_error(Result(("plan",), proc.returncode, proc.stdout, proc.stderr))
    assert message == (f"manifest not found: {workspace.root / 'rotation.yaml'} "
                       "(the default; -f and ROTATOR_MANIFEST are unset)")


def test_jwks_of_a_non_signing_secret_reads_well(workspace: Workspace) -> None:
    """The JWKS refusal names the kind without article trouble ("is of kind api_key")."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    message, _ = _one_error(workspace.cli("jwks", "partner-api-key"))
    assert message == "partner-api-key is of kind api_key; a JWKS exists only for ed25519 and rsa keys"


def test_audit_verify_names_the_broken_line_once(workspace: Workspace) -> None:
    """A tampered audit log is reported as ``path:line: audit chain broken: why`` with the place said once."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    audit = workspace.root / "audit.jsonl"
    lines = audit.read_text().splitlines()
    record = json.loads(lines[1])
    record["actor"] = "mallory"
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    audit.write_text("\n".join(lines) + "\n")
    result = workspace.cli("audit", "verify")
    assert result.code == 1
    (line,) = result.err.splitlines()
    assert line.startswith(f"{audit}:2: audit chain broken: ")
    assert line.count(f"{audit}:2") == 1, line


def test_usage_errors_of_our_own_keep_the_style(workspace: Workspace) -> None:
    """rotator's UsageErrors (unknown secret, bad selector) look the same as click's."""
    workspace.write_manifest(MANIFEST)
    message, _ = _one_error(workspace.cli("status", "jtw"))
    assert message == "unknown secret 'jtw' in rotation.yaml (did you mean: jwt?)"
    message, _ = _one_error(workspace.cli("plan", "-l", "team"))
    assert message == "--selector wants KEY=VALUE, got 'team'"
    message, _ = _one_error(workspace.cli("status", "-l", "team=nobody"))
    assert message == "no secret matches the selector team=nobody"
