"""The audit component of deploy/k8s (deploy/k8s/audit): rendered with the real `kubectl kustomize` on top of
the base, every object validates with kubernetes-validate --strict, the verify CronJob runs weekly with the
arguments the CLI accepts, and every pod that writes an audit log writes it to the PVC the check reads."""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import require_binary

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
COMPONENT = K8S / "audit"
OLDEST_K8S = "1.29.0"
AUDIT_DIR = "/var/lib/rotator/audit"
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@cache
def _rendered(tmp: str) -> list[dict[str, Any]]:
    kubectl = require_binary("kubectl", "kubernetes-client")
    overlay = Path(tmp)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S, overlay)], "components": [os.path.relpath(COMPONENT, overlay)]}))
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Any]]:
    """The base plus the audit component, as kustomize renders them, by (kind, name)."""
    folder = tmp_path_factory.mktemp("overlay")
    return {(d["kind"], d["metadata"]["name"]): d for d in _rendered(str(folder))}


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    return (spec["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else spec)["template"]["spec"]  # type: ignore[no-any-return]


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in _pod(obj)["containers"] if c["name"] == "rotator"]
    return dict(container)


def test_rendered_objects_validate_strictly(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Every object of base + component validates on the oldest supported and the newest Kubernetes."""
    utils = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate is not installed")
    for (kind, name), doc in objects.items():
        if (doc["apiVersion"], kind) in CUSTOM_KINDS:
            continue
        for version in (OLDEST_K8S, utils.latest_version()):
            try:
                utils.validate(doc, version, strict=True)
            except utils.ValidationError as exc:
                pytest.fail(f"{kind}/{name} (k8s {version}): {'.'.join(map(str, exc.path))}: {exc.message}")


def test_verify_runs_weekly_and_never_overlaps(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The check runs once a week (fixed minute, hour and weekday), Forbid, failing at once on a broken log."""
    cronjob = objects[("CronJob", "rotator-audit-verify")]["spec"]
    minute, hour, day, month, weekday = cronjob["schedule"].split()
    assert (day, month) == ("*", "*")
    assert minute.isdigit()
    assert hour.isdigit()
    assert re.fullmatch(r"[0-6]", weekday)
    assert cronjob["concurrencyPolicy"] == "Forbid"
    rules = cronjob["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert 1 in fail[0]["onExitCodes"]["values"]
    assert 4 not in fail[0]["onExitCodes"]["values"]  # backend down: retried


def test_verify_arguments_exist_on_the_cli(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    """`--log-format json audit verify DIR`: every option is one the CLI has."""
    from rotator.cli import cli

    args = _container(objects[("CronJob", "rotator-audit-verify")])["args"]
    assert args[:2] == ["--log-format", "json"]
    assert args[2:4] == ["audit", "verify"]
    assert args[4] == AUDIT_DIR
    verify = cli.commands["audit"].commands["verify"]  # type: ignore[attr-defined]
    assert verify.params[0].nargs == -1


def test_writers_and_the_check_share_the_pvc(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The daemon and the pass write ROTATOR_AUDIT_LOG on the RWX PVC; the weekly check mounts it read-only."""
    (claim,) = [name for kind, name in objects if kind == "PersistentVolumeClaim"]
    assert objects[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteMany"]
    keys: list[tuple[str, str]] = [("Deployment", "rotator"), ("CronJob", "rotator-run"),
                                   ("CronJob", "rotator-audit-verify")]
    for key in keys:
        pod, container = _pod(objects[key]), _container(objects[key])
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts[AUDIT_DIR]["name"]]["persistentVolumeClaim"]["claimName"] == claim, key
        env = {e["name"]: e for e in container["env"]}
        if key[1] == "rotator-audit-verify":
            assert mounts[AUDIT_DIR]["readOnly"] is True
        else:
            assert Path(env["ROTATOR_AUDIT_LOG"]["value"]).parent == Path(AUDIT_DIR), key


def test_verify_pod_is_locked_down_like_the_pass(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Same identity and security context as the pass CronJob; the manifest's variables reach it."""
    verify, run = objects[("CronJob", "rotator-audit-verify")], objects[("CronJob", "rotator-run")]
    assert _pod(verify)["securityContext"] == _pod(run)["securityContext"]
    assert _container(verify)["securityContext"] == _container(run)["securityContext"]
    assert _pod(verify)["serviceAccountName"] == _pod(run)["serviceAccountName"]
    text = objects[("ConfigMap", "rotator-manifest")]["data"]["rotation.yaml"]
    env = {e["name"]: e for e in _container(verify)["env"]}
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= env.keys()
    assert "secretKeyRef" in env["VAULT_TOKEN"]["valueFrom"]
