"""Finding the real server binaries the integration tests start (PostgreSQL, MariaDB, Redis, ...).

A test whose server is missing skips with one line naming the Debian package that provides it. CI sets
``ROTATOR_REQUIRE_SERVERS=1`` (``.ci/run`` does), which turns that skip into a failure, so a CI machine
that lost a package cannot pass by skipping.
"""

from __future__ import annotations

import glob
import os
import shutil

import pytest

__all__ = ["require_binary", "servers_required"]


def servers_required() -> bool:
    """True when missing servers must fail the run instead of skipping (CI)."""
    return os.environ.get("ROTATOR_REQUIRE_SERVERS", "") not in ("", "0", "false", "no")


def require_binary(name: str, package: str, *, search: tuple[str, ...] = ()) -> str:
    """The path of executable ``name`` (on PATH or in one of the ``search`` globs), else skip/fail.

    ``search`` holds globs such as ``/usr/lib/postgresql/*/bin`` for binaries Debian keeps off PATH.
    """
    found = shutil.which(name)
    for pattern in search:
        if found:
            break
        for folder in sorted(glob.glob(pattern), reverse=True):
            candidate = os.path.join(folder, name)
            if os.access(candidate, os.X_OK):
                found = candidate
                break
    if found:
        return found
    message = f"{name} not found: apt-get install {package}"
    if servers_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
