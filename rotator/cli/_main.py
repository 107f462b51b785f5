"""The entry point: the one place that turns any error into ``rotator: error: ...`` and an exit code.

Click's own usage errors get the same shape as rotator's (one line, an optional ``  hint:`` line, exit 2)
instead of click's four-line ``Usage: ... Try ... Error: ...`` block.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Sequence

import click

from rotator.cli._complete import COMPLETE_VAR
from rotator.cli._root import cli
from rotator.errors import ExitCode, RotatorError

__all__ = ["click_error", "main"]

_CHOICE = re.compile(r"^'(?P<value>.*)' is not (?:one of )?(?P<choices>'.*')\.?$", re.DOTALL)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI, turning errors into one line on stderr and a contract exit code."""
    args = list(argv if argv is not None else sys.argv[1:])
    verbose = any(re.fullmatch(r"-v+|--verbose", a) for a in args) or \
        os.environ.get("ROTATOR_VERBOSE", "").strip() not in ("", "0")
    try:
        code = cli.main(args=args, prog_name="rotator", standalone_mode=False, complete_var=COMPLETE_VAR)
    except click.exceptions.NoArgsIsHelpError as exc:  # `rotator`, `rotator audit`: the help, not an error
        click.echo(exc.ctx.get_help() if exc.ctx else cli.get_help(click.Context(cli)))
        sys.exit(0)
    except click.exceptions.Abort:
        click.echo("rotator: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        message, hint = click_error(exc)
        _fail(message, hint, ExitCode.USAGE if isinstance(exc, click.UsageError) else exc.exit_code, False)
    except RotatorError as exc:
        _fail(exc.message, exc.hint, exc.exit_code, verbose)
    except KeyboardInterrupt:
        click.echo("rotator: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, traceback with -v
        _fail(f"internal error: {type(exc).__name__}: {exc}", "run again with -v and report it", 1, verbose)
    sys.exit(code if isinstance(code, int) else 0)


def click_error(exc: click.ClickException) -> tuple[str, str | None]:
    """Click's error as ``(message, hint)``: ``rotate: no such option: --nwo (did you mean --now?)``."""
    ctx = getattr(exc, "ctx", None)
    where = ""
    hint = None
    if ctx is not None:
        path = ctx.command_path.removeprefix("rotator").strip()
        where = f"{path}: " if path else ""
        hint = f"see '{ctx.command_path} --help'"
    if isinstance(exc, click.NoSuchOption):
        message = f"no such option: {exc.option_name}"
        if exc.possibilities:
            message += f" (did you mean {' or '.join(sorted(exc.possibilities))}?)"
        if ctx is not None and ctx.parent is not None and _is_global(exc.option_name):
            hint = (f"{exc.option_name} is a global option: put it before the command, as in "
                    f"'rotator {exc.option_name} {ctx.command_path.removeprefix('rotator').strip()}'")
    elif isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter):
        message = _bad_parameter(exc, ctx)
    else:
        message = exc.format_message()
    return where + _sentence(message), hint


def _is_global(option: str) -> bool:
    name = option.split("=", 1)[0]
    return any(name in param.opts or name in param.secondary_opts for param in cli.params) or \
        bool(re.fullmatch(r"-v+", name))


def _bad_parameter(exc: click.BadParameter, ctx: click.Context | None) -> str:
    if exc.param_hint is not None:
        names = exc.param_hint if isinstance(exc.param_hint, str) else " / ".join(exc.param_hint)
    elif exc.param is not None:  # "-o/--output", without click's "(env var: ...)"
        names = "/".join(exc.param.opts) if isinstance(exc.param, click.Option) else str(exc.param.human_readable_name)
    else:
        return f"invalid value: {_sentence(exc.message)}"
    names = names.replace("'", "").replace('"', "").replace(" / ", "/")
    text = _sentence(exc.message)
    match = _CHOICE.match(text)
    if match:
        choices = re.findall(r"'([^']*)'", match["choices"])
        close = difflib.get_close_matches(match["value"], choices, n=1, cutoff=0.6)
        text = f"'{match['value']}' is not one of {', '.join(choices)}"
        if close:
            text += f" (did you mean '{close[0]}'?)"
    return f"{names}: {text}"


def _sentence(text: str) -> str:
    """Click's ``Missing argument 'NAME'.`` style -> ``missing argument 'NAME'``."""
    text = text.strip().rstrip(".")
    if text[:1].isupper() and not text[1:2].isupper():
        text = text[0].lower() + text[1:]
    return " ".join(text.split())


def _fail(message: str, hint: str | None, code: int, verbose: bool) -> None:
    from rotator.logs import redact_text

    if verbose:
        import traceback

        sys.stderr.write(redact_text(traceback.format_exc()))
    click.echo(f"rotator: error: {redact_text(message)}", err=True)
    if hint:
        click.echo(f"  hint: {redact_text(hint)}", err=True)
    sys.exit(code)
