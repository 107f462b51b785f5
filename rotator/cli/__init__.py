"""The ``rotator`` command line (DESIGN.md section 4).

Where things are: :mod:`._root` the group and its global options, :mod:`._secrets` the commands that read
or change secrets, :mod:`._admin` the rest (validate, daemon, audit, report, schema, notify, completion),
:mod:`._base` what they share (state, envvar-aware command classes, ``-o``/``-l``/``--yes``), :mod:`._complete`
shell completion, :mod:`._main` the entry point that maps every error to one line and an exit code.
Command bodies that print are in :mod:`rotator.commands`. Heavy modules (pydantic, cryptography,
providers, apscheduler) are imported inside the commands so that ``rotator --help`` stays fast.
"""

from __future__ import annotations

from rotator.cli import _admin, _secrets  # noqa: F401  # registers the commands on `cli`
from rotator.cli._main import main
from rotator.cli._root import cli

__all__ = ["cli", "main"]
