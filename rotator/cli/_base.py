"""What every rotator command shares: per-process state, the command classes, common options, confirmation.

The command classes give every option an environment variable ``ROTATOR_<OPTION>`` (shown in ``--help``),
keep command summaries whole in ``-h``, and suggest the closest command for a typo.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from rotator._output import FORMATS, SETTINGS
from rotator.errors import ManifestError, UsageError

if TYPE_CHECKING:
    from rotator.app import Runtime
    from rotator.manifest import Manifest

__all__ = ["RotatorCommand", "RotatorGroup", "State", "confirm", "output_option", "parse_selector", "pass_state",
           "selector_option", "yes_option"]

F = TypeVar("F", bound=Callable[..., Any])
# An environment variable must never turn an ordinary rotation into an incident: type it each time.
NO_ENVVAR = frozenset({"help", "version", "revoke_previous"})


class State:
    """Global options of one invocation and the manifest they point at."""

    def __init__(self, manifest: str | None, source: str, log_format: str) -> None:
        self.manifest_arg, self.source, self.log_format = manifest, source, log_format

    def manifest_path(self) -> Path:
        """The manifest file; a missing one is a usage error that says where it looked and why there."""
        from rotator.manifest import resolve_manifest_path

        path = resolve_manifest_path(self.manifest_arg)
        if not path.exists():
            why = {"commandline": "from -f", "environment": "from ROTATOR_MANIFEST"}.get(
                self.source, "the default; -f and ROTATOR_MANIFEST are unset")
            raise ManifestError(f"manifest not found: {path.resolve()} ({why})",
                                hint="pass -f PATH or set ROTATOR_MANIFEST")
        return path

    def manifest(self) -> Manifest:
        from rotator.manifest import load_manifest

        return load_manifest(self.manifest_path())

    def runtime(self, actor_kind: str = "cli", **kwargs: Any) -> Runtime:
        from rotator.app import build_runtime, default_actor

        return build_runtime(self.manifest_path(), actor=default_actor(actor_kind), **kwargs)


pass_state = click.make_pass_decorator(State)


def _add_envvars(command: click.Command) -> None:
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar is None and param.name not in NO_ENVVAR:
            long = next((o for o in param.opts if o.startswith("--")), f"--{param.name}")
            param.envvar = "ROTATOR_" + long[2:].upper().replace("-", "_")
            param.show_envvar = True


class RotatorCommand(click.Command):
    """A command whose options read ``ROTATOR_<OPTION>`` and whose summary ``-h`` never truncates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_envvars(self)

    def get_short_help_str(self, limit: int = 45) -> str:
        return super().get_short_help_str(limit=300)


class RotatorGroup(click.Group):
    """A group of :class:`RotatorCommand` that answers a mistyped command with the closest one."""

    command_class = RotatorCommand
    group_class = type  # subgroups (audit, notify) are RotatorGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_envvars(self)

    def get_short_help_str(self, limit: int = 45) -> str:
        return super().get_short_help_str(limit=300)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                           list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and not ctx.resilient_parsing and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.6)
            suggestion = f" (did you mean '{close[0]}'?)" if close else ""
            raise click.UsageError(f"unknown command '{name}'{suggestion}", ctx)
        return super().resolve_command(ctx, args)




def _no_headers(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    SETTINGS.no_headers = SETTINGS.no_headers or value


def output_option(f: F) -> F:
    """``-o table|json|yaml`` and ``--no-headers``."""
    f = click.option("--no-headers", is_flag=True, expose_value=False, callback=_no_headers,
                     help="Tables without their title and header row (for scripts).")(f)
    return click.option("-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output format; json and yaml carry the same fields.")(f)


def yes_option(f: F) -> F:
    return click.option("-y", "--yes", is_flag=True,
                        help="Do not ask for confirmation (never asked when stdin is not a terminal).")(f)


def selector_option(f: F) -> F:
    from rotator.cli._complete import complete_selector

    return click.option("-l", "--selector", multiple=True, metavar="KEY=VALUE", shell_complete=complete_selector,
                        help="Secrets whose labels match (repeat to require several).")(f)


def parse_selector(pairs: Sequence[str]) -> dict[str, str]:
    """``("team=payments", ...)`` -> ``{"team": "payments"}``; a malformed pair is a usage error."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--selector wants KEY=VALUE, got '{pair}'")
        out[key] = value
    return out


def confirm(question: str, yes: bool) -> None:
    """Ask ``question [y/N]`` on a terminal unless ``--yes``; without a terminal on stdin, go ahead.

    A "no" (or Ctrl-D) ends the command with exit 1 and changes nothing.
    """
    if yes or not sys.stdin.isatty():
        return
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.Abort:
        agreed = False
    if not agreed:
        click.echo("rotator: cancelled; nothing changed", err=True)
        sys.exit(1)
