"""The ``rotator`` command line (DESIGN.md section 4).

Heavy modules (pydantic, cryptography, providers, apscheduler) are imported inside the commands so that
``rotator --help`` stays fast. One place, :func:`main`, maps exceptions to exit codes and one-line errors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from rotator.errors import ExitCode, RotatorError, UsageError

if TYPE_CHECKING:
    from rotator.app import Runtime
    from rotator.engine import Outcome
    from rotator.manifest import Manifest

OUTPUT = click.Choice(["table", "json"])


class _State:
    def __init__(self, manifest: str | None, log_format: str | None, verbose: int) -> None:
        self.manifest_arg, self.log_format, self.verbose = manifest, log_format, verbose

    def manifest(self) -> Manifest:
        from rotator.manifest import load_manifest, resolve_manifest_path

        return load_manifest(resolve_manifest_path(self.manifest_arg))

    def runtime(self, actor_kind: str = "cli", **kwargs: Any) -> Runtime:
        from rotator.app import build_runtime, default_actor
        from rotator.manifest import resolve_manifest_path

        return build_runtime(resolve_manifest_path(self.manifest_arg), actor=default_actor(actor_kind),
                             **kwargs)


pass_state = click.make_pass_decorator(_State)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-f", "--manifest", envvar="ROTATOR_MANIFEST", metavar="PATH",
              help="Rotation manifest (default ./rotation.yaml, env ROTATOR_MANIFEST).")
@click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
              help="Log format on stderr (default: console on a TTY, json otherwise).")
@click.option("-v", "--verbose", count=True, help="More logging; tracebacks on errors.")
@click.version_option(package_name="rotator")
@click.pass_context
def cli(ctx: click.Context, manifest: str | None, log_format: str | None, verbose: int) -> None:
    """Rotate API keys, HMAC secrets and signing keys with a dual-key grace period."""
    ctx.obj = _State(manifest, log_format, verbose)
    if ctx.invoked_subcommand not in (None, "schema", "validate"):  # those two log nothing: start faster
        from rotator.logs import configure_logging

        configure_logging(log_format, verbose, cache=True)  # type: ignore[arg-type]


@cli.command()
@pass_state
def validate(state: _State) -> None:
    """Check the manifest and that every provider and notifier is configured (exit 2 if not)."""
    manifest = state.manifest()
    providers = manifest.build_providers()
    for name in providers.names():
        providers.get(name)  # construct each provider: config errors surface now, no network yet
    click.echo(f"{manifest.path.name}: OK: {len(manifest.secrets)} secrets, providers: "
               f"{', '.join(providers.names())}, notifiers: {', '.join(manifest.model.notifiers) or 'none'}")


@cli.command()
@click.option("--at", "at", metavar="TIME", help="Plan as of TIME (ISO 8601, or +DURATION like +30d).")
@click.option("-o", "--output", type=OUTPUT, default="table")
@pass_state
def plan(state: _State, at: str | None, output: str) -> None:
    """For each secret: state, last rotation, next due, and what a run would do now."""
    from rotator.commands import plan_rows

    rt = state.runtime(notify=False)
    try:
        moment = _parse_at(at, rt.engine.clock())
        plan_rows(rt, moment, output)
    finally:
        rt.close()


@cli.command()
@click.argument("names", nargs=-1)
@click.option("-o", "--output", type=OUTPUT, default="table")
@pass_state
def status(state: _State, names: tuple[str, ...], output: str) -> None:
    """Keysets: versions, states, ages and grace left."""
    from rotator.commands import status_rows

    rt = state.runtime(notify=False)
    try:
        status_rows(rt, rt.manifest.select(names, everything=not names), output)
    finally:
        rt.close()


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every secret in the manifest.")
@click.option("--selector", "-l", multiple=True, metavar="KEY=VALUE", help="Secrets whose labels match.")
@click.option("--now", is_flag=True, help="Rotate even if not due.")
@click.option("--reason", metavar="TEXT", help="Recorded in events and the audit log.")
@click.option("--revoke-previous", is_flag=True,
              help="Incident: the old value stops being accepted at once (implies --now).")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("-o", "--output", type=OUTPUT, default="table")
@pass_state
def rotate(state: _State, names: tuple[str, ...], everything: bool, selector: tuple[str, ...], now: bool,
           reason: str | None, revoke_previous: bool, dry_run: bool, concurrency: int, output: str) -> None:
    """Rotate secrets (only those due, unless --now)."""
    from rotator.commands import run_and_report

    if not names and not everything and not selector:
        raise UsageError("name at least one secret, or use --all or --selector KEY=VALUE")
    rt = state.runtime()
    policies = rt.manifest.select(names, everything=everything, selector=_selector(selector))
    if not policies:
        raise UsageError(f"no secret matches the selector {' '.join(selector)}")
    run_and_report(rt, policies, output, force=now or revoke_previous, reason=reason,
                   revoke_previous=revoke_previous, dry_run=dry_run, concurrency=concurrency)


@cli.command()
@click.argument("name")
@click.option("--reason", default="manual rollback", show_default=True, help="Recorded with the event.")
@pass_state
def rollback(state: _State, name: str, reason: str) -> None:
    """Make the previous value current again."""
    from rotator.commands import single

    rt = state.runtime()
    single(rt, lambda: rt.engine.rollback(rt.manifest.secret(name), reason))


@cli.command()
@click.argument("name")
@click.option("--reason", default="retired by operator", show_default=True)
@pass_state
def retire(state: _State, name: str, reason: str) -> None:
    """End the grace period now: the previous value stops being accepted."""
    from rotator.commands import single

    rt = state.runtime()
    single(rt, lambda: rt.engine.retire_now(rt.manifest.secret(name), reason))


@cli.command("mark-rotated")
@click.argument("name")
@click.option("--reason", required=True, metavar="TEXT", help="Who rotated it and how; recorded in the audit log.")
@click.option("--fingerprint", metavar="ID", help="A non-secret id of the new value (key id, serial); never the value.")
@click.option("--at", "at", metavar="TIME", help="When it was rotated (ISO 8601; default now), to backfill a record.")
@pass_state
def mark_rotated(state: _State, name: str, reason: str, fingerprint: str | None, at: str | None) -> None:
    """Record that a kind: manual secret was rotated by hand (rotator never holds its value)."""
    from rotator.commands import single
    from rotator.manual import mark_rotated as record

    rt = state.runtime()
    single(rt, lambda: record(rt.engine, rt.manifest.secret(name), reason=reason, fingerprint=fingerprint,
                              at=_parse_at(at, rt.engine.clock()) if at else None))


@cli.command()
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("-o", "--output", type=OUTPUT, default="table")
@pass_state
def run(state: _State, dry_run: bool, concurrency: int, output: str) -> None:
    """One reconcile pass (the CronJob entry point): resume, notices, due rotations, retirements."""
    from rotator.commands import run_and_report

    rt = state.runtime("cronjob")
    run_and_report(rt, list(rt.manifest.secrets.values()), output, dry_run=dry_run, concurrency=concurrency)


@cli.command()
@click.option("--metrics-port", type=int, default=9102, show_default=True)
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address for /metrics and probes.")
@click.option("--reconcile-every", default="5m", show_default=True, metavar="DURATION")
@click.option("--circuit-cooldown", default="60s", show_default=True, metavar="DURATION",
              help="How long a provider's circuit stays open after 5 consecutive failures.")
@click.option("--shutdown-timeout", default="90s", show_default=True, metavar="DURATION",
              help="After SIGTERM, how long in-flight steps may take before the process leaves anyway.")
@pass_state
def daemon(state: _State, metrics_port: int, listen: str, reconcile_every: str, circuit_cooldown: str,
           shutdown_timeout: str) -> None:
    """Run continuously: scheduled rotations, notices, retirements; /metrics, /healthz, /readyz."""
    from rotator import circuit
    from rotator.daemon import Daemon
    from rotator.schedule import parse_duration

    try:
        every = parse_duration(reconcile_every)
        circuit.DEFAULTS["cooldown"] = parse_duration(circuit_cooldown).total_seconds()
        grace = parse_duration(shutdown_timeout)
    except ValueError as exc:
        raise UsageError(f"--reconcile-every/--circuit-cooldown/--shutdown-timeout: {exc}") from None
    code = Daemon(state.manifest_arg, listen=listen, port=metrics_port, reconcile_every=every,
                  shutdown_timeout=grace).run()
    sys.exit(int(code))


@cli.command()
@click.argument("name")
@click.option("-o", "--output", type=OUTPUT, default="table")
@pass_state
def history(state: _State, name: str, output: str) -> None:
    """Rotations, rollbacks and retirements of one secret, from the audit log."""
    from rotator.commands import history_rows

    manifest = state.manifest()
    manifest.secret(name)
    history_rows(manifest.audit_path, name, output)


@cli.command()
@click.argument("name")
@pass_state
def jwks(state: _State, name: str) -> None:
    """Print the JWKS (RFC 7517) of an ed25519/rsa secret: current, previous and pending public keys."""
    from rotator.jwks import print_jwks

    print_jwks(state.runtime(notify=False), name)


@cli.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.argument("path", required=False)
@pass_state
def audit_verify(state: _State, path: str | None) -> None:
    """Check the hash chain; exit 1 naming the first broken line."""
    from rotator.commands import verify_audit

    sys.exit(verify_audit(state, path))


@cli.command()
@click.option("--since", default="90d", show_default=True, metavar="DURATION|DATE",
              help="Period for activity: a duration back from now (90d) or an ISO date.")
@click.option("--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True)
@click.option("--out", metavar="FILE", help="Write the report to FILE instead of stdout.")
@pass_state
def report(state: _State, since: str, fmt: str, out: str | None) -> None:
    """Compliance evidence: policy, age and status of every secret, activity, audit-chain check.

    Exit 1 when a secret is overdue or the audit chain does not verify, 4 when a backend cannot be read.
    """
    from rotator.report import run_report

    rt = state.runtime(notify=False)
    try:
        code = run_report(rt, since=since, fmt=fmt, out=out)
    finally:
        rt.close()
    sys.exit(code)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the manifest."""
    import json

    from rotator.manifest import manifest_json_schema

    click.echo(json.dumps(manifest_json_schema(), indent=2, sort_keys=True))


@cli.group()
def notify() -> None:
    """Notifiers."""


@notify.command("test")
@click.argument("notifier")
@pass_state
def notify_test(state: _State, notifier: str) -> None:
    """Send a test message through NOTIFIER to check its configuration."""
    from rotator.commands import send_test

    send_test(state.runtime(), notifier)


def _selector(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--selector wants KEY=VALUE, got '{pair}'")
        out[key] = value
    return out


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


def report_outcomes_exit(outcomes: Sequence[Outcome]) -> ExitCode:
    from rotator.engine import exit_code_for

    return exit_code_for(outcomes)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI, turning errors into one line on stderr and a contract exit code."""
    verbose = any(a in ("-v", "-vv", "--verbose") for a in (argv if argv is not None else sys.argv[1:]))
    try:
        cli.main(args=argv, prog_name="rotator", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("rotator: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE if exc.exit_code == 2 else exc.exit_code)
    except RotatorError as exc:
        _fail(exc.message, exc.hint, exc.exit_code, verbose)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, traceback with -v
        _fail(f"internal error: {type(exc).__name__}: {exc}", "run again with -v and report it", 1, verbose)


def _fail(message: str, hint: str | None, code: int, verbose: bool) -> None:
    from rotator.logs import redact_text

    if verbose:
        import traceback

        sys.stderr.write(redact_text(traceback.format_exc()))
    click.echo(f"rotator: error: {redact_text(message)}", err=True)
    if hint:
        click.echo(f"  hint: {redact_text(hint)}", err=True)
    sys.exit(code)
