"""The ``file`` sink: an env, JSON, raw or templated file, replaced atomically, then the consumer reloaded.

The file is rendered from the desired content and compared byte for byte with what is on disk; only a
difference writes (atomically, see :mod:`rotator.sinks._atomic`) and only a write reloads. The reload is
remembered in a marker file beside the target (``.<name>.reload-pending``) from before the rename until the
reload succeeded, so a reload that failed (or a crash between the two) is repeated by the next pass even
though the content then already matches.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import string
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from rotator.schedule import parse_duration
from rotator.sinks._atomic import atomic_replace, fsync_directory
from rotator.sinks.base import Content, Delivery, SinkConfig, SinkError

__all__ = ["CommandReload", "FileSink", "FileSinkConfig", "SignalReload", "render"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE = re.compile(r"[A-Za-z0-9_./+=:@,%^-]*")
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SignalReload(_Strict):
    """Send ``signal`` to the pid written in ``pidfile`` (a process that is not running is not an error)."""

    signal: Literal["HUP", "USR1", "USR2", "TERM", "INT", "QUIT"]
    pidfile: str


class CommandReload(_Strict):
    """Run ``command`` (argv, no shell, minimal environment, output discarded); exit 0 means reloaded."""

    command: list[str] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=30)


class FileSinkConfig(SinkConfig):
    """``{type: file, path, format: env|json|raw|template, key, mode: "0600", reload: ...}``."""

    type: Literal["file"]
    path: str = Field(min_length=1)
    format: Literal["env", "json", "raw", "template"] = "env"
    template: str | None = None
    mode: str = Field(default="0600", pattern=r"^0?[0-7]{3}$")
    reload: SignalReload | CommandReload | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FileSinkConfig:
        if self.format == "template" and not self.template:
            raise ValueError("format: template needs 'template: PATH' (a file with ${KEY} placeholders)")
        if self.template and self.format != "template":
            raise ValueError("'template' is only used with format: template")
        if self.format == "env" and not all(_ENV_NAME.fullmatch(k) for k in (self.key, self.previous_name)):
            raise ValueError("format: env needs keys that are environment variable names ([A-Za-z_][A-Za-z0-9_]*)")
        return self

    @property
    def mode_bits(self) -> int:
        return int(self.mode, 8)


def render(config: FileSinkConfig, content: Content, base_dir: Path) -> bytes:
    """The bytes the file must hold for ``content``."""
    values = {k: v.reveal() for k, v in content.values.items()}
    if config.format == "raw":
        if config.key not in values:
            raise SinkError(f"file:{config.path}: no value for key {config.key}", transient=False)
        return values[config.key].encode()
    if config.format == "json":
        return (json.dumps(values, indent=2) + "\n").encode()
    if config.format == "env":
        return "".join(f"{k}={_env_quote(v)}\n" for k, v in values.items()).encode()
    return _render_template(config, values, base_dir)


def _env_quote(value: str) -> str:
    """Bare when safe; else double quotes with ``\\ " $ ` newline`` escaped (dotenv / systemd / sh style)."""
    if _BARE.fullmatch(value):
        return value
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
               .replace("\n", "\\n"))
    return f'"{escaped}"'


def _render_template(config: FileSinkConfig, values: dict[str, str], base_dir: Path) -> bytes:
    assert config.template is not None
    path = _resolve(base_dir, config.template)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SinkError(f"file:{config.path}: cannot read template {path}: {exc.strerror or exc}",
                        transient=False) from None
    names = dict.fromkeys((config.key, config.previous_name), "") | values  # outside grace: previous is ""
    try:
        return string.Template(text).substitute(names).encode()
    except KeyError as exc:
        raise SinkError(f"file:{config.path}: template {path.name} names ${{{exc.args[0]}}}, which is not "
                        f"delivered here (keys: {', '.join(names)})", transient=False) from None
    except ValueError as exc:
        raise SinkError(f"file:{config.path}: template {path.name}: {exc}", transient=False) from None


class FileSink:
    """Deliver to one file on the local filesystem."""

    type_name: ClassVar[str] = "file"
    config_model: ClassVar[type[SinkConfig]] = FileSinkConfig

    def __init__(self, *, config: SinkConfig, base_dir: Path) -> None:
        assert isinstance(config, FileSinkConfig)
        self.config = config
        self.base_dir = base_dir
        self.path = _resolve(base_dir, config.path)
        self.marker = self.path.with_name(f".{self.path.name}.reload-pending")

    @property
    def target(self) -> str:
        return f"file:{self.path}"

    def deliver(self, content: Content) -> Delivery:
        desired = render(self.config, content, self.base_dir)
        try:
            wrote = self._write_if_changed(desired)
        except OSError as exc:
            raise SinkError(f"{self.target}: cannot write: {exc.strerror or exc}",
                            transient=not isinstance(exc, PermissionError)) from None
        reload = self.config.reload
        if reload is None or not (wrote or self.marker.exists()):
            return Delivery(self.target, wrote)
        note = self._reload(reload)
        try:
            self.marker.unlink(missing_ok=True)
            fsync_directory(self.path.parent)
        except OSError as exc:  # the reload happened; a leftover marker only repeats it next pass
            raise SinkError(f"{self.target}: reloaded, but cannot remove {self.marker.name}: {exc.strerror}",
                            transient=False) from None
        if note:
            return Delivery(self.target, wrote, skipped=(note,))
        return Delivery(self.target, wrote, reloaded=(_describe(reload),))

    def close(self) -> None:
        return None

    def _write_if_changed(self, desired: bytes) -> bool:
        mode = self.config.mode_bits
        try:
            with self.path.open("rb") as handle:
                held, info = handle.read(), os.fstat(handle.fileno())
        except FileNotFoundError:
            held, info = None, None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise SinkError(f"{self.target}: exists and is not a regular file", transient=False)
        if held == desired and info is not None:
            if stat.S_IMODE(info.st_mode) != mode:
                os.chmod(self.path, mode)  # same content: fix the mode, no reload
            return False
        if self.config.reload is not None:
            self.marker.write_text(content_marker(), encoding="utf-8")  # before the rename: see module doc
        owner = (info.st_uid, info.st_gid) if info is not None else None
        atomic_replace(self.path, desired, mode=mode, owner=owner)
        return True

    def _reload(self, reload: SignalReload | CommandReload) -> str | None:
        """Reload the consumer; a note (no exception) when there is nothing running to reload."""
        if isinstance(reload, SignalReload):
            return _signal(self.target, self._pidfile(reload), reload.signal)
        _command(self.target, reload, self.path, self.base_dir)
        return None

    def _pidfile(self, reload: SignalReload) -> Path:
        return _resolve(self.base_dir, reload.pidfile)


def content_marker() -> str:
    return "reload pending: the file was replaced and its consumer has not been told yet\n"


def _signal(target: str, pidfile: Path, name: str) -> str | None:
    try:
        text = pidfile.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise SinkError(f"{target}: reload: pidfile {pidfile} does not exist",
                        hint="is the consumer running? check reload.pidfile") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SinkError(f"{target}: reload: cannot read pidfile {pidfile}: {exc}", transient=False) from None
    if not text.isdigit() or int(text) <= 1:
        raise SinkError(f"{target}: reload: pidfile {pidfile} does not hold a process id", transient=False)
    try:
        os.kill(int(text), getattr(signal, f"SIG{name}"))
    except ProcessLookupError:
        return f"pid {text} from {pidfile.name} is not running; it reads the new file when it starts"
    except PermissionError:
        raise SinkError(f"{target}: reload: not allowed to signal pid {text}", transient=False,
                        hint="run rotator as the consumer's user, or use reload: {command: [...]}") from None
    return None


def _command(target: str, reload: CommandReload, path: Path, base_dir: Path) -> None:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env["ROTATOR_SINK_PATH"] = str(path)
    program = reload.command[0]
    if not os.path.isabs(program) and "/" in program:
        program = str((base_dir / program).resolve())
    try:
        done = subprocess.run([program, *reload.command[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env, cwd=base_dir,
                              timeout=reload.timeout.total_seconds(), check=False)
    except subprocess.TimeoutExpired:
        raise SinkError(f"{target}: reload command {reload.command[0]} timed out") from None
    except OSError as exc:
        raise SinkError(f"{target}: reload command {reload.command[0]} could not start: {exc.strerror or exc}",
                        transient=False) from None
    if done.returncode != 0:
        raise SinkError(f"{target}: reload command {reload.command[0]} exited with status {done.returncode}")


def _describe(reload: SignalReload | CommandReload) -> str:
    if isinstance(reload, SignalReload):
        return f"SIG{reload.signal} to the pid in {Path(reload.pidfile).name}"
    return f"command {reload.command[0]}"


def _resolve(base_dir: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base_dir / candidate

