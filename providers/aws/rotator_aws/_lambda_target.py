"""The rotation Lambda's database steps: ``setSecret`` and ``testSecret`` through a rotator target.

An RDS-style secret (``{"engine", "host", "port", "dbname" | "database", "username", "password"}``, as AWS's
templates use) rotates at the database when it carries these tags:

==========================  =====================================================================================
``rotator:target``          the target type (``postgres`` or ``mysql``: an installed ``rotator.targets`` entry point)
``rotator:strategy``        ``single`` (default) or ``alternating`` (``app`` / ``app_clone`` in a group role)
``rotator:username``        alternating: the primary identity (default: the current user name without ``_clone``)
``rotator:admin-secret``    name or ARN of a secret whose AWSCURRENT is ``{username, password}`` of an admin (AWS's
                            ``masterarn``); without it a ``single`` rotation logs in as the user itself
==========================  =====================================================================================

createSecret keeps every field of the current document and changes ``password`` (and, for alternating, the
``username`` to the identity not in use); setSecret runs the target's ``prepare`` and ``enable``; testSecret
logs in with the pending document. The same target code runs in ``rotator`` itself, so both rotate alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rotator.errors import ManifestError
from rotator.keyset import SecretValue
from rotator.target import Binding, Credential, Strategy, Target, load_target_class

__all__ = ["DatabaseRotation", "database_rotation"]

_CONFIG_FIELDS = {"host": "host", "port": "port", "dbname": "database", "database": "database"}


class DatabaseRotation:
    """One secret's target, binding and admin, built from its tags and current document."""

    def __init__(self, arn: str, tags: Mapping[str, str], current: Credential,
                 read_secret: Callable[[str, str], str | None]) -> None:
        self.arn, self.current = arn, current
        type_name = tags["rotator:target"]
        try:
            strategy = Strategy(tags.get("rotator:strategy", "single"))
        except ValueError:
            raise ManifestError(f"rotation Lambda: secret {arn}: tag rotator:strategy must be single or "
                                "alternating") from None
        if strategy is Strategy.DUAL:
            raise ManifestError(f"rotation Lambda: secret {arn}: strategy dual is not supported here; "
                                "use alternating")
        primary = tags.get("rotator:username") or current.username.removesuffix("_clone")
        self.binding = Binding(secret=arn, target=type_name, username=primary, strategy=strategy)
        cls = load_target_class(type_name)
        config = {field: current[key] for key, field in _CONFIG_FIELDS.items() if key in current}
        admin_ref = tags.get("rotator:admin-secret")

        def admins() -> list[Credential]:
            if admin_ref is None:  # single-user rotation: the user changes its own password
                found = [read_secret(arn, stage) for stage in ("AWSCURRENT", "AWSPENDING")]
            else:
                found = [read_secret(admin_ref, stage) for stage in ("AWSCURRENT", "AWSPENDING", "AWSPREVIOUS")]
            return [Credential.from_value(SecretValue(text)) for text in found if text]

        self.target: Target = cls(name=f"lambda:{arn.rsplit(':', 1)[-1]}",  # type: ignore[call-arg]
                                  config=cls.config_model.model_validate(config), base_dir=Path("."), admin=admins)

    def pending_document(self, password: SecretValue) -> SecretValue:
        """The next document: the current one with a new password (and, alternating, the other identity)."""
        user = self.binding.other(self.current.username) if self.binding.strategy is Strategy.ALTERNATING \
            else self.current.username
        return self.current.with_fields(username=user, password=password.reveal()).to_value()

    def set(self, pending: SecretValue) -> None:
        """setSecret: make the pending credential true at the database (idempotent)."""
        try:
            self.target.prepare(self.binding)
            self.target.enable(self.binding, Credential.from_value(pending))
        finally:
            self.target.close()

    def test(self, pending: SecretValue) -> str:
        """testSecret: log in with the pending credential; returns its password for the kind check."""
        credential = Credential.from_value(pending)
        try:
            self.target.login(self.binding, credential)
        finally:
            self.target.close()
        return credential.secret


def database_rotation(arn: str, tags: Mapping[str, str], current_text: str | None,
                      read_secret: Callable[[str, str], str | None]) -> DatabaseRotation | None:
    """The database rotation of a secret tagged ``rotator:target``, else None (a plain value rotation)."""
    if "rotator:target" not in tags:
        return None
    try:
        doc: Any = json.loads(current_text or "")
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or "username" not in doc:
        raise ManifestError(f"rotation Lambda: secret {arn} is tagged rotator:target but its current value is "
                            "not a JSON document with a username (the RDS secret shape)")
    return DatabaseRotation(arn, tags, Credential(doc), read_secret)
