"""The CLI in a real terminal: tmux (an 80x40 screen whose content we read back) and a pseudo-terminal for
prompts. Counts the lines a person sees, checks nothing overwrites the progress bar, that names are never cut
in tables, that colours follow NO_COLOR/--color, and that destructive commands ask first only on a terminal.
Every test ends with the canary scan (see conftest)."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Workspace
from tests.servers import require_binary

pytestmark = pytest.mark.xdist_group("processes")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WIDTH = 80


@dataclass
class Screen:
    """What tmux shows after a command ran: every line (history included) and the exit code."""

    lines: list[str]
    code: int
    raw: str  # with colour escapes


@dataclass
class Tmux:
    """A tmux server on its own socket with one 80x40 window per command."""

    binary: str
    socket: str
    config: Path
    env: dict[str, str]

    def run(self, ws: Workspace, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Screen:
        """Run ``rotator ARGS`` in a fresh window, wait until it exits, and read the screen back."""
        channel = f"done-{uuid.uuid4().hex[:8]}"
        command = shlex.join(ws.command(*args))
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**self.env, **(env or {})}.items())
        script = (f"cd {shlex.quote(str(ws.root))}; export {exports}; unset COLUMNS LINES; clear; {command}; "
                  f"echo EXIT=$?; {self.binary} -S {self.socket} wait-for -S {channel}")
        self._tmux("new-window", "-d", "-n", channel, script)
        subprocess.run([self.binary, "-S", self.socket, "wait-for", channel], timeout=timeout, check=True)
        raw = self._tmux("capture-pane", "-p", "-e", "-S", "-", "-E", "-", "-t", channel)
        self._tmux("kill-window", "-t", channel)
        text = ANSI.sub("", raw)
        ws.outputs.append(text)
        lines = text.split("\n")
        end = max(i for i, line in enumerate(lines) if line.startswith("EXIT="))  # then tmux's "Pane is dead"
        code = int(lines[end].removeprefix("EXIT="))
        lines = lines[:end]
        while lines and not lines[0].strip():
            lines.pop(0)
        return Screen(lines, code, raw)

    def _tmux(self, *args: str) -> str:
        return subprocess.run([self.binary, "-S", self.socket, "-f", str(self.config), *args], capture_output=True,
                              text=True, check=True, env=self.env, timeout=30).stdout


@pytest.fixture
def tmux(workspace: Workspace, tmp_path: Path) -> Iterator[Tmux]:
    """A private tmux server (80x40 windows, deep history, windows stay after exit)."""
    binary = require_binary("tmux", "tmux")
    config = tmp_path / "tmux.conf"
    config.write_text(f"set -g history-limit 50000\nset -g remain-on-exit on\nset -g default-size {WIDTH}x40\n")
    env = {k: v for k, v in workspace.env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TMUX")}
    env["TERM"] = "xterm-256color"
    server = Tmux(binary, str(tmp_path / "tmux.sock"), config, env)
    server._tmux("new-session", "-d", "-x", str(WIDTH), "-y", "40", "-s", "main")
    yield server
    subprocess.run([binary, "-S", server.socket, "kill-server"], capture_output=True, check=False)


def _many(ws: Workspace, count: int, failing: Sequence[int] = ()) -> list[str]:
    names = [f"partner-api-key-{i:03d}" for i in range(count)]
    lines = ["version: 1", "defaults: {every: 90d, grace: 7d, notice: 14d}", "secrets:"]
    for i, name in enumerate(names):
        # verify passes the first value (it runs on create too) and refuses later ones
        hook = ', verify: {command: ["sh", "-c", "test ! -e refuse-now"]}' if i in failing else ""
        lines.append(f"  - {{name: {name}, kind: hmac, consumers: [partner-gateway]{hook}}}")
    ws.write_manifest("\n".join(lines) + "\n")
    assert ws.cli("run").code == 0
    (ws.root / "refuse-now").touch()
    return names


def test_200_secrets_in_a_terminal_print_one_line_each(workspace: Workspace, tmux: Tmux) -> None:
    """`rotate --all --now` on 200 secrets in an 80-column terminal leaves 200 result lines and the summary:
    no info logs, no progress bar remnants, nothing written over the bar."""
    names = _many(workspace, 200)
    screen = tmux.run(workspace, "rotate", "--all", "--now")
    assert screen.code == 0, screen.lines[-20:]
    assert len(screen.lines) == 201, screen.lines[:10]
    assert [line.split()[1].rstrip(":") for line in screen.lines[:-1]] == names
    assert all(line.startswith("ok     ") and line.endswith("is current") for line in screen.lines[:-1])
    assert screen.lines[-1] == "200 secrets: 200 rotated"


def test_warnings_print_above_the_progress_bar(workspace: Workspace, tmux: Tmux) -> None:
    """Warning logs during a progress bar come out as whole lines above it (the bar's console prints them),
    never glued to a bar frame; the results follow, one line per secret."""
    failing = (7, 47, 87)
    names = _many(workspace, 120, failing)
    screen = tmux.run(workspace, "rotate", "--all", "--now")
    assert screen.code == 1
    text = "\n".join(screen.lines)
    assert "━" not in text
    assert "rotating" not in text
    logs = [line for line in screen.lines if re.match(r"\d\d:\d\d:\d\dZ \[", line)]
    assert len(logs) == 2 * len(failing), logs  # rotation.failed + secret.failed per failing secret
    assert all("[warning" in line for line in logs)
    results = [line for line in screen.lines if line.startswith(("ok     ", "FAILED "))]
    assert len(results) == len(names)
    for i in failing:
        assert f"FAILED {names[i]}: failed - verify failed: hook sh exited with status 1" in text
    assert screen.lines[-1] == "120 secrets: 3 failed, 117 rotated"
    assert len(screen.lines) < len(names) + 2 + len(failing) * 12  # a handful of wrapped warning lines


def test_verbose_shows_info_logs_and_quiet_only_failures(workspace: Workspace, tmux: Tmux) -> None:
    """-v adds the info logs; -q prints only the failed secrets (no ok lines, no summary)."""
    _many(workspace, 4, failing=(2,))
    verbose = tmux.run(workspace, "-v", "rotate", "--all", "--now")
    assert sum("rotation.succeeded" in line for line in verbose.lines) == 3
    quiet = tmux.run(workspace, "-q", "rotate", "--all", "--now")
    assert quiet.code == 1
    text = "\n".join(quiet.lines)
    assert [line.split()[0] for line in quiet.lines if line.startswith(("ok ", "FAILED "))] == ["FAILED"]
    assert "secrets:" not in text
    assert "[warning" not in text  # -q: errors only


def test_tables_never_cut_names_at_80_columns(workspace: Workspace, tmux: Tmux) -> None:
    """status, plan and history at 80 columns: every line fits and every name appears whole."""
    workspace.write_manifest("""
        version: 1
        defaults: {every: 90d, grace: 7d, notice: 14d}
        secrets:
          - {name: partner-api-key, kind: api_key, consumers: [partner-gateway, billing-worker]}
          - {name: webhook-signing-secret, kind: hmac, labels: {team: payments}}
    """)
    workspace.cli("run")
    workspace.cli("rotate", "--now", "partner-api-key", "webhook-signing-secret")
    workspace.cli("retire", "webhook-signing-secret", "--reason", "consumers confirmed the switch")
    both = ("partner-api-key", "webhook-signing-secret")
    for args, names in ((("status",), both), (("plan",), both), (("history", "partner-api-key"), both[:1]),
                        (("history",), both)):
        screen = tmux.run(workspace, *args)
        assert screen.code == 0, screen.lines
        assert all(len(line) <= WIDTH for line in screen.lines), args
        words = {word for line in screen.lines for word in re.split(r"[\s,;]+", line)}
        for name in names:
            assert name in words, (args, screen.lines)
        if args == ("status",):
            assert {"partner-gateway", "billing-worker"} <= words, screen.lines
            assert screen.lines[0] == "status"
            assert screen.lines[1].split() == ["SECRET", "VERSION", "STATE", "AGE", "GRACE", "CONSUMERS", "MOVED",
                                               "NOTE"]


def test_colors_follow_no_color_and_the_color_option(workspace: Workspace, tmux: Tmux) -> None:
    """Console logs are coloured on a terminal, plain with NO_COLOR=1 or --color never."""
    workspace.write_manifest("""
        version: 1
        secrets:
          - {name: s, kind: hmac, verify: {command: ["false"]}}
    """)
    workspace.cli("run")
    coloured = tmux.run(workspace, "rotate", "--now", "s")
    assert "[warning" in "\n".join(coloured.lines)
    assert "\x1b[" in coloured.raw
    for env, args in (({"NO_COLOR": "1"}, ()), ({}, ("--color", "never")), ({"ROTATOR_COLOR": "never"}, ())):
        plain = tmux.run(workspace, *args, "rotate", "--now", "s", env=env)
        assert "[warning" in "\n".join(plain.lines)
        assert "\x1b[" not in plain.raw.replace("\x1b[0m", "").replace("\x1b[39m", ""), (env, args)


def test_color_always_colours_a_pipe(workspace: Workspace) -> None:
    """--color always colours console logs even when stderr is a pipe."""
    workspace.write_manifest("""
        version: 1
        secrets:
          - {name: s, kind: hmac, verify: {command: ["false"]}}
    """)
    workspace.cli("run")
    result = workspace.cli("--color", "always", "--log-format", "console", "rotate", "--now", "s")
    assert "\x1b[" in result.err
    assert "\x1b[" not in workspace.cli("--log-format", "console", "rotate", "--now", "s").err


# --- prompts on a pseudo-terminal ---------------------------------------------------------------------------


def _on_pty(ws: Workspace, args: Sequence[str], answer: bytes | None, timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI with stdin and stderr on a pty; answer the first ``[y/N]`` prompt with ``answer``."""
    master, slave = os.openpty()
    env = {**ws.env, "TERM": "dumb"}
    proc = subprocess.Popen(ws.command(*args), stdin=slave, stdout=subprocess.PIPE, stderr=slave, cwd=ws.root,
                            env=env)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout  # a bound for a hung child, not a performance assertion
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if answer is not None and not answered and b"[y/N]" in seen:
                os.write(master, answer)
                answered = True
        elif proc.poll() is not None:
            break
    out = proc.communicate(timeout=timeout)[0].decode()
    os.close(master)
    err = seen.decode(errors="replace")
    ws.outputs += [out, err]
    return proc.returncode, out, err


def _states(ws: Workspace, name: str) -> list[str]:
    return [v["state"] for v in ws.cli("status", name, "-o", "json").json()["secrets"][0]["versions"]]


def test_retire_asks_on_a_terminal_and_no_changes_nothing(workspace: Workspace) -> None:
    """On a terminal `retire` asks first: "n" exits 1 and changes nothing, "y" retires."""
    workspace.write_manifest("version: 1\nsecrets:\n  - {name: s, kind: hmac}\n")
    workspace.cli("run")
    workspace.cli("rotate", "--now", "s")
    code, out, err = _on_pty(workspace, ["retire", "s"], b"n\n")
    assert "previous value of s" in err
    assert code == 1
    assert "rotator: cancelled; nothing changed" in err
    assert sorted(_states(workspace, "s")) == ["current", "previous"]
    code, out, err = _on_pty(workspace, ["retire", "s"], b"y\n")
    assert code == 0, err
    assert "s: retired" in out
    assert "previous" not in _states(workspace, "s")


def test_rollback_question_names_both_versions(workspace: Workspace) -> None:
    """The rollback question says which value comes back and which one is retired; "y" rolls back."""
    workspace.write_manifest("version: 1\nsecrets:\n  - {name: s, kind: hmac}\n")
    workspace.cli("run")
    workspace.cli("rotate", "--now", "s")
    versions = workspace.cli("status", "s", "-o", "json").json()["secrets"][0]["versions"]
    ids = {v["state"]: v["id"][:8] for v in versions}
    code, out, err = _on_pty(workspace, ["rollback", "s"], b"y\n")
    assert f"Roll back s: make {ids['previous']} current again and retire {ids['current']}? [y/N]" in err
    assert code == 0, err
    assert f"s: rolled_back - {ids['previous']} is current again" in out


def test_yes_and_a_pipe_never_ask(workspace: Workspace) -> None:
    """--yes skips the question on a terminal, and with stdin not a terminal nothing is asked."""
    workspace.write_manifest("version: 1\nsecrets:\n  - {name: s, kind: hmac}\n  - {name: t, kind: hmac}\n")
    workspace.cli("run")
    workspace.cli("rotate", "--now", "s", "t")
    code, out, err = _on_pty(workspace, ["rollback", "--yes", "s"], None)
    assert code == 0, err
    assert "[y/N]" not in err
    assert "s: rolled_back" in out
    piped = subprocess.run(workspace.command("rollback", "t"), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, cwd=workspace.root, env=workspace.env, timeout=60, check=False)
    workspace.outputs += [piped.stdout, piped.stderr]
    assert piped.returncode == 0, piped.stderr
    assert "[y/N]" not in piped.stderr


def test_revoke_previous_asks_and_dry_run_does_not(workspace: Workspace) -> None:
    """`rotate --revoke-previous` asks on a terminal (declining keeps the old value); --dry-run never asks."""
    workspace.write_manifest("version: 1\nsecrets:\n  - {name: s, kind: hmac, consumers: [gw]}\n")
    workspace.cli("run")

    def versions() -> list[tuple[str, str]]:
        status = workspace.cli("status", "s", "-o", "json").json()
        return [(v["id"], v["state"]) for v in status["secrets"][0]["versions"]]

    before = versions()
    code, _, err = _on_pty(workspace, ["rotate", "--revoke-previous", "s"], b"\n")  # Enter: the default, no
    assert code == 1
    assert "Revoke the previous value of s now?" in err
    assert versions() == before
    code, out, err = _on_pty(workspace, ["rotate", "--revoke-previous", "--dry-run", "-o", "json", "s"], None)
    assert code == 0, err
    assert "[y/N]" not in err
    assert json.loads(out)["results"][0]["action"].startswith("would ")
