"""The ``rotator`` group: global options, how logs are set up, and the help epilog every user reads first."""

from __future__ import annotations

import logging

import click

from rotator._output import SETTINGS
from rotator.cli._base import RotatorGroup, State

__all__ = ["EXIT_CODES", "cli"]

EXIT_CODES = """\b
Exit codes:
  0  ok (also: nothing to do)
  1  an operation failed (each secret's line says why), or a prompt declined
  2  usage or manifest error
  3  conflict: another actor changed the secret and it could not be resolved
  4  a backend is unreachable or refuses the credentials, or the local store
     cannot be decrypted"""

ENVIRONMENT = """\b
Environment:
  ROTATOR_<OPTION>    any option, e.g. ROTATOR_MANIFEST, ROTATOR_OUTPUT=yaml,
                      ROTATOR_LOG_FORMAT=json (see each option's [env var])
  ROTATOR_ACTOR       who acts, in events and the audit log (default cli:USER;
                      cronjob for run, daemon for the daemon), e.g. INC-1234
  ROTATOR_AUDIT_LOG   the audit log file (overrides the manifest's audit.path)
  ROTATOR_MASTER_KEY  key of the local store (default: the key file beside it)
  NO_COLOR            any value: no colors (--color always still colors)"""

EXAMPLES = """\b
Examples:
  rotator validate                    check ./rotation.yaml
  rotator plan -l team=payments       what a run would do now
  rotator rotate --all                rotate what is due
  rotator rotate --now --revoke-previous KEY --reason INC-1234
  rotator status -o yaml KEY
  source <(rotator completion bash)   complete commands and secret names"""

_QUIET_COMMANDS = (None, "schema", "validate", "completion")  # these log nothing: start faster


@click.group(cls=RotatorGroup, epilog=f"{EXAMPLES}\n\n{EXIT_CODES}\n\n{ENVIRONMENT}",
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-f", "--manifest", metavar="PATH", type=click.Path(dir_okay=False),
              help="Rotation manifest (default ./rotation.yaml).")
@click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
              help="Logs on stderr: console on a terminal, json otherwise (json logs every event).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Colors in logs and tables; auto: on a terminal unless NO_COLOR is set.")
@click.option("-v", "--verbose", count=True, help="Info logs (-v) and tracebacks on errors; debug logs with -vv.")
@click.option("-q", "--quiet", is_flag=True, help="Only failures and errors: no ok lines, no progress, no warnings.")
@click.version_option(package_name="rotator")
@click.pass_context
def cli(ctx: click.Context, manifest: str | None, log_format: str | None, color: str, verbose: int,
        quiet: bool) -> None:
    """Rotate API keys, HMAC secrets and signing keys with a dual-key grace period.

    Results go to stdout, one line per secret; logs, progress and errors go to stderr.
    """
    SETTINGS.color, SETTINGS.quiet = color, quiet  # type: ignore[assignment]  # click.Choice checked it
    source = ctx.get_parameter_source("manifest")
    state = State(manifest, source.name.lower() if source else "default", log_format or "")
    ctx.obj = state
    if ctx.invoked_subcommand not in _QUIET_COMMANDS:
        from rotator._output import colors_wanted
        from rotator.logs import configure_logging

        level = _level(log_format, verbose, quiet, daemon=ctx.invoked_subcommand == "daemon")
        state.log_format = configure_logging(log_format, verbose, cache=True, level=level,  # type: ignore[arg-type]
                                             colors=colors_wanted(), compact=not verbose)


def _level(log_format: str | None, verbose: int, quiet: bool, *, daemon: bool) -> int:
    """On a console only warnings and errors unless -v; json (for machines) and the daemon log events too."""
    import sys

    from rotator._output import is_tty

    if quiet:
        return logging.ERROR
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1 or daemon or (log_format or ("console" if is_tty(sys.stderr) else "json")) == "json":
        return logging.INFO
    return logging.WARNING
