"""``rotator audit verify`` and ``rotator audit rotate-key``: the logic behind the CLI's audit group."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click

from rotator.errors import ExitCode, RotatorError, UsageError

__all__ = ["parse_head", "rotate_key", "verify_command"]

_HEAD = re.compile(r"^(\d{1,18}):([0-9a-f]{64})$")


def parse_head(text: str | None) -> tuple[int, str] | None:
    """``SEQ:HASH`` (as ``audit verify`` prints it) as a tuple; a usage error when malformed."""
    if text is None:
        return None
    match = _HEAD.match(text.strip())
    if match is None or int(match.group(1)) < 1:
        raise UsageError(f"--expect-head '{text[:80]}': expected SEQ:HASH, e.g. 42:<64 hex digits> "
                         "(the head `rotator audit verify` printed)")
    return int(match.group(1)), match.group(2)


def _targets(paths: tuple[str, ...], manifest: Any) -> list[Path]:
    """The logs to verify: each PATH (a folder means every ``*.jsonl`` in it), else the manifest's log."""
    if not paths:
        return [manifest.audit_path if manifest is not None
                else Path(os.environ.get("ROTATOR_AUDIT_LOG") or ".rotator/audit.jsonl")]
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            logs = sorted(path.glob("*.jsonl"))
            if not logs:
                raise UsageError(f"{path}: no audit log (*.jsonl) in this folder")
            found += logs
        else:
            found.append(path)
    return found


def verify_command(state: Any, paths: tuple[str, ...], expect_head: str | None, allow_unkeyed: bool,
                   output: str) -> int:
    """Verify each log; 0 and its head ``SEQ:HASH`` on success, 1 and one line per broken log otherwise.

    With a manifest the audit keys and the backend anchors are read from its key provider (exit 4 if that
    backend cannot be read); without one (bare PATHs) only unkeyed logs can verify.
    """
    from rotator.audit_key import audit_keys_for
    from rotator.audit_verify import verify

    head = parse_head(expect_head)
    try:
        manifest = state.manifest()
    except RotatorError:
        if not paths and state.manifest_arg is not None:
            raise
        manifest = None
    targets = _targets(paths, manifest)
    if head is not None and len(targets) != 1:
        raise UsageError(f"--expect-head names the head of one log; {len(targets)} logs given")
    for target in targets:
        if not target.exists():
            raise UsageError(f"{target}: no audit log here")
    keys: dict[str, bytes] | None = None
    anchors: dict[str, Any] = {}
    superseded: dict[str, Any] = {}
    if manifest is not None:
        providers = manifest.build_providers()
        try:
            audit_keys = audit_keys_for(manifest, providers)
            anchors = audit_keys.anchors()
            keys, superseded = audit_keys.known(), audit_keys.superseded()
        finally:
            providers.close()
    results = [(target, verify(target, keys or None, anchors=anchors, expect_head=head, superseded=superseded,
                               require_keyed=bool(keys) and not allow_unkeyed)) for target in targets]
    if output == "json":
        from rotator._output import emit_json

        emit_json({"ok": all(r.ok for _, r in results), "logs": [
            {"log": str(t), "ok": r.ok, "records": r.records, "keyed": r.keyed,
             "head": f"{r.seq}:{r.head}" if r.head else None, "checked": list(r.checked), "error": r.error}
            for t, r in results]})
    for target, result in results:
        if not result.ok:
            click.echo(f"audit chain broken: {result.error}", err=True)
        elif output != "json":
            checked = ", ".join(result.checked) or "chain only"
            kind = "keyed" if result.keyed else "UNKEYED (SHA-256 only)"
            click.echo(f"{target}: OK: {result.records} records, {kind}, checked {checked}; "
                       f"head {result.seq}:{result.head}")
    return int(ExitCode.OK if all(r.ok for _, r in results) else ExitCode.FAILED)


def rotate_key(state: Any) -> None:
    """Add a new audit key, make it the signing key and record the rotation (signed with the new key)."""
    from rotator.events import Event, EventType, new_correlation_id

    rt = state.runtime(notify=False)
    try:
        keys = rt.audit.keys
        assert keys is not None  # a runtime always has audit keys
        before = list(keys.known())
        if not before:
            raise UsageError(f"no audit key at {keys.where} yet: the first audit record creates it (`rotator run`)")
        kid = keys.rotate()
        rt.bus.emit(Event(type=EventType.AUDIT_KEY_ROTATED, secret=keys.ref.path, provider=keys.where.split(":")[0],
                          at=rt.engine.clock(), actor=rt.engine.actor, correlation_id=new_correlation_id(),
                          reason="audit key rotated",
                          details={"new_kid": kid, "previous_kid": before[-1] if before else None}))
    finally:
        rt.close()
    click.echo(f"audit key rotated: new records are signed with '{kid}' ({len(before) + 1} keys kept at "
               f"{keys.where}; old ones stay for verification)")
