"""Logging set-up: structlog for our own logs, stdlib ``logging`` for third parties, one redaction for both.

Every log line, ours or botocore's, passes :func:`redact_processor` right before it is rendered. It hides:

(a) values registered with :func:`register_secret` (the engine registers every value it generates or reads),
    wherever they occur inside a string, including formatted exception text;
(b) the value of any field whose *key* looks secret: ``password``, ``token``, ``value``, ``api_key``,
    ``authorization``, ``x-vault-token``, ``*_secret``, ``*_token`` ... The exact key ``secret`` is NOT
    redacted: by convention it holds the secret's *name* (``log.info("rotated", secret="payments/hmac")``);
(c) secret-shaped text: PEM private key blocks, ``Bearer``/``Basic`` credentials, the userinfo of URLs,
    Slack incoming-webhook URLs and secret-named query parameters; and :class:`SecretValue` objects.

Logs go to stderr (stdout carries command output): JSON lines in production, the console renderer on a TTY
(colored unless ``NO_COLOR`` is set). The default stream is looked up at each write, so a rich progress bar
that redirects ``sys.stderr`` gets the lines above it instead of under them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from rotator.keyset import SecretValue
from rotator.schedule import format_duration

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "configure_logging",
    "forget_secret",
    "get_logger",
    "is_secret_key",
    "redact",
    "redact_processor",
    "redact_text",
    "register_secret",
]

REDACTED = "**redacted**"
MIN_SECRET_LENGTH = 8  # shorter registered values would redact ordinary words
_STRIDE = 4
_NOISY = ("botocore", "boto3", "s3transfer", "urllib3", "apscheduler", "werkzeug", "hvac", "slack_sdk")
_MAX_DEPTH = 8


# --- (a) registered values -------------------------------------------------------------------------------


class _Registry:
    """Known secret values, indexed by 8-character windows so lookups cost O(len(text)), not O(values).

    A value of length >= 11 is indexed under its 4 consecutive middle windows; any occurrence of it in a
    text then puts one of them at a position divisible by 4, so only every 4th window of the text is
    looked up. Shorter values (8-10 characters) are indexed by their first window and need every
    position. Adding or removing a value is O(1): nothing big to rebuild while thousands get registered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sparse: dict[str, tuple[str, ...]] = {}  # scanned every _STRIDE positions
        self._dense: dict[str, tuple[str, ...]] = {}  # scanned at every position

    def _slots(self, value: str) -> tuple[dict[str, tuple[str, ...]], set[str]]:
        width, span = MIN_SECRET_LENGTH, MIN_SECRET_LENGTH + _STRIDE - 1
        if len(value) < span:
            return self._dense, {value[:width]}
        start = (len(value) - span) // 2
        return self._sparse, {value[start + j : start + j + width] for j in range(_STRIDE)}

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        index, keys = self._slots(value)
        with self._lock:
            for key in keys:
                present = index.get(key, ())
                if value not in present:
                    index[key] = (*present, value)

    def discard(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        index, keys = self._slots(value)
        with self._lock:
            for key in keys:
                if left := tuple(v for v in index.get(key, ()) if v != value):
                    index[key] = left
                else:
                    index.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._sparse.clear()
            self._dense.clear()

    def scrub(self, text: str) -> str:
        width = MIN_SECRET_LENGTH
        found: set[str] = set()
        for index, step in ((self._sparse, _STRIDE), (self._dense, 1)):
            if index:
                for i in range(0, len(text) - width + 1, step):
                    if candidates := index.get(text[i : i + width]):
                        found.update(v for v in candidates if v in text)
        for value in sorted(found, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        return text


_registry = _Registry()


def register_secret(value: str | SecretValue) -> None:
    """Redact ``value`` from every later log line (values under 8 characters are ignored)."""
    _registry.add(value.reveal() if isinstance(value, SecretValue) else value)


def forget_secret(value: str | SecretValue) -> None:
    """Stop redacting ``value`` (e.g. once it is purged everywhere); unknown values are ignored."""
    _registry.discard(value.reveal() if isinstance(value, SecretValue) else value)


# --- (c) secret shapes -------------------------------------------------------------------------------------

_SHAPES = re.compile(
    r"(?P<pem>-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z))"
    r"|(?P<auth>\b(?:Bearer|bearer|BEARER|Basic|BASIC)\s+)[A-Za-z0-9\-._~+/]{8,}=*"
    r"|(?P<slack>\bhooks\.slack\.com/)[^\s\"'<>]+"
    r"|(?P<userinfo>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@\"'<>]+@"
    r"|(?P<query>[?&](?i:access_token|token|api_key|apikey|key|secret|password|sig|signature"
    r"|x-amz-signature|x-amz-security-token|x-amz-credential)=)[^&#\s\"'<>]+",
    re.DOTALL,
)
_HINTS = ("://", "PRIVATE KEY", "earer", "EARER", "asic", "ASIC", "hooks.slack.com", "?", "&")


def _shape(match: re.Match[str]) -> str:
    kind = match.lastgroup or "pem"
    if kind == "pem":
        return REDACTED
    return match[kind] + REDACTED + ("@" if kind == "userinfo" else "")


def redact_text(text: str) -> str:
    """``text`` with registered values and secret-shaped parts replaced by ``**redacted**``.

    For error messages, notifier payloads and hook output: key-based redaction (b) needs structure, so
    only :func:`redact` and the log processor do that.
    """
    text = _registry.scrub(text)
    if any(hint in text for hint in _HINTS):
        text = _SHAPES.sub(_shape, text)
    return text


# --- (b) secret-named keys and the structure walk --------------------------------------------------------

_SECRET_KEY = re.compile(
    r"(?:^|_)(?:password|passwd|pwd|passphrase|secret|token|value|private_key|privatekey|api_key|apikey"
    r"|secret_key|access_key|signing_key|master_key|signing_secret|webhook_url|hook_url|authorization"
    r"|cookie|set_cookie|credential|credentials)$"
)
_NAME_KEYS = frozenset({"secret"})  # the secret's name by convention, not its value


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a field called ``key`` holds something secret (case-insensitive; ``-`` counts as ``_``)."""
    norm = key.lower().replace("-", "_")
    return norm not in _NAME_KEYS and _SECRET_KEY.search(norm) is not None


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (str, dict, list ...) with (a), (b) and (c) applied; JSON-able result."""
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, SecretValue) or _depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if v is not None and is_secret_key(str(k)) else redact(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item, _depth + 1) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):  # "5m", the form durations take in the manifest and on the command line
        return format_duration(value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return redact_text(str(value))


def redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor applying :func:`redact` to every field; install it last before rendering."""
    return cast(EventDict, redact(event_dict))


# --- configuration -----------------------------------------------------------------------------------------


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of each write.

    A rich progress bar swaps ``sys.stderr`` for a proxy that prints above the bar; writing through this
    object (instead of keeping the original stream) is what stops log lines from overwriting the bar.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return _isatty(sys.stderr)


class _RedactingHandler(logging.StreamHandler[TextIO]):
    """Marks the root handler we install, so reconfiguring replaces it instead of stacking another."""


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger that remembers the name passed to :func:`get_logger`."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    if name := getattr(logger, "name", None):
        event_dict.setdefault("logger", name)
    return event_dict


_CONSOLE_NOISE = ("correlation_id", "at", "actor", "details", "logger", "new_version", "old_version")


def _drop_console_noise(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    for key in _CONSOLE_NOISE:
        event_dict.pop(key, None)
    return event_dict


def configure_logging(
    fmt: Literal["json", "console"] | None = None, verbosity: int = 0, stream: TextIO | None = None,
    *, cache: bool = False, level: int | None = None, colors: bool | None = None, compact: bool = False,
) -> Literal["json", "console"]:
    """Set up structlog and stdlib logging to write redacted lines to ``stream`` (default: stderr).

    ``fmt`` None means console on a TTY and JSON otherwise; the format chosen is returned. ``level``
    defaults to DEBUG with verbosity >= 1, else INFO (the CLI passes WARNING for a console). ``colors``
    None colors a TTY unless ``NO_COLOR`` is set. ``compact`` (the CLI on a console without ``-v``) prints
    ``HH:MM:SSZ`` and leaves out the fields a person reading a terminal does not need (correlation id,
    event time, actor, details) so a warning fits a line or two. Third-party loggers (stdlib ``logging``) pass the same
    redaction and are limited to WARNING. ``cache=True`` (the CLI, which configures once per process)
    lets each logger build its processor chain once instead of per call.
    """
    out: TextIO = stream if stream is not None else cast(TextIO, _Stderr())
    tty = _isatty(out)
    chosen: Literal["json", "console"] = fmt or ("console" if tty else "json")
    renderer: Processor
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors if colors is not None else tty and not os.environ.get("NO_COLOR"),
            exception_formatter=structlog.dev.plain_traceback,
        )
    compact = compact and chosen == "console"
    timestamper = structlog.processors.TimeStamper(fmt="%H:%M:%SZ" if compact else "iso", utc=True)
    tail: list[Processor] = [
        *([_drop_console_noise] if compact else []),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # exception text becomes a field, so it is redacted too
        redact_processor,
        renderer,
    ]
    if level is None:
        level = logging.DEBUG if verbosity >= 1 else logging.INFO
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    _add_logger_name, timestamper, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        context_class=dict,
        logger_factory=lambda *args: _NamedWriteLogger(out, args[0] if args else None),
        cache_logger_on_first_use=cache,  # off by default so a later configure_logging (tests) takes effect
    )

    handler = _RedactingHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RedactingHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, level))
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
    return chosen


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger whose lines carry ``logger=name``; configures the defaults if nobody has yet."""
    if not structlog.is_configured():
        configure_logging()
    return cast(FilteringBoundLogger, structlog.get_logger(*([name] if name else [])))
