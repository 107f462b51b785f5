"""The manifest's ``targets:`` section and each secret's ``target:`` binding, checked with file:line errors.

```yaml
targets:
  app-db:
    type: postgres                      # postgres | mysql | redis | aws_iam | command (installed plugins)
    host: 127.0.0.1
    admin: {secret: app-db/admin}       # a managed secret holding {username, password} ...
    # admin: {username: postgres, password: "${PGADMIN_PASSWORD}"}   # ... or given directly
    url: "postgresql://{username}:{password}@{host}:{port}/{database}"   # optional, rendered per value
secrets:
  - name: app-db/app
    kind: password
    target: {name: app-db, username: app, strategy: alternating}   # clone: app_clone by default
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rotator.errors import ManifestError
from rotator.target import Binding, Strategy, installed_targets, load_target_class
from rotator.targeting import TargetSpec, check_binding

__all__ = ["SecretTarget", "bind", "target_specs"]

Fail = Callable[[tuple[str | int, ...], str], ManifestError]
Invalid = Callable[[ValidationError, tuple[str | int, ...]], ManifestError]


class _AdminSecret(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
    secret: str


class _AdminGiven(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True)
    username: str


class SecretTarget(BaseModel):
    """A secret's ``target:`` block: which target, whose credential, and the strategy that keeps grace."""

    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True)

    name: str
    username: str = Field(min_length=1, max_length=63)
    strategy: Strategy = Strategy.SINGLE
    clone: str | None = Field(default=None, min_length=1, max_length=63)
    url: str | None = None


def target_specs(raw: Mapping[str, Mapping[str, Any]], secret_names: set[str], fail: Fail,
                 invalid: Invalid) -> dict[str, TargetSpec]:
    """Validate ``targets:``: a known plugin type, its config model, and where its admin credential comes from."""
    out: dict[str, TargetSpec] = {}
    for name, block in raw.items():
        loc: tuple[str | int, ...] = ("targets", name)
        if not isinstance(block, Mapping):
            raise fail(loc, "must be a mapping with 'type:'")
        type_name = block.get("type")
        if not isinstance(type_name, str):
            raise fail(loc, f"missing 'type' (one of: {', '.join(sorted(installed_targets())) or 'none installed'})")
        try:
            cls = load_target_class(type_name)
        except ManifestError as exc:
            raise fail((*loc, "type"), exc.message) from None
        admin = block.get("admin")
        admin_secret: str | None = None
        admin_given: dict[str, Any] | None = None
        if admin is not None:
            try:
                if isinstance(admin, Mapping) and "secret" in admin:
                    admin_secret = _AdminSecret.model_validate(admin).secret
                    if admin_secret not in secret_names:
                        raise fail((*loc, "admin", "secret"), f"no secret named '{admin_secret}' in this manifest")
                else:
                    admin_given = dict(_AdminGiven.model_validate(admin).model_dump())
            except ValidationError as exc:
                raise invalid(exc, (*loc, "admin")) from None
        url = block.get("url")
        if url is not None and not isinstance(url, str):
            raise fail((*loc, "url"), "must be a string template such as "
                                      "'postgresql://{username}:{password}@{host}:{port}/{database}'")
        config = {k: v for k, v in block.items() if k not in ("type", "admin", "url")}
        try:
            parsed = cls.config_model.model_validate(config)
        except ValidationError as exc:
            raise invalid(exc, loc) from None
        out[name] = TargetSpec(name, cls, parsed, admin_secret, admin_given, url)
    return out


def bind(secret: str, spec: SecretTarget, targets: Mapping[str, TargetSpec], grace_seconds: float,
         at: tuple[str | int, ...], fail: Fail) -> Binding:
    """The binding of one secret, checked against its target's declared strategies."""
    if spec.name not in targets:
        known = ", ".join(targets) or "none defined"
        raise fail((*at, "target", "name"), f"unknown target '{spec.name}' (targets: {known})")
    options = dict(spec.model_extra or {})
    model = getattr(targets[spec.name].cls, "binding_model", None)  # optional: a target's own binding keys
    if model is not None and options:
        try:
            model.model_validate(options)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            key = ".".join(str(p) for p in first["loc"]) or "target"
            why = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            known = ", ".join(sorted(model.model_fields)) or "none"
            raise fail((*at, "target", key), f"{why} for a {targets[spec.name].cls.type_name} target "
                                             f"(its binding keys: {known})") from None
    if spec.url is not None:
        options["url"] = spec.url
    binding = Binding(secret=secret, target=spec.name, username=spec.username, strategy=spec.strategy,
                      clone=spec.clone, options=options)
    try:
        check_binding(targets[spec.name], binding, grace_seconds)
    except ManifestError as exc:
        raise fail((*at, "target", "strategy"), exc.message) from None
    return binding
