"""Pure helpers for Redis ACL rules: password hashes, and the permission rules a clone copies from its primary.

Only permissions are copied (commands, key and channel patterns, selectors, payload-sanitising flags). Passwords
and the ``on``/``off``/``nopass`` state belong to each identity and are never copied.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["copied_rules", "password_hash", "passwords_of"]

_STATE_FLAGS = frozenset({"on", "off", "nopass"})


def password_hash(secret: str) -> str:
    """The ``#<sha256>`` form Redis keeps (64 lowercase hex digits), so no plaintext goes over the wire."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _tokens(value: Any) -> list[str]:
    """A GETUSER field as rule tokens: Redis 7 gives space-separated strings, Redis 6 and redis-py lists."""
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return _text(value).split()
    return [token for item in value for token in _text(item).split()]


def passwords_of(info: Mapping[str, Any]) -> set[str]:
    """The password hashes a parsed ``ACL GETUSER`` reply holds."""
    return {_text(p) for p in info.get("passwords") or ()}


def _patterns(tokens: Iterable[str], prefix: str) -> list[str]:
    """Key (``~``, ``%R~``) or channel (``&``) patterns; Redis 6 lists them without the prefix."""
    return [t if t.startswith(("~", "%", "&")) or t.startswith("all") or t.startswith("reset") else prefix + t
            for t in tokens]


def _permission_rules(info: Mapping[str, Any]) -> list[str]:
    rules = _tokens(info.get("commands"))
    rules += _patterns(_tokens(info.get("keys")), "~")
    channels = _patterns(_tokens(info.get("channels")), "&")
    rules += ["resetchannels", *channels]  # the server's acl-pubsub-default must not decide for the clone
    return rules


def copied_rules(info: Mapping[str, Any]) -> list[str]:
    """``ACL SETUSER`` rules that give a new identity the permissions in the parsed GETUSER reply ``info``."""
    flags = [_text(f) for f in info.get("flags") or ()]
    rules = [f for f in flags if f not in _STATE_FLAGS]
    rules += _permission_rules(info)
    for selector in info.get("selectors") or ():
        if not isinstance(selector, Mapping):  # redis-py gives a flat [name, value, name, value] list
            selector = dict(zip(selector[::2], selector[1::2], strict=False))
        inner = {_text(k): v for k, v in selector.items()}
        rules.append("(" + " ".join(_permission_rules(inner)) + ")")
    return rules
