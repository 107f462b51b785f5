"""The file sink: formats, atomic replace with mode and owner kept, reload by SIGHUP to a real process
that counts its reloads, reload by command, and a failed reload finished by the next delivery."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.keyset import SecretValue
from rotator.sinks.base import Content, SinkError
from rotator.sinks.file import FileSink, FileSinkConfig

CURRENT, PREVIOUS = "cur-Value-0123456789", "prev-Value-0123456789"
NASTY = 'p@ss "quoted" $HOME `cmd` back\\slash \'single\'\nsecond line'

# A consumer that reloads its env file on SIGHUP and records each reload (a digest, never the value).
CONSUMER = textwrap.dedent("""
    import hashlib, os, signal, sys, time
    env_file, pidfile, log = sys.argv[1:4]
    def reload(*_):
        digest = hashlib.sha256(open(env_file, "rb").read()).hexdigest()
        with open(log, "a") as out:
            out.write(digest + "\\n")
    signal.signal(signal.SIGHUP, reload)
    tmp = pidfile + ".tmp"
    open(tmp, "w").write(str(os.getpid()))
    os.replace(tmp, pidfile)
    while True:
        time.sleep(0.05)
""")


def content(current: str = CURRENT, previous: str | None = None, key: str = "API_KEY") -> Content:
    """Desired content for one secret: ``key`` and, in grace, ``<key>_PREVIOUS``."""
    values = {key: SecretValue(current)}
    versions = {key: "v1"}
    if previous is not None:
        values[f"{key}_PREVIOUS"] = SecretValue(previous)
        versions[f"{key}_PREVIOUS"] = "v0"
    return Content(values, versions, ("s",), frozenset({key, f"{key}_PREVIOUS"}))


def sink(tmp_path: Path, **fields: object) -> FileSink:
    """A file sink writing ``app.env`` in ``tmp_path`` unless told otherwise."""
    config = FileSinkConfig.model_validate({"type": "file", "path": "app.env", "key": "API_KEY", **fields})
    return FileSink(config=config, base_dir=tmp_path)


@pytest.fixture
def consumer(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A running consumer process: (pidfile, reload log); killed at teardown."""
    (tmp_path / "app.env").write_text("")
    pidfile, log = tmp_path / "app.pid", tmp_path / "reloads.txt"
    proc = subprocess.Popen([sys.executable, "-c", CONSUMER, str(tmp_path / "app.env"), str(pidfile), str(log)])
    for _ in range(400):
        if pidfile.exists():
            break
        time.sleep(0.025)
    yield pidfile, log
    proc.kill()
    proc.wait()


def reloads(log: Path, expected: int) -> list[str]:
    """The digests the consumer recorded, waiting (bounded) until ``expected`` reloads arrived."""
    for _ in range(400):
        lines = log.read_text().split() if log.exists() else []
        if len(lines) >= expected:
            return lines
        time.sleep(0.025)
    return log.read_text().split() if log.exists() else []


def test_env_values_survive_a_posix_shell(tmp_path: Path) -> None:
    """Values with quotes, $, backticks, backslashes and newlines read back exactly through `sh`."""
    sink(tmp_path).deliver(content(NASTY, PREVIOUS))
    script = f'. "{tmp_path / "app.env"}"; printf "%s|%s" "$API_KEY" "$API_KEY_PREVIOUS"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == NASTY.replace("\n", "\\n") + "|" + PREVIOUS  # newline stays escaped in sh (dotenv expands it)


def test_json_raw_and_template_formats(tmp_path: Path) -> None:
    """json holds both keys; raw only the current value; a template gets ${KEY} and ${KEY_PREVIOUS}."""
    sink(tmp_path, path="app.json", format="json").deliver(content(CURRENT, PREVIOUS))
    assert json.loads((tmp_path / "app.json").read_text()) == {"API_KEY": CURRENT, "API_KEY_PREVIOUS": PREVIOUS}
    sink(tmp_path, path="key.txt", format="raw").deliver(content(CURRENT, PREVIOUS))
    assert (tmp_path / "key.txt").read_bytes() == CURRENT.encode()
    (tmp_path / "conf.tmpl").write_text("auth:\n  key: ${API_KEY}\n  old: '${API_KEY_PREVIOUS}'\n")
    templated = sink(tmp_path, path="conf.yaml", format="template", template="conf.tmpl")
    templated.deliver(content(CURRENT))
    assert (tmp_path / "conf.yaml").read_text() == f"auth:\n  key: {CURRENT}\n  old: ''\n"


def test_template_naming_an_unknown_key_fails_clearly(tmp_path: Path) -> None:
    """A placeholder that is not delivered is an error naming it, and nothing is written."""
    (tmp_path / "conf.tmpl").write_text("${DB_PASSWORD}")
    with pytest.raises(SinkError, match=r"names \$\{DB_PASSWORD\}") as caught:
        sink(tmp_path, path="conf.yaml", format="template", template="conf.tmpl").deliver(content())
    assert not caught.value.transient
    assert not (tmp_path / "conf.yaml").exists()


def test_mode_from_config_and_owner_kept(tmp_path: Path) -> None:
    """A new file gets the configured mode (default 0600); a rewrite keeps the file's owner."""
    target = sink(tmp_path)
    target.deliver(content())
    assert (tmp_path / "app.env").stat().st_mode & 0o777 == 0o600
    sink(tmp_path, mode="0640").deliver(content("another-value-12345"))
    assert (tmp_path / "app.env").stat().st_mode & 0o777 == 0o640
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    os.chown(tmp_path / "app.env", 4321, 4322)
    sink(tmp_path, mode="0640").deliver(content("third-value-123456"))
    info = (tmp_path / "app.env").stat()
    assert (info.st_uid, info.st_gid) == (4321, 4322)


def test_same_content_is_not_rewritten(tmp_path: Path) -> None:
    """Idempotent: the second delivery of the same content leaves the inode alone; a mode drift is fixed."""
    sink(tmp_path).deliver(content())
    inode = (tmp_path / "app.env").stat().st_ino
    os.chmod(tmp_path / "app.env", 0o644)
    delivery = sink(tmp_path).deliver(content())
    assert not delivery.changed
    assert (tmp_path / "app.env").stat().st_ino == inode
    assert (tmp_path / "app.env").stat().st_mode & 0o777 == 0o600


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """While the file is replaced 200 times, a concurrent reader only ever sees complete versions."""
    big = ["x" * 50_000 + str(i) for i in range(200)]
    complete = {f"API_KEY={v}\n".encode() for v in big}
    sink(tmp_path).deliver(content(big[0]))
    seen: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append((tmp_path / "app.env").read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for value in big[1:]:
            sink(tmp_path).deliver(content(value))
    finally:
        done.set()
        reader.join()
    assert seen
    assert all(data in complete for data in seen)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_sighup_reload_counts_once_per_change(tmp_path: Path, consumer: tuple[Path, Path]) -> None:
    """A real process reloads exactly once per changed content, and reads the new file when it does."""
    pidfile, log = consumer
    target = sink(tmp_path, reload={"signal": "HUP", "pidfile": str(pidfile)})
    first = target.deliver(content())
    assert first.reloaded == ("SIGHUP to the pid in app.pid",)
    assert target.deliver(content()).changed is False  # same content: no write, no signal
    target.deliver(content("rotated-value-0123456", CURRENT))
    digests = reloads(log, 2)
    assert len(digests) == 2
    assert digests[-1] == hashlib.sha256((tmp_path / "app.env").read_bytes()).hexdigest()
    assert not (tmp_path / ".app.env.reload-pending").exists()


def test_failed_reload_is_repeated_by_the_next_delivery(tmp_path: Path, consumer: tuple[Path, Path]) -> None:
    """The pidfile is missing when the file changes: SinkError, marker kept; next delivery reloads."""
    pidfile, log = consumer
    real = pidfile.read_text()
    pidfile.unlink()
    target = sink(tmp_path, reload={"signal": "HUP", "pidfile": str(pidfile)})
    with pytest.raises(SinkError, match=r"pidfile .* does not exist") as caught:
        target.deliver(content())
    assert caught.value.transient
    assert (tmp_path / ".app.env.reload-pending").exists()
    pidfile.write_text(real)
    again = target.deliver(content())
    assert (again.wrote, again.reloaded) == (False, ("SIGHUP to the pid in app.pid",))
    assert len(reloads(log, 1)) == 1


def test_stopped_consumer_is_a_note_not_a_failure(tmp_path: Path) -> None:
    """A pid that is not running will read the new file when it starts: a note, no error."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / "app.pid").write_text(str(proc.pid))
    delivery = sink(tmp_path, reload={"signal": "HUP", "pidfile": "app.pid"}).deliver(content())
    assert delivery.wrote
    assert delivery.reloaded == ()
    assert "is not running" in delivery.skipped[0]


def test_reload_command_gets_no_value_and_its_failure_is_reported(tmp_path: Path) -> None:
    """The command runs with ROTATOR_SINK_PATH and no value; a non-zero exit is a SinkError."""
    script = tmp_path / "reload.sh"
    script.write_text('#!/bin/sh\necho "$ROTATOR_SINK_PATH" >> "$(dirname "$0")/calls.txt"\nexit "${RC:-0}"\n')
    script.chmod(0o755)
    delivery = sink(tmp_path, reload={"command": ["./reload.sh"]}).deliver(content())
    assert delivery.reloaded == ("command ./reload.sh",)
    assert (tmp_path / "calls.txt").read_text() == f"{tmp_path / 'app.env'}\n"
    failing = sink(tmp_path, reload={"command": ["sh", "-c", "exit 3"]})
    with pytest.raises(SinkError, match="exited with status 3"):
        failing.deliver(content("changed-value-1234567"))


def test_config_errors() -> None:
    """Bad modes, env keys that are not variable names and templates without a file are refused."""
    for fields, message in [({"mode": "0999"}, "mode"), ({"key": "API-KEY"}, "environment variable"),
                            ({"format": "template"}, "needs 'template"), ({"template": "x"}, "only used")]:
        with pytest.raises(ValueError, match=message):
            FileSinkConfig.model_validate({"type": "file", "path": "a", "key": "API_KEY", **fields})


def test_signal_constants_are_real() -> None:
    """Every signal name the config accepts exists on this platform."""
    from typing import get_args

    from rotator.sinks.file import SignalReload

    for name in get_args(SignalReload.model_fields["signal"].annotation):
        assert isinstance(getattr(signal, f"SIG{name}"), signal.Signals)
