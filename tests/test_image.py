"""The container image is built from deploy/Dockerfile (``make image``: a local wheelhouse, then buildah) and
run as UID 10001: ``rotator --version``, ``rotator validate`` on the sample manifest, and one ``rotator run``
whose store lands on the volume (read back on the host, and by a second container).

The base image is the local stand-in for python:3.12-slim that ``../shared/tools/python-base-image`` builds
(machines here cannot pull from a registry); without buildah or that base the test skips with one line, and
CI (ROTATOR_REQUIRE_SERVERS=1) fails instead.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.localstore import LocalConfig, LocalProvider
from rotator.provider import SecretRef
from tests.conftest import Workspace
from tests.servers import require_binary, servers_required

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("image")]

ROOT = Path(__file__).resolve().parent.parent
BASE = "docker.io/library/python:3.12-slim"
TAG = "localhost/rotator:test"
UID = 10001
ENV = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}


def _buildah(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    for _ in range(3):
        result = subprocess.run(["buildah", *args], capture_output=True, text=True, env=ENV, timeout=timeout,
                                check=False)
        # buildah now and then trips over its own state files (a panic, or a vanished userdata/.tmp-*.json
        # under vfs + chroot): that says nothing about the image, so try the same call again
        if not (result.returncode in (2, 125) and ("panic: runtime error" in result.stderr
                                                   or "userdata/.tmp-buildah" in result.stderr)):
            break
    if check:
        assert result.returncode == 0, f"buildah {' '.join(args[:2])}: {result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """``make image`` with a test tag; removed again at the end."""
    require_binary("buildah", "buildah")
    names = _buildah("images", "--format", "{{.Name}}:{{.Tag}}").stdout.split()
    if BASE not in names:
        message = f"{BASE} not built: run ../shared/tools/python-base-image"
        if servers_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    build = subprocess.run(["make", "image", f"IMAGE={TAG}"], cwd=ROOT, capture_output=True, text=True,
                           env=ENV, timeout=1800, check=False)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    try:
        yield TAG
    finally:
        _buildah("rmi", "-f", TAG, check=False)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """A working container of the image with the sample manifest and its hook script at /etc/rotator."""
    name = _buildah("from", "--pull-never", image).stdout.strip().splitlines()[-1]
    try:
        _buildah("copy", name, str(ROOT / "rotation.yaml"), "/etc/rotator/rotation.yaml")
        _buildah("copy", name, str(ROOT / "scripts"), "/etc/rotator/scripts")
        yield name
    finally:
        _buildah("rm", name, check=False)


def _run(workspace: Workspace, container: str, volume: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rotator ARGS`` inside ``container`` as UID 10001 with ``volume`` at /var/lib/rotator."""
    result = _buildah("run", "--user", f"{UID}:{UID}", "--volume", f"{volume}:/var/lib/rotator:rw", container,
                      "--", "rotator", *args, check=False)
    workspace.outputs += [result.stdout, result.stderr]
    return result


def _stored(db: Path) -> dict[str, str]:
    """Secret name -> state of its only version, read on the host from the store the container wrote.

    The store refuses files owned by another user (uid 10001 here), so the host reads a copy it owns, as an
    operator inspecting a volume would (the files' owner and mode are checked on the originals)."""
    import tempfile

    copy = Path(tempfile.mkdtemp()) / ".rotator"
    shutil.copytree(db.parent, copy)
    db = copy / db.name
    provider = LocalProvider(name="check", config=LocalConfig(type="local", path=str(db)), base_dir=db.parent)
    try:
        out = {}
        for path in provider.list():
            keyset = provider.read(SecretRef(path, path))
            assert keyset is not None
            (version,) = keyset.versions
            out[path] = str(version.state)
        return out
    finally:
        provider.close()


def test_image_runs_as_10001_and_keeps_its_store_on_the_volume(workspace: Workspace, container: str,
                                                               image: str) -> None:
    """--version, validate on the sample manifest, then one `run` (4 secrets created) whose encrypted store,
    key and audit log are on the volume, owned by 10001 with mode 0600; an HTML report renders from the
    packaged templates; a second container reads the store back."""
    volume = workspace.root / "volume"
    volume.mkdir()
    os.chown(volume, UID, UID)
    version = _run(workspace, container, volume, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("rotator, version ")
    checked = _run(workspace, container, volume, "validate")  # ROTATOR_MANIFEST=/etc/rotator/rotation.yaml
    assert checked.returncode == 0, checked.stderr
    assert "OK: 4 secrets" in checked.stdout
    # The manifest on the volume, so its relative `.rotator/` store lands there (as a mounted config would).
    shutil.copy(ROOT / "rotation.yaml", volume / "rotation.yaml")
    shutil.copytree(ROOT / "scripts", volume / "scripts")
    ran = _run(workspace, container, volume, "-f", "/var/lib/rotator/rotation.yaml", "run")
    assert ran.returncode == 0, ran.stdout + ran.stderr[-2000:]
    stored = {name: state for name, state in _stored(volume / ".rotator" / "store.db").items()
              if not name.startswith("_rotator/")}  # the audit HMAC keys live in the store too
    assert sorted(stored) == ["auth/jwt-signing", "db/reporting-password", "partner-api-key",
                              "payments/webhook-hmac"]
    assert all(state == "current" for state in stored.values())
    store = volume / ".rotator" / "store.db"
    for path in (store, volume / ".rotator" / "master.key", volume / ".rotator" / "audit.jsonl"):
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (UID, UID), path
        assert stat.S_IMODE(info.st_mode) == 0o600, path
    # The report templates ship as package data: an HTML report renders inside the image.
    report = _run(workspace, container, volume, "-f", "/var/lib/rotator/rotation.yaml", "report", "--format", "html")
    assert report.returncode == 0, report.stderr[-2000:]
    assert report.stdout.startswith("<!DOCTYPE html>")
    again = _buildah("from", "--pull-never", image).stdout.strip().splitlines()[-1]
    try:
        status = _run(workspace, again, volume, "-f", "/var/lib/rotator/rotation.yaml", "status")
    finally:
        _buildah("rm", again, check=False)
    assert status.returncode == 0, status.stderr
    assert "not created" not in status.stdout
    assert "partner-api-key" in status.stdout
    # hand the volume back to the host's user: the canary scan at teardown opens the store, and the store
    # refuses files owned by another user
    for path in (volume, *volume.rglob("*")):
        os.chown(path, os.getuid(), os.getgid(), follow_symlinks=False)


def test_image_has_no_build_tools_and_reports_its_size(image: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The runtime stage carries the virtualenv only: no compiler, no wheels, no pip in /opt/rotator; the
    trimmed botocore still builds the clients the aws provider and its credential chain use (offline)."""
    name = _buildah("from", "--pull-never", image).stdout.strip().splitlines()[-1]
    clients = ("import boto3; s = boto3.session.Session(region_name='eu-west-1'); "
               "[s.client(n) for n in ('secretsmanager', 'sts', 'sso', 'sso-oidc')]; print('clients ok')")
    try:
        probe = _buildah("run", name, "--", "sh", "-c",
                         "command -v gcc cc make || true; ls /opt/rotator/bin; ls / | grep -x wheels || true")
        boto = _buildah("run", "--user", f"{UID}:{UID}", name, "--", "python", "-c", clients, check=False)
    finally:
        _buildah("rm", name, check=False)
    assert "gcc" not in probe.stdout
    assert "/make" not in probe.stdout
    assert "pip" not in probe.stdout.split()
    assert "wheels" not in probe.stdout.split()
    assert boto.stdout.strip() == "clients ok", boto.stderr[-2000:]
    size = _buildah("images", "--format", "{{.Size}}", image).stdout.strip()
    with capsys.disabled():
        print(f"\n{image}: {size}")
