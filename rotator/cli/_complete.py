"""Shell completion: ``rotator completion bash|zsh|fish`` and the dynamic completers it calls back.

Completers read the manifest as plain YAML (no validation, no providers): completing must be fast and
must keep working while the manifest is half edited. Any problem simply completes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

__all__ = ["SHELLS", "complete_notifier", "complete_secret", "complete_selector", "completion_script"]

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_ROTATOR_COMPLETE"


def _raw_manifest(ctx: click.Context) -> dict[str, Any]:
    root = ctx.find_root()
    path = root.params.get("manifest") or os.environ.get("ROTATOR_MANIFEST") or "rotation.yaml"
    try:
        import yaml

        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except Exception:  # unreadable or half-edited manifest: complete nothing, never fail
        return {}
    return data if isinstance(data, dict) else {}


def _secrets(ctx: click.Context) -> list[dict[str, Any]]:
    secrets = _raw_manifest(ctx).get("secrets")
    return [s for s in secrets if isinstance(s, dict)] if isinstance(secrets, list) else []


def complete_secret(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Secret names from the manifest, minus those already on the command line."""
    taken = set(ctx.params.get(param.name or "", None) or ())
    items = []
    for spec in _secrets(ctx):
        name = spec.get("name")
        if isinstance(name, str) and name.startswith(incomplete) and name not in taken:
            items.append(CompletionItem(name, help=str(spec.get("description") or spec.get("kind") or "")))
    return items


def complete_notifier(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Notifier names from the manifest's ``notifiers:``."""
    notifiers = _raw_manifest(ctx).get("notifiers")
    names = list(notifiers) if isinstance(notifiers, dict) else []
    return [CompletionItem(str(n)) for n in names if str(n).startswith(incomplete)]


def complete_selector(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``KEY=VALUE`` pairs from the labels in use (every pair, so bash needs no ``nospace`` support)."""
    pairs: set[tuple[str, str]] = set()
    for spec in _secrets(ctx):
        labels = spec.get("labels")
        if isinstance(labels, dict):
            pairs.update((str(k), str(v)) for k, v in labels.items())
    return [CompletionItem(f"{k}={v}") for k, v in sorted(pairs) if f"{k}={v}".startswith(incomplete)]


def completion_script(cli: click.Command, shell: str) -> str:
    """The script that makes ``shell`` complete ``rotator`` (click calls back into rotator for values)."""
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - SHELLS lists what click supports
        raise click.BadParameter(f"unsupported shell '{shell}'")
    return cls(cli, {}, "rotator", COMPLETE_VAR).source()
