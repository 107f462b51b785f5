"""Commands around the secrets: validate, daemon, audit, report, schema, notify, completion."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from rotator._output import SETTINGS
from rotator.cli._base import State, output_option, pass_state
from rotator.cli._complete import SHELLS, complete_notifier, completion_script
from rotator.cli._root import cli
from rotator.errors import UsageError

if TYPE_CHECKING:
    from datetime import timedelta


@cli.command(epilog="""\b
Examples:
  rotator validate
  ROTATOR_MANIFEST=deploy/rotation.yaml rotator validate""")
@pass_state
def validate(state: State) -> None:
    """Check the manifest and that every provider and notifier is configured (exit 2 if not)."""
    manifest = state.manifest()
    providers = manifest.build_providers()
    for name in providers.names():
        providers.get(name)  # construct each provider: config errors surface now, no network yet
    if not SETTINGS.quiet:
        click.echo(f"{manifest.path.name}: OK: {len(manifest.secrets)} secrets, providers: "
                   f"{', '.join(providers.names())}, notifiers: {', '.join(manifest.model.notifiers) or 'none'}")


@cli.command(epilog="""Logs every event at info level (the daemon's logs are its output); -q keeps errors only.

\b
Examples:
  rotator --log-format json daemon --listen 0.0.0.0
  ROTATOR_RECONCILE_EVERY=1m rotator daemon""")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=9102, show_default=True,
              help="Port for /metrics, /healthz, /readyz and the JWKS endpoints.")
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address for /metrics and probes.")
@click.option("--reconcile-every", default="5m", show_default=True, metavar="DURATION",
              help="Full reconcile (and manifest re-read) interval.")
@click.option("--circuit-cooldown", default="60s", show_default=True, metavar="DURATION",
              help="How long a provider's circuit stays open after 5 consecutive failures.")
@click.option("--shutdown-timeout", default="90s", show_default=True, metavar="DURATION",
              help="After SIGTERM, how long in-flight steps may take before the process leaves anyway.")
@pass_state
def daemon(state: State, metrics_port: int, listen: str, reconcile_every: str, circuit_cooldown: str,
           shutdown_timeout: str) -> None:
    """Run continuously: scheduled rotations, notices, retirements; /metrics, /healthz, /readyz."""
    from rotator import circuit
    from rotator.daemon import Daemon

    every = _duration("--reconcile-every", reconcile_every)
    cooldown = _duration("--circuit-cooldown", circuit_cooldown)
    grace = _duration("--shutdown-timeout", shutdown_timeout)
    circuit.DEFAULTS["cooldown"] = cooldown.total_seconds()
    state.manifest_path()  # a missing manifest fails now, saying where it looked
    code = Daemon(state.manifest_arg, listen=listen, port=metrics_port, reconcile_every=every,
                  shutdown_timeout=grace).run()
    sys.exit(int(code))


def _duration(option: str, text: str) -> timedelta:
    from rotator.schedule import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option} '{text}': {exc}") from None


@cli.group()
def audit() -> None:
    """The keyed (HMAC) hash-chained audit log."""


@audit.command("verify", epilog="""\b
Examples:
  rotator audit verify
  rotator audit verify --expect-head 1042:9f2c...   # a weekly job that remembers the last head
  rotator audit verify /var/lib/rotator/audit.jsonl""")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--expect-head", metavar="SEQ:HASH",
              help="A head an earlier verify printed: the log must still contain it (detects a cut-off end).")
@click.option("--allow-unkeyed", is_flag=True, help="Accept a log with no keyed record (archived pre-key logs).")
@output_option
@pass_state
def audit_verify(state: State, paths: tuple[str, ...], expect_head: str | None, allow_unkeyed: bool,
                 output: str) -> None:
    """Check the chain, its HMACs, the checkpoint and the backend anchor; print the head SEQ:HASH.

    PATH defaults to the manifest's log; a folder means every *.jsonl in it. Exit 1 with one line per
    broken log naming the first bad line or the missing tail; 4 if the key backend cannot be read.
    """
    from rotator.audit_commands import verify_command

    sys.exit(verify_command(state, paths, expect_head, allow_unkeyed, output))


@audit.command("rotate-key")
@pass_state
def audit_rotate_key(state: State) -> None:
    """Make a new audit key the signing key; older keys are kept so old records still verify."""
    from rotator.audit_commands import rotate_key

    rotate_key(state)


@cli.command(epilog="""Exit 1 when a secret is overdue or the audit chain does not verify, 4 when a backend
cannot be read.

\b
Examples:
  rotator report --since 90d --format html --out evidence.html
  rotator report --since 2026-07-01 --format json""")
@click.option("--since", default="90d", show_default=True, metavar="DURATION|DATE",
              help="Period for activity: a duration back from now (90d) or an ISO date.")
@click.option("--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True)
@click.option("--out", metavar="FILE", help="Write the report to FILE instead of stdout.")
@pass_state
def report(state: State, since: str, fmt: str, out: str | None) -> None:
    """Compliance evidence: policy, age and status of every secret, activity, audit-chain check."""
    from rotator.report import run_report

    rt = state.runtime(notify=False)
    try:
        code = run_report(rt, since=since, fmt=fmt, out=out)
    finally:
        rt.close()
    sys.exit(code)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the manifest (for editors and CI linters)."""
    import json

    from rotator.manifest import manifest_json_schema

    click.echo(json.dumps(manifest_json_schema(), indent=2, sort_keys=True))


@cli.group()
def notify() -> None:
    """Notifiers."""


@notify.command("test")
@click.argument("notifier", shell_complete=complete_notifier)
@pass_state
def notify_test(state: State, notifier: str) -> None:
    """Send a test message through NOTIFIER to check its configuration."""
    from rotator.commands import send_test

    send_test(state.runtime(), notifier)


@cli.command(epilog="""Completes commands, options, secret names, notifier names and -l label pairs, read from the
manifest that -f or ROTATOR_MANIFEST names (else ./rotation.yaml).

\b
Setup:
  bash  echo 'source <(rotator completion bash)' >> ~/.bashrc
  zsh   echo 'source <(rotator completion zsh)' >> ~/.zshrc
  fish  rotator completion fish > ~/.config/fish/completions/rotator.fish""")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish."""
    click.echo(completion_script(cli, shell))
