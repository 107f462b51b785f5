"""The pure ACL helpers of the redis target: hashes, and which rules a clone copies."""

from __future__ import annotations

import hashlib

from rotator_redis._acl import copied_rules, password_hash, passwords_of


def test_password_hash_is_redis_sha256() -> None:
    """The hash is the 64-hex SHA-256 Redis keeps for `>password`."""
    assert password_hash("pw") == hashlib.sha256(b"pw").hexdigest()
    assert len(password_hash("pw")) == 64


def test_state_and_passwords_are_never_copied() -> None:
    """on/off/nopass and password hashes stay with their identity; permission flags are copied."""
    info = {"flags": ["on", "nopass", "sanitize-payload"], "passwords": ["ab" * 32], "commands": "+@all -debug",
            "keys": "~*", "channels": "&*", "selectors": []}
    rules = copied_rules(info)
    assert rules == ["sanitize-payload", "+@all", "-debug", "~*", "resetchannels", "&*"]
    assert passwords_of(info) == {"ab" * 32}


def test_redis6_style_reply_gets_prefixes() -> None:
    """Redis 6 lists key and channel patterns without their ~ / & prefix; the copy adds them."""
    info = {"flags": ["off", "allkeys"], "commands": "-@all +get", "keys": [b"app:*"], "channels": [b"news"]}
    assert copied_rules(info) == ["allkeys", "-@all", "+get", "~app:*", "resetchannels", "&news"]


def test_selectors_from_flat_lists() -> None:
    """redis-py returns selectors as flat [name, value, ...] lists; each becomes one parenthesised rule."""
    info = {"flags": ["on"], "commands": "-@all", "keys": "", "channels": "",
            "selectors": [["commands", "-@all +hget", "keys", "~sel:*", "channels", ""]]}
    assert copied_rules(info)[-1] == "(-@all +hget ~sel:* resetchannels)"
