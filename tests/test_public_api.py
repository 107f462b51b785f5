"""The curated public API: ``__all__`` lists exactly what resolves, lazily where it is heavy."""

from __future__ import annotations

import subprocess
import sys

import rotator
import rotator.spi


def test_every_public_name_resolves() -> None:
    """Each name in ``rotator.__all__`` and ``rotator.spi.__all__`` is importable."""
    for module in (rotator, rotator.spi):
        for name in module.__all__:
            assert getattr(module, name) is not None, name


def test_version_comes_from_the_package_metadata() -> None:
    """``rotator.__version__`` is the installed distribution's version, not a second copy in the code."""
    from importlib.metadata import version

    assert rotator.__version__ == version("rotator")


def test_import_rotator_does_not_import_the_keyring() -> None:
    """``import rotator`` stays cheap: the keyring and webhook helpers load on first use."""
    code = "import sys, rotator; print('rotator.keyring' in sys.modules, 'rotator.webhooks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
