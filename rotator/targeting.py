"""How keyset transitions act on a target: the one place that maps Create/Stage/Promote/Retire/Rollback/
Discard onto a target's five primitives (see :mod:`rotator.target`), per strategy.

The order of each step is chosen so that a crash between the target call and the store write is safe
(docs/architecture.md, "Targets"):

========== ==================================================== =========================================
step       target first                                         then the store
========== ==================================================== =========================================
create     prepare, enable (or issue), login                    Create (current)
stage      (issue: before the store; else after the store)       Stage (pending); then enable, login
resume     enable again (idempotent), login                     Promote
promote    revoke only: disable every older accepted value      Promote
retire     disable the previous credential                      Retire
rollback   enable the value restored                            Rollback; then disable the rolled-back one
discard    single: enable current again; else disable pending   Discard
========== ==================================================== =========================================

A credential is disabled only when no credential that stays accepted uses the same identity, unless the
strategy is ``dual`` (where a disable removes exactly one of two credentials): on ``single`` and
``alternating`` the newer credential already replaced the password of that identity.
"""

from __future__ import annotations

import string
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotator.errors import ManifestError, OperationFailed
from rotator.keyset import Keyset, KeyVersion, SecretValue
from rotator.target import AdminCredentials, Binding, Capability, Credential, Strategy, Target

__all__ = ["TargetSet", "TargetSpec", "credential_of", "render_url"]


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One ``targets.<name>`` entry, validated: the plugin class, its config, the admin and a URL template."""

    name: str
    cls: type[Target]
    config: Any
    admin_secret: str | None = None  # a managed secret holding {username, password}
    admin_given: Mapping[str, Any] | None = None  # or given directly (values from ${ENV})
    url: str | None = None


def credential_of(version: KeyVersion | None) -> Credential | None:
    """The credential document a stored version holds (None when the value is not at hand)."""
    if version is None or version.value is None:
        return None
    return Credential.from_value(version.value)


def render_url(template: str, credential: Mapping[str, Any]) -> str:
    """``postgresql://{username}:{password}@{host}:{port}/{database}`` with each field percent-escaped."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing = sorted(f for f in fields if f not in credential)
    if missing:
        raise OperationFailed(f"url template needs {', '.join(missing)}, which the credential does not have")
    return template.format(**{f: urllib.parse.quote(str(credential[f]), safe="") for f in fields})


class TargetSet:
    """The targets a manifest names, built on first use; ``admin_reader(secret)`` lists an admin secret's
    accepted values, best first (current, pending, previous)."""

    def __init__(self, specs: Mapping[str, TargetSpec], base_dir: Path,
                 admin_reader: Callable[[str], Sequence[SecretValue]]) -> None:
        self._specs = dict(specs)
        self._base_dir = base_dir
        self._admin_reader = admin_reader
        self._built: dict[str, Target] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._specs)

    def spec(self, name: str) -> TargetSpec:
        return self._specs[name]

    def get(self, name: str) -> Target:
        with self._lock:
            if name not in self._built:
                spec = self._specs[name]
                self._built[name] = spec.cls(name=name, config=spec.config, base_dir=self._base_dir,  # type: ignore[call-arg]
                                             admin=self._admin(spec))
            return self._built[name]

    def _admin(self, spec: TargetSpec) -> AdminCredentials:
        if spec.admin_given is not None:
            given = Credential(spec.admin_given)
            return lambda: (given,)
        secret = spec.admin_secret
        if secret is None:
            return lambda: ()
        return lambda: tuple(Credential.from_value(v) for v in self._admin_reader(secret))

    def close(self) -> None:
        with self._lock:
            for target in self._built.values():
                target.close()
            self._built.clear()

    # --- the steps -------------------------------------------------------------------------------------

    def document(self, binding: Binding, username: str, password: SecretValue | None,
                 issued: Credential | None = None) -> Credential:
        """The credential document to store: target fields, username/password (or what the target issued),
        and the rendered ``url`` when a template is configured."""
        target = self.get(binding.target)
        base: dict[str, Any] = {**target.fields(binding), "username": username}
        if issued is not None:
            base.update(issued)
        elif password is not None:
            base["password"] = password.reveal()
        template = binding.options.get("url") or self._specs[binding.target].url
        if template:
            base["url"] = render_url(str(template), base)
        return Credential(base)

    def issues(self, binding: Binding) -> bool:
        return Capability.ISSUES in self.get(binding.target).capabilities

    def next_username(self, binding: Binding, keyset: Keyset | None) -> str:
        """The identity a new value belongs to: for ``alternating`` the one the current value does not use."""
        current = credential_of(keyset.current) if keyset is not None else None
        if binding.strategy is not Strategy.ALTERNATING or current is None or not current.username:
            return binding.username
        return binding.other(current.username)

    def create(self, binding: Binding, credential: Credential) -> None:
        """Before the first value is stored: identities exist, the credential is set and logs in."""
        target = self.get(binding.target)
        target.prepare(binding)
        if not self.issues(binding):
            target.enable(binding, credential)
        target.login(binding, credential)

    def issue(self, binding: Binding, username: str, keyset: Keyset | None) -> Credential:
        """``ISSUES`` targets: a new credential from the target (stale leftovers beyond ``keep`` may go)."""
        target = self.get(binding.target)
        keep = [c for v in (keyset.accepted() if keyset else ()) if (c := credential_of(v)) is not None]
        target.prepare(binding)
        return target.issue(binding, username, keep)

    def activate(self, binding: Binding, credential: Credential) -> None:
        """Stage or resume: make the pending credential log in (idempotent), then prove it by a login."""
        target = self.get(binding.target)
        target.prepare(binding)
        if not self.issues(binding):
            target.enable(binding, credential)
        target.login(binding, credential)

    def restore(self, binding: Binding, credential: Credential) -> None:
        """Rollback: the value restored logs in again."""
        self.get(binding.target).enable(binding, credential)

    def disable(self, binding: Binding, gone: Iterable[KeyVersion], staying: Iterable[KeyVersion]) -> None:
        """Make ``gone`` credentials stop logging in, sparing identities a ``staying`` credential uses."""
        target = self.get(binding.target)
        in_use = {c.username for v in staying if (c := credential_of(v)) is not None}
        for version in gone:
            credential = credential_of(version)
            if credential is None:
                raise OperationFailed(f"{binding.secret}: the value of {version.id[:8]} is not at hand to "
                                      f"disable it on target {binding.target}")
            if binding.strategy is not Strategy.DUAL and credential.username in in_use:
                continue  # the newer credential replaced this identity's secret already
            target.disable(binding, credential)

    def discard(self, binding: Binding, keyset: Keyset, pending: KeyVersion) -> None:
        """A failed or stale attempt: undo what staging did on the target."""
        current = keyset.current
        if binding.strategy is Strategy.SINGLE:
            credential = credential_of(current)
            if credential is not None:
                self.get(binding.target).enable(binding, credential)  # staging replaced its password
            return
        self.disable(binding, [pending], [v for v in keyset.accepted() if v.id != pending.id])


def check_binding(spec: TargetSpec, binding: Binding, grace_seconds: float) -> None:
    """Manifest-time checks of one secret's binding (strategy declared by the target, single means grace 0)."""
    declared = {s for s in Strategy if Capability(s.value) in spec.cls.capabilities}
    if binding.strategy not in declared:
        offered = ", ".join(sorted(declared)) or "none"
        raise ManifestError(f"target '{spec.name}' ({spec.cls.type_name}) does not support strategy "
                            f"'{binding.strategy}' (it supports: {offered})")
    if binding.strategy is Strategy.SINGLE and grace_seconds > 0:
        raise ManifestError(
            "strategy 'single' changes the one password the identity has, so the previous value "
            "stops working at once and a grace period cannot be kept: set 'grace: 0s', or use 'alternating' "
            "(two identities) or 'dual' (two credentials on one identity) to keep the grace")
