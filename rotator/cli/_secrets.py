"""Commands that read or change secrets: plan, status, rotate, rollback, retire, run, history, jwks.

Bodies live in :mod:`rotator.commands`; this module is click wiring, help text and confirmation.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from rotator.cli._base import State, confirm, output_option, parse_selector, pass_state, selector_option, yes_option
from rotator.cli._complete import complete_secret
from rotator.cli._root import cli
from rotator.errors import UsageError

if TYPE_CHECKING:
    from rotator.manifest import Manifest, SecretPolicy

_NAMES = click.argument("names", nargs=-1, shell_complete=complete_secret)
_NAME = click.argument("name", shell_complete=complete_secret)


def _chosen(names: tuple[str, ...], labels: tuple[str, ...], manifest: Manifest) -> list[SecretPolicy]:
    """``NAME...`` and ``-l`` together narrow the choice; neither means every secret."""
    wanted = parse_selector(labels)
    policies = manifest.select(names) if names else manifest.select(everything=True, selector=wanted)
    if names and wanted:
        policies = [p for p in policies if all(p.spec.labels.get(k) == v for k, v in wanted.items())]
    if not policies and wanted:
        raise UsageError(f"no secret matches the selector {' '.join(labels)}")
    return policies


@cli.command(epilog="""\b
Examples:
  rotator plan
  rotator plan --at +30d -l team=payments
  rotator plan partner-api-key -o json""")
@_NAMES
@selector_option
@click.option("--at", "at", metavar="TIME", help="Plan as of TIME (ISO 8601, or +DURATION like +30d).")
@output_option
@pass_state
def plan(state: State, names: tuple[str, ...], selector: tuple[str, ...], at: str | None, output: str) -> None:
    """For each secret: state, last rotation, next due, and what a run would do now."""
    from rotator.commands import plan_rows

    rt = state.runtime(notify=False)
    try:
        plan_rows(rt, _parse_at(at, rt.engine.clock()), output, _chosen(names, selector, rt.manifest))
    finally:
        rt.close()


@cli.command(epilog="""\b
Examples:
  rotator status
  rotator status partner-api-key webhook-hmac
  rotator status -l team=payments -o yaml""")
@_NAMES
@selector_option
@output_option
@pass_state
def status(state: State, names: tuple[str, ...], selector: tuple[str, ...], output: str) -> None:
    """Keysets: versions, states, ages and grace left, and which consumers moved to the current value."""
    from rotator.commands import status_rows

    rt = state.runtime(notify=False)
    try:
        status_rows(rt, _chosen(names, selector, rt.manifest), output)
    finally:
        rt.close()


@cli.command(epilog="""\b
Examples:
  rotator rotate --all                    rotate every secret that is due
  rotator rotate --now webhook-hmac --reason "quarterly"
  rotator rotate --now -l team=payments
  rotator rotate --revoke-previous partner-api-key --reason INC-1234
                                          incident: old value stops now""")
@_NAMES
@click.option("--all", "everything", is_flag=True, help="Every secret in the manifest.")
@selector_option
@click.option("--now", is_flag=True, help="Rotate even if not due.")
@click.option("--reason", metavar="TEXT", help="Recorded in events and the audit log.")
@click.option("--revoke-previous", is_flag=True,
              help="Incident: the old value stops being accepted at once (implies --now; asks first on a "
                   "terminal; never read from the environment).")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Secrets rotated at the same time.")
@yes_option
@output_option
@pass_state
def rotate(state: State, names: tuple[str, ...], everything: bool, selector: tuple[str, ...], now: bool,
           reason: str | None, revoke_previous: bool, dry_run: bool, concurrency: int, yes: bool,
           output: str) -> None:
    """Rotate secrets (only those due, unless --now); a progress bar on a terminal."""
    from rotator.commands import run_and_report

    if not names and not everything and not selector:
        raise UsageError("name at least one secret, or use --all or --selector KEY=VALUE",
                         hint="see 'rotator rotate --help'")
    rt = state.runtime()
    try:
        policies = rt.manifest.select(names, everything=everything, selector=parse_selector(selector))
        if not policies:
            raise UsageError(f"no secret matches the selector {' '.join(selector)}")
        if revoke_previous and not dry_run:
            listed = ", ".join(p.name for p in policies[:5]) + (f" and {len(policies) - 5} more"
                                                                  if len(policies) > 5 else "")
            confirm(f"Revoke the previous value of {listed} now? Consumers still using it break", yes)
    except BaseException:
        rt.close()
        raise
    run_and_report(rt, policies, output, force=now or revoke_previous, reason=reason, progress=state.log_format,
                   revoke_previous=revoke_previous, dry_run=dry_run, concurrency=concurrency)


@cli.command(epilog="""Running it again once the previous value is current is a no-op (exit 0).

\b
Examples:
  rotator rollback partner-api-key --reason "clients broke"
  rotator rollback --yes jwt""")
@_NAME
@click.option("--reason", default="manual rollback", show_default=True, help="Recorded with the event.")
@yes_option
@output_option
@pass_state
def rollback(state: State, name: str, reason: str, yes: bool, output: str) -> None:
    """Make the previous value (or a retired one inside rollback_window) current again."""
    from rotator.commands import rollback_one

    rollback_one(state.runtime(), name, reason, output, lambda question: confirm(question, yes))


@cli.command(epilog="""With nothing in grace it is a no-op (exit 0), so retiring twice is safe.

\b
Examples:
  rotator retire partner-api-key
  rotator retire --yes webhook-hmac --reason "all consumers moved\"""")
@_NAME
@click.option("--reason", default="retired by operator", show_default=True, help="Recorded with the event.")
@yes_option
@output_option
@pass_state
def retire(state: State, name: str, reason: str, yes: bool, output: str) -> None:
    """End the grace period now: the previous value stops being accepted."""
    from rotator.commands import retire_one

    retire_one(state.runtime(), name, reason, output, lambda question: confirm(question, yes))


@cli.command("mark-rotated", epilog="""\b
Examples:
  rotator mark-rotated partner-cert --reason "renewed by the vendor portal" --fingerprint 4f:2a:9c""")
@_NAME
@click.option("--reason", required=True, metavar="TEXT", help="Who rotated it and how; recorded in the audit log.")
@click.option("--fingerprint", metavar="ID", help="A non-secret id of the new value (key id, serial); never the value.")
@click.option("--at", "at", metavar="TIME", help="When it was rotated (ISO 8601; default now), to backfill a record.")
@output_option
@pass_state
def mark_rotated(state: State, name: str, reason: str, fingerprint: str | None, at: str | None, output: str) -> None:
    """Record that a kind: manual secret was rotated by hand (rotator never holds its value)."""
    from rotator.commands import single
    from rotator.manual import mark_rotated as record

    rt = state.runtime()
    single(rt, lambda: record(rt.engine, rt.manifest.secret(name), reason=reason, fingerprint=fingerprint,
                              at=_parse_at(at, rt.engine.clock()) if at else None), output)


@cli.command(epilog="""\b
Examples:
  rotator run                 what a CronJob runs every few minutes
  rotator run --dry-run -o json""")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Secrets handled at the same time.")
@output_option
@pass_state
def run(state: State, dry_run: bool, concurrency: int, output: str) -> None:
    """One reconcile pass (the CronJob entry point): resume, notices, due rotations, retirements."""
    from rotator.commands import run_and_report

    rt = state.runtime("cronjob")
    run_and_report(rt, list(rt.manifest.secrets.values()), output, dry_run=dry_run, concurrency=concurrency,
                   progress=state.log_format)


@cli.command(epilog="""\b
Examples:
  rotator history partner-api-key
  rotator history -l team=payments -o json""")
@_NAMES
@selector_option
@output_option
@pass_state
def history(state: State, names: tuple[str, ...], selector: tuple[str, ...], output: str) -> None:
    """Rotations, rollbacks and retirements of secrets, from the audit log (times in UTC)."""
    from rotator.commands import history_rows

    manifest = state.manifest()
    chosen = [p.name for p in _chosen(names, selector, manifest)]
    history_rows(manifest.audit_path, chosen, output, single=len(names) == 1 and not selector)


@cli.command(epilog="""\b
Examples:
  rotator jwks jwt > jwks.json""")
@_NAME
@pass_state
def jwks(state: State, name: str) -> None:
    """Print the JWKS (RFC 7517) of an ed25519/rsa secret: current, previous and pending public keys."""
    from rotator.jwks import print_jwks

    print_jwks(state.runtime(notify=False), name)


def _parse_at(text: str | None, now: datetime) -> datetime:
    from datetime import UTC

    from rotator.schedule import parse_duration

    if not text:
        return now
    try:
        if text.startswith("+"):
            return now + parse_duration(text[1:])
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at wants an ISO time or +DURATION (like +30d), got '{text}'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
