"""The rotation manifest (``rotation.yaml``): pydantic models, loading with ``file:line:col`` errors, and the
per-secret policy the engine works from (defaults applied, provider resolved)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, WithJsonSchema

from rotator import _schedule_checks as _checks
from rotator._manifest_errors import dotted, from_validation, where
from rotator._manifest_targets import SecretTarget, bind, target_specs
from rotator._yaml import Positions, load_yaml, without_env_values
from rotator.errors import ManifestError, UsageError
from rotator.generators import GeneratorParams, check_params
from rotator.keyset import SecretValue
from rotator.notify.config import NotifierConfig
from rotator.provider import Provider, ProviderSet, SecretRef, installed_providers, load_provider_class
from rotator.schedule import DURATION_HELP, Schedule, check_cron, format_duration, parse_duration
from rotator.sinks.base import SinkSpec
from rotator.target import Binding
from rotator.targeting import TargetSet, TargetSpec

__all__ = ["Manifest", "ManifestModel", "SecretPolicy", "SecretSpec", "load_manifest", "manifest_json_schema"]

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+(\.\d+)?[wdhms])+$", "description": DURATION_HELP}),
]
Kind = Literal["api_key", "hmac", "password", "ed25519", "rsa", "fernet", "manual"]
CharClass = Literal["lower", "upper", "digit", "symbol"]
RetireMode = Literal["at_grace_end", "when_acknowledged"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/@+-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class HookSpec(_Strict):
    """A command that receives the new value on stdin; exit 0 means good."""

    command: list[str] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=30)


class PostCheckSpec(_Strict):
    """A command run after promotion (value on stdin); failing it can roll back (``auto_rollback``)."""

    command: list[str] = Field(min_length=1)
    within: Duration = timedelta(minutes=5)


class FreezeSpec(_Strict):
    """No scheduled rotation starts inside this window: each ``cron`` fire time for ``duration``, or from
    ``start`` (inclusive) to ``end`` (exclusive); times without an offset are wall-clock times in ``tz``."""

    cron: str | None = None
    duration: Duration | None = None
    start: str | None = None
    end: str | None = None
    tz: str | None = None  # default: the tz of the level (defaults or secret) the window is written at
    reason: str | None = Field(default=None, max_length=200)


class _Policy(_Strict):
    provider: str | None = None
    every: Duration | None = None
    cron: str | None = None
    window: Duration | None = None
    grace: Duration | None = None
    notice: Duration | list[Duration] | None = None
    notify: list[str] | None = None
    stale_pending_after: Duration | None = None
    rollback_window: Duration | None = None
    retire: RetireMode | None = None  # default at_grace_end; when_acknowledged needs `consumers`
    keep_previous: int | None = Field(default=None, ge=1, le=10)  # previous values in grace at once (default 3)
    tz: str | None = None  # IANA zone the cron (and freeze windows) run in; default UTC
    jitter: Duration | None = None  # spread due times by a fixed per-secret offset in [0, jitter)
    freeze: list[FreezeSpec] | None = None  # a secret's list replaces the defaults' list


class Defaults(_Policy):
    """Policy every secret inherits unless it says otherwise."""

    provider: str | None = "local"
    every: Duration | None = timedelta(days=90)
    grace: Duration | None = timedelta(days=7)
    notice: Duration | list[Duration] | None = timedelta(days=14)
    notify: list[str] | None = []
    stale_pending_after: Duration | None = timedelta(hours=1)
    rollback_window: Duration | None = timedelta(hours=24)


class SecretSpec(_Policy):
    """One managed secret as written in the manifest."""

    name: str = Field(pattern=NAME_PATTERN, max_length=200)
    kind: Kind
    path: str | None = None
    description: str | None = None
    enabled: bool = True
    # generator parameters (see rotator.generators.GeneratorParams)
    bytes: int | None = None
    encoding: Literal["base64", "base64url", "hex"] = "base64"
    prefix: str = ""
    length: int | None = None
    require: list[CharClass] | None = None
    exclude: str = ""
    symbols: str | None = None
    rsa_bits: Literal[2048, 3072, 4096] = 3072
    labels: dict[str, str] = {}
    consumers: list[str] = []
    verify: HookSpec | None = None
    post_check: PostCheckSpec | None = None
    auto_rollback: bool = False
    adopt: bool = False
    target: SecretTarget | None = None  # change the credential where it is checked (rotator.targeting)
    sinks: list[SinkSpec] = []  # where the value is delivered after every change (rotator.sinks)

    def generator_params(self) -> GeneratorParams:
        extra: dict[str, Any] = {}
        if self.require is not None:
            extra["require"] = tuple(self.require)
        if self.symbols is not None:
            extra["symbols"] = self.symbols
        return GeneratorParams(
            kind=self.kind, bytes=self.bytes, encoding=self.encoding, prefix=self.prefix, length=self.length,
            exclude=self.exclude, rsa_bits=self.rsa_bits, **extra,
        )


class AuditConfig(_Strict):
    """Where the hash-chained audit log lives and how it is rotated (``ROTATOR_AUDIT_LOG`` overrides path)."""

    path: str = ".rotator/audit.jsonl"
    max_bytes: int | None = Field(default=None, ge=4096)
    keep: int | None = Field(default=None, ge=1)
    key_provider: str | None = None  # where the audit HMAC keys live (rotator.audit_key); default: defaults.provider
    key_path: str = Field(default="_rotator/audit-key", min_length=1)
    sink: str | None = None  # udp://, tcp:// (syslog) or file:// copy of every record; ROTATOR_AUDIT_SINK wins


class ManifestModel(_Strict):
    """The whole ``rotation.yaml``."""

    version: Literal[1]
    defaults: Defaults = Defaults()
    providers: dict[str, dict[str, Any]] = {"local": {"type": "local"}}
    notifiers: dict[str, NotifierConfig] = {}
    targets: dict[str, dict[str, Any]] = {}
    audit: AuditConfig = AuditConfig()
    secrets: list[SecretSpec] = []


@dataclass(frozen=True, slots=True)
class SecretPolicy:
    """Everything the engine needs about one secret, with defaults applied."""

    spec: SecretSpec
    provider: str
    ref: SecretRef
    schedule: Schedule
    grace: timedelta
    notices: tuple[timedelta, ...]  # lead times, longest first
    notify: tuple[str, ...]
    stale_pending_after: timedelta
    rollback_window: timedelta
    params: GeneratorParams
    retire: RetireMode = "at_grace_end"  # when_acknowledged: as soon as every consumer moved (rotator.acks)
    binding: Binding | None = None  # the target this secret's credential is changed on, if any
    keep_previous: int = 3  # at most this many previous values in grace at once (the engine may lower it)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Manifest:
    """A loaded, validated manifest."""

    path: Path
    model: ManifestModel
    secrets: dict[str, SecretPolicy]
    provider_configs: dict[str, tuple[type[Provider], Any]]
    audit_path: Path
    positions: Positions = field(default_factory=dict, repr=False)
    target_specs: dict[str, TargetSpec] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def secret(self, name: str) -> SecretPolicy:
        """The policy of ``name``; an unknown name is a usage error that suggests close matches."""
        if name in self.secrets:
            return self.secrets[name]
        close = difflib.get_close_matches(name, self.secrets, n=3)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown secret '{name}' in {self.path.name}{hint}")

    def select(self, names: Sequence[str] = (), *, everything: bool = False,
               selector: Mapping[str, str] | None = None) -> list[SecretPolicy]:
        """Secrets by name, all of them, or those whose labels match every ``selector`` pair."""
        if names:
            return [self.secret(n) for n in dict.fromkeys(names)]
        chosen = list(self.secrets.values())
        if selector:
            chosen = [s for s in chosen if all(s.spec.labels.get(k) == v for k, v in selector.items())]
        elif not everything:
            return []
        return chosen

    def build_providers(self) -> ProviderSet:
        return ProviderSet(self.provider_configs, self.base_dir)

    def build_targets(self, admin_reader: Callable[[str], Sequence[SecretValue]]) -> TargetSet:
        """The targets this manifest names; ``admin_reader(secret)`` gives an admin secret's accepted values."""
        return TargetSet(self.target_specs, self.base_dir, admin_reader)


def load_manifest(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Manifest:
    """Read and validate a manifest; every problem is a ManifestError starting with ``file:line:col:``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{file}: manifest not found (looked for {file.resolve()})",
                            hint="pass -f PATH or set ROTATOR_MANIFEST") from None
    except UnicodeDecodeError as exc:
        before = exc.object[: exc.start].decode("utf-8", "replace")
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        raise ManifestError(f"{file.name}:{line}:{column}: not UTF-8 (byte {exc.object[exc.start]:#04x})") from None
    except OSError as exc:
        raise ManifestError(f"{file}: cannot read manifest: {exc}") from None
    return parse_manifest(text, file, env)


def parse_manifest(text: str, file: Path, env: Mapping[str, str] | None = None) -> Manifest:
    """Validate manifest ``text`` (already read from ``file``)."""
    label, environ = file.name, os.environ if env is None else env
    data, positions = load_yaml(text, label, environ)
    try:
        if not isinstance(data, dict):
            start = where(label, positions, ())  # the document's start, or 1:1 when it is empty
            raise ManifestError(f"{start}: the manifest must be a mapping with 'version: 1' and 'secrets:'")
        try:
            model = ManifestModel.model_validate(data)
        except ValidationError as exc:
            raise from_validation(exc, data, positions, label, _known_keys(), ()) from None
        check = _Checker(model, positions, label)
        provider_configs = check.providers(data)
        check.target_specs = target_specs(
            model.targets, {spec.name for spec in model.secrets}, check.fail,
            lambda exc, loc: from_validation(exc, data, positions, label, _known_keys(), loc))
        secrets = check.secrets()
    except ManifestError as exc:  # a `${VAR}` value may be a credential: never echo it (e.g. "'x' is not ...")
        raise without_env_values(exc, text, environ) from None
    audit_path = Path(environ.get("ROTATOR_AUDIT_LOG") or model.audit.path)
    if not audit_path.is_absolute():
        audit_path = file.resolve().parent / audit_path
    return Manifest(file.resolve(), model, secrets, provider_configs, audit_path, positions, check.target_specs)


class _Checker:
    """Cross-field checks pydantic cannot express per field, each failing with the offending position."""

    def __init__(self, model: ManifestModel, positions: Positions, label: str) -> None:
        self.model, self.positions, self.label = model, positions, label
        self.target_specs: dict[str, TargetSpec] = {}

    def fail(self, path: tuple[str | int, ...], why: str) -> ManifestError:
        return ManifestError(f"{where(self.label, self.positions, path)}: {dotted(path)}: {why}")

    def providers(self, data: dict[str, Any]) -> dict[str, tuple[type[Provider], Any]]:
        out: dict[str, tuple[type[Provider], Any]] = {}
        for name, config in self.model.providers.items():
            loc = ("providers", name)
            type_name = config.get("type")
            if not isinstance(type_name, str):
                raise self.fail(loc, f"missing 'type' (one of: {', '.join(sorted(installed_providers()))})")
            try:
                cls = load_provider_class(type_name)
            except ManifestError as exc:
                raise self.fail((*loc, "type"), exc.message) from None
            try:
                out[name] = (cls, cls.config_model.model_validate(config))
            except ValidationError as exc:
                raise from_validation(exc, data, self.positions, self.label, _known_keys(), loc) from None
        return out

    def secrets(self) -> dict[str, SecretPolicy]:
        model, defaults = self.model, self.model.defaults
        self._schedule(("defaults",), defaults)
        default_tz = defaults.tz or "UTC"
        default_freezes = _checks.freezes(self.fail, ("defaults",), defaults.freeze or [], default_tz)
        self._notifiers(("defaults", "notify"), defaults.notify or [])
        # a `cron` in defaults replaces the built-in `every: 90d` (writing both is an error, see _schedule)
        default_every = None if defaults.cron is not None else defaults.every
        out: dict[str, SecretPolicy] = {}
        for i, spec in enumerate(model.secrets):
            at = ("secrets", i)
            if spec.name in out:
                raise self.fail((*at, "name"), f"duplicate secret name '{spec.name}'")
            provider = spec.provider or defaults.provider or "local"
            if provider not in model.providers:
                known = ", ".join(model.providers) or "none"
                raise self.fail((*at, "provider"), f"unknown provider '{provider}' (defined: {known})")
            self._schedule(at, spec)
            _checks.manual(self.fail, at, spec)
            use_spec = spec.every is not None or spec.cron is not None
            tz = spec.tz or default_tz
            schedule = Schedule(
                every=spec.every if use_spec else default_every,
                cron=spec.cron if use_spec else defaults.cron,
                window=spec.window if use_spec else defaults.window,
                tz=tz, jitter=spec.jitter if spec.jitter is not None else defaults.jitter, seed=spec.name,
                freezes=default_freezes if spec.freeze is None else _checks.freezes(self.fail, at, spec.freeze, tz),
            )
            notify = spec.notify if spec.notify is not None else (defaults.notify or [])
            self._notifiers((*at, "notify"), notify)
            try:
                check_params(spec.generator_params())
            except ValueError as exc:
                field_name = getattr(exc, "field", None)
                raise self.fail((*at, field_name) if field_name else at, str(exc)) from None
            grace = _pick(spec.grace, defaults.grace, timedelta(days=7))
            notice = spec.notice if spec.notice is not None else defaults.notice
            notices = tuple(sorted(set(notice if isinstance(notice, list) else [notice] if notice else []),
                                   reverse=True))
            interval = schedule.interval
            if interval is not None and grace >= interval:
                key = "grace" if spec.grace is not None else "every" if spec.every is not None else "cron"
                raise self.fail((*at, key), f"grace ({format_duration(grace)}) must be shorter than the "
                                              f"rotation interval ({format_duration(interval)})")
            if interval is not None and notices and notices[0] >= interval:
                key = "notice" if spec.notice is not None else "every" if spec.every is not None else "cron"
                raise self.fail((*at, key), f"notice lead time ({format_duration(notices[0])}) must be "
                                              f"shorter than the rotation interval ({format_duration(interval)})")
            binding = None
            if spec.target is not None:
                binding = bind(spec.name, spec.target, self.target_specs, grace.total_seconds(), at, self.fail)
            keep = spec.keep_previous or defaults.keep_previous or 3
            _checks.jitter(self.fail, at, spec.jitter is not None, schedule, grace)
            out[spec.name] = SecretPolicy(
                spec=spec, provider=provider,
                ref=SecretRef(spec.name, spec.path or spec.name, dict(spec.labels), spec.description),
                schedule=schedule, grace=grace, notices=notices, notify=tuple(notify),
                stale_pending_after=_pick(spec.stale_pending_after, defaults.stale_pending_after,
                                          timedelta(hours=1)),
                rollback_window=_pick(spec.rollback_window, defaults.rollback_window, timedelta(hours=24)),
                params=spec.generator_params(), retire=self._retire(at, spec, defaults),
                binding=binding, keep_previous=keep,
            )
        return out

    def _retire(self, at: tuple[str | int, ...], spec: SecretSpec, defaults: Defaults) -> RetireMode:
        mode = spec.retire or defaults.retire or "at_grace_end"
        if mode == "when_acknowledged" and not spec.consumers:
            inherited = "" if spec.retire else " (from defaults)"
            raise self.fail((*at, "retire" if spec.retire else "consumers"),
                            f"retire: when_acknowledged{inherited} needs a non-empty 'consumers' list")
        return mode

    def _schedule(self, at: tuple[str | int, ...], policy: _Policy) -> None:
        if policy.every is not None and policy.cron is not None and "every" in policy.model_fields_set:
            raise self.fail((*at, "cron"), "set either 'every' or 'cron', not both")
        if policy.cron is not None:
            try:
                check_cron(policy.cron)
            except ValueError as exc:
                raise self.fail((*at, "cron"), str(exc)) from None
        if policy.window is not None and policy.cron is None:
            raise self.fail((*at, "window"), "only makes sense with 'cron'")
        if policy.every is not None and policy.every <= timedelta(0):
            raise self.fail((*at, "every"), "must be longer than 0s")
        if policy.tz is not None:
            _checks.zone_name(self.fail, (*at, "tz"), policy.tz)

    def _notifiers(self, at: tuple[str | int, ...], names: Iterable[str]) -> None:
        for j, name in enumerate(names):
            if name not in self.model.notifiers:
                known = ", ".join(self.model.notifiers) or "none defined"
                raise self.fail((*at, j), f"unknown notifier '{name}' (notifiers: {known})")


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (ManifestModel, Defaults, SecretSpec, HookSpec, PostCheckSpec, AuditConfig, SecretTarget,
                  FreezeSpec):
        keys.update(model.model_fields)
    return keys


def _pick(*values: timedelta | None) -> timedelta:
    return next(v for v in values if v is not None)


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema of the manifest, with the config schema of every installed provider."""
    schema = ManifestModel.model_json_schema()
    variants = []
    for name in sorted(installed_providers()):
        try:
            variants.append(load_provider_class(name).config_model.model_json_schema())
        except Exception:  # noqa: S112 - a broken third-party provider must not break `rotator schema`
            continue
    for variant in variants:  # a variant's own "$defs" (vault's auth methods) must be where "#/$defs/.." points
        for name, definition in variant.pop("$defs", {}).items():
            schema.setdefault("$defs", {}).setdefault(name, definition)
    if variants:
        schema["properties"]["providers"]["additionalProperties"] = {"anyOf": variants}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rotator manifest (rotation.yaml)"
    return schema


def resolve_manifest_path(path: str | None) -> Path:
    """``-f``, else ``ROTATOR_MANIFEST``, else ``./rotation.yaml``."""
    return Path(path or os.environ.get("ROTATOR_MANIFEST") or "rotation.yaml")
