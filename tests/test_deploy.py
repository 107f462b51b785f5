"""Deployment artefacts: Dockerfile, Kubernetes manifests, alert rules and the Grafana dashboard.

Nothing here needs a container engine or a cluster: the Dockerfile is linted with hadolint, core Kubernetes
objects are validated offline with kubernetes-validate's bundled schemas (``--strict``: unknown fields are
errors), and the custom resources (ServiceMonitor, PrometheusRule, Kustomization) and the dashboard are
checked structurally. Every PromQL expression may only name the metrics rotator exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
ALERTS = DEPLOY / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "rotator-dashboard.json"

# Oldest Kubernetes minor the manifests support (podFailurePolicy, CronJob timeZone and
# unhealthyPodEvictionPolicy are all on by default there) and the newest schema kubernetes-validate bundles.
OLDEST_K8S = "1.29.0"

UID = 10001
METRICS_PORT = 9102
STATE_DIR = "/var/lib/rotator"
TMP_DIR = "/tmp"

# The metrics the daemon exports (DESIGN.md section 5 plus the operations issue); nothing else may be queried.
KNOWN_METRICS = {
    "rotator_rotations_total",
    "rotator_rotation_duration_seconds",
    "rotator_secret_age_seconds",
    "rotator_next_rotation_timestamp_seconds",
    "rotator_grace_expiry_timestamp_seconds",
    "rotator_notifications_total",
    "rotator_backend_errors_total",
    "rotator_up",
    "rotator_build_info",
    "rotator_secret_policy_seconds",
    "rotator_backend_circuit_open",
    "rotator_sink_deliveries_total",
}
HISTOGRAMS = {"rotator_rotation_duration_seconds"}
QUERYABLE = KNOWN_METRICS | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}

# The `result` label values the code emits (rotator/engine.py, rotator/notify/dispatch.py); a query on any
# other value would match nothing and its alert could never fire.
RESULT_VALUES = {
    "rotator_rotations_total": {"success", "failure"},
    "rotator_notifications_total": {"ok", "failed"},
}

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp_min",
    "count", "count_over_time", "delta", "deriv", "floor", "histogram_quantile", "idelta", "increase",
    "irate", "label_replace", "last_over_time", "max", "max_over_time", "min", "min_over_time", "quantile",
    "rate", "resets", "round", "scalar", "sort", "sort_desc", "sum", "sum_over_time", "time", "timestamp",
    "topk", "vector",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                   "bool", "offset", "inf", "nan"}

REQUIRED_ALERTS = {
    "RotatorRotationFailed": "rotator_rotations_total",
    "RotatorSecretOverdue": "rotator_secret_policy_seconds",
    "RotatorGraceExpiringOldKeyInUse": "rotator_grace_expiry_timestamp_seconds",
    "RotatorNotifierFailing": "rotator_notifications_total",
    "RotatorBackendCircuitOpen": "rotator_backend_circuit_open",
    "RotatorDown": "rotator_up",
}
ALERT_FIELDS = {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}


# --------------------------------------------------------------------------- helpers


def _docs(path: Path) -> list[dict[str, Any]]:
    """All non-empty YAML documents of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> list[Path]:
    """Every Kubernetes manifest shipped under deploy/k8s."""
    return sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))


@cache
def _objects() -> dict[str, dict[str, Any]]:
    """The Kubernetes objects of deploy/k8s keyed by kind (each kind appears once)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in _manifests():
        for doc in _docs(path):
            assert doc["kind"] not in objects, f"{path.name}: a second {doc['kind']}"
            objects[doc["kind"]] = doc
    return objects


def _pod_specs() -> dict[str, dict[str, Any]]:
    """The pod templates of the two alternative workloads."""
    objs = _objects()
    return {
        "Deployment": objs["Deployment"]["spec"]["template"]["spec"],
        "CronJob": objs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    }


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    """The rotator container of a pod spec."""
    (container,) = [c for c in pod["containers"] if c["name"] == "rotator"]
    return container


def _dockerfile() -> list[tuple[str, str]]:
    """Dockerfile instructions as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def _runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the final (runtime) stage."""
    instructions = _dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _docker_env() -> dict[str, str]:
    """ENV of the runtime stage (KEY=VALUE form)."""
    env: dict[str, str] = {}
    for keyword, args in _runtime_stage():
        if keyword == "ENV":
            for pair in args.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _promql_names(expr: str) -> tuple[set[str], set[str]]:
    """Split a PromQL expression into (metric names, function names) it uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, Grafana variables inside them
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors, $__rate_interval
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    metrics: set[str] = set()
    functions: set[str] = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if name in PROMQL_KEYWORDS:
            continue
        (functions if call else metrics).add(name)
    return metrics, functions


def _check_promql(expr: str, where: str) -> set[str]:
    """Assert an expression names only known metrics, functions and result values; return its metrics."""
    for metric, matchers in re.findall(r"(rotator_\w+)\{([^}]*)\}", expr):
        for op, value in re.findall(r'\bresult\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
            assert op == "=", f"{where}: match `result` exactly, not with {op}"
            assert value in RESULT_VALUES.get(metric, set()), f"{where}: {metric} has no result={value!r}"
    metrics, functions = _promql_names(expr)
    assert metrics, f"{where}: no metric in {expr!r}"
    assert metrics <= QUERYABLE, f"{where}: unknown metric(s) {sorted(metrics - QUERYABLE)} in {expr!r}"
    unknown = sorted(functions - PROMQL_FUNCTIONS)
    assert not unknown, f"{where}: unknown function(s) {unknown}"
    return metrics


def _alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/alerts.yaml."""
    (rule,) = _docs(ALERTS)
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def _dashboard_panels() -> list[dict[str, Any]]:
    """All panels of the dashboard, rows' nested panels included."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _tool(name: str) -> str:
    """Path of a CLI tool from the venv or PATH; skip the test when it is not installed."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_hadolint_dockerfile_is_clean(tmp_path: Path) -> None:
    """hadolint reports nothing at all for deploy/Dockerfile, not even style or info findings."""
    hadolint = _tool("hadolint")
    # Run outside the repository with an empty HOME so no stray .hadolint.yaml can relax the rules.
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']} {f['code']}: {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_dockerfile_entrypoint_and_default_command() -> None:
    """The image runs the `rotator` console script, by default as a daemon listening on all interfaces."""
    runtime = dict(_runtime_stage())
    assert json.loads(runtime["ENTRYPOINT"]) == ["rotator"]
    assert json.loads(runtime["CMD"]) == ["daemon", "--listen", "0.0.0.0"]
    assert runtime["EXPOSE"] == str(METRICS_PORT)


def test_dockerfile_runs_as_numeric_non_root_user() -> None:
    """The runtime stage ends as UID 10001 (numeric, so Kubernetes can verify runAsNonRoot)."""
    users = [args for keyword, args in _runtime_stage() if keyword == "USER"]
    assert users, "the runtime stage never leaves root"
    uid, _, gid = users[-1].partition(":")
    assert uid == str(UID)
    assert gid in ("", str(UID))


def test_dockerfile_is_multistage_and_installs_only_built_wheels() -> None:
    """A builder stage makes pinned wheels and installs them, without an index, into a virtualenv; the slim
    runtime copies only that virtualenv (no pip run, no wheels, no build tools in the final stage)."""
    instructions = _dockerfile()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim AS runtime$", froms[-1]) or re.match(
        r"python:3\.1[1-3]-slim AS runtime$", froms[-1]
    )
    builder = instructions[: -len(_runtime_stage())]
    builder_runs = " ".join(args for keyword, args in builder if keyword == "RUN")
    assert "pip wheel" in builder_runs
    assert "--constraint constraints.txt" in builder_runs or "-c constraints.txt" in builder_runs
    assert "./providers/vault" in builder_runs
    assert "./providers/aws" in builder_runs
    assert "--no-index" in builder_runs
    assert "PIP_NO_INDEX=1" in " ".join(args for keyword, args in builder if keyword == "ENV")
    runtime_runs = " ".join(args for keyword, args in _runtime_stage() if keyword == "RUN")
    assert "pip" not in runtime_runs
    copies = [args for keyword, args in _runtime_stage() if keyword == "COPY"]
    assert copies == ["--from=builder /opt/rotator /opt/rotator"]


def test_dockerfile_is_read_only_root_filesystem_friendly() -> None:
    """Bytecode is not written, HOME/TMPDIR are /tmp and state and audit live under /var/lib/rotator."""
    env = _docker_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == TMP_DIR
    assert env["TMPDIR"] == TMP_DIR
    assert env["ROTATOR_AUDIT_LOG"].startswith(STATE_DIR + "/")
    assert env["ROTATOR_MANIFEST"] == "/etc/rotator/rotation.yaml"
    runtime = dict(_runtime_stage())
    assert runtime["WORKDIR"] == STATE_DIR
    assert json.loads(runtime["VOLUME"]) == [STATE_DIR]


def test_dockerfile_healthcheck_and_labels() -> None:
    """The healthcheck probes /healthz with python's urllib (no curl in slim) and OCI labels are set."""
    runtime = dict(_runtime_stage())
    check = runtime["HEALTHCHECK"]
    assert "CMD" in check
    assert "urllib.request" in check
    assert "curl" not in check
    assert _docker_env()["ROTATOR_HEALTH_URL"] == f"http://127.0.0.1:{METRICS_PORT}/healthz"
    labels = " ".join(args for keyword, args in _runtime_stage() if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_dockerignore_allows_only_the_build_inputs() -> None:
    """The build context is an allow-list: sources and pins in, local state (.rotator, keys) and venvs out."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for keyword, args in _dockerfile():
        if keyword == "COPY" and "--from" not in args:
            copied.update(src.rstrip("/") for src in args.split()[:-1])
    assert copied <= allowed, f"COPY sources excluded from the context: {sorted(copied - allowed)}"
    assert "**/.rotator" in patterns
    assert "**/.venv" in patterns


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path) -> None:
    """Each core object validates with kubernetes-validate --strict on the oldest supported and newest k8s."""
    utils = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate is not installed")
    for doc in _docs(path):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue  # CRDs: no bundled schema, checked structurally below
        for version in (OLDEST_K8S, utils.latest_version()):
            try:
                utils.validate(doc, version, strict=True)
            except utils.ValidationError as exc:
                location = ".".join(str(part) for part in exc.path)
                pytest.fail(f"{path.name} {doc['kind']} (k8s {version}): {location}: {exc.message}")
            except utils.SchemaNotFoundError as exc:
                pytest.fail(f"{path.name}: {exc.message}")


def test_kubernetes_validate_cli_strict() -> None:
    """The kubernetes-validate command itself (as CI would run it) passes on all of deploy/k8s."""
    tool = _tool("kubernetes-validate")
    result = subprocess.run(
        [tool, "--strict", "--quiet", "--no-warn", *map(str, _manifests())],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_lists_every_manifest() -> None:
    """kustomization.yaml lists exactly the manifest files of deploy/k8s, each existing."""
    (kustomization,) = _docs(K8S / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "duplicate resource"
    on_disk = {p.name for p in _manifests()} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    images = {image["name"] for image in kustomization.get("images", [])}
    for pod in _pod_specs().values():
        assert _container(pod)["image"].rsplit(":", 1)[0] in images


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_workload_security_context(kind: str) -> None:
    """Both workloads run as UID 10001, read-only root, no privilege escalation, no capabilities, seccomp."""
    pod = _pod_specs()[kind]
    pod_ctx = pod["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True
    assert pod_ctx["runAsUser"] == UID
    assert pod_ctx["runAsGroup"] == UID
    assert pod_ctx["fsGroup"] == UID
    assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = _container(pod)["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == _objects()["ServiceAccount"]["metadata"]["name"]


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_workload_mounts_every_writable_path(kind: str) -> None:
    """/tmp and the state directory are volumes (emptyDir/PVC); the manifest is the ConfigMap, read-only."""
    pod = _pod_specs()[kind]
    container = _container(pod)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[TMP_DIR]["name"]].keys() & {"emptyDir"}
    assert volumes[mounts[STATE_DIR]["name"]].keys() & {"emptyDir", "persistentVolumeClaim"}
    env = {e["name"]: e for e in container["env"]}
    manifest_path = Path(env["ROTATOR_MANIFEST"]["value"])
    manifest_mount = mounts[str(manifest_path.parent)]
    assert manifest_mount["readOnly"] is True
    configmap = _objects()["ConfigMap"]
    assert volumes[manifest_mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert manifest_path.name in configmap["data"]
    assert env["ROTATOR_AUDIT_LOG"]["value"].startswith(STATE_DIR + "/")


def test_deployment_runs_the_daemon_with_probes() -> None:
    """Two daemon replicas serve metrics on 9102 with /healthz liveness, /readyz readiness and resources."""
    deployment = _objects()["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    container = _container(deployment["spec"]["template"]["spec"])
    args = container["args"]
    command = args.index("daemon")
    assert args[:command] == ["--log-format", "json"], "global options go before the subcommand"
    options = dict(zip(args[command + 1 :: 2], args[command + 2 :: 2], strict=True))
    assert options["--listen"] == "0.0.0.0"
    assert int(options["--metrics-port"]) == METRICS_PORT
    assert "--reconcile-every" in options
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == METRICS_PORT
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][bound].keys()


def test_cronjob_runs_one_pass_without_overlap() -> None:
    """The CronJob runs `rotator run` with Forbid concurrency, a starting deadline and bounded retries."""
    cronjob = _objects()["CronJob"]["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["startingDeadlineSeconds"] > 0
    job = cronjob["jobTemplate"]["spec"]
    for field in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert job[field] > 0, field
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert _container(pod)["args"] == ["--log-format", "json", "run"]


def test_service_monitor_and_pdb_select_the_daemon() -> None:
    """Service, ServiceMonitor and PodDisruptionBudget all select the daemon pods and the `metrics` port."""
    objs = _objects()
    pod_labels = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objs["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", METRICS_PORT, "metrics")
    assert objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    monitor = objs["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] == "metrics"
        assert endpoint.get("path", "/metrics") == "/metrics"
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])


def test_configmap_manifest_is_consistent() -> None:
    """The sample rotation.yaml uses Vault and AWS, and every provider/notifier it references is defined."""
    manifest = yaml.safe_load(_objects()["ConfigMap"]["data"]["rotation.yaml"])
    assert manifest["version"] == 1
    providers = manifest["providers"]
    assert {p["type"] for p in providers.values()} >= {"vault", "aws"}
    defaults = manifest.get("defaults", {})
    names = [secret["name"] for secret in manifest["secrets"]]
    assert len(names) == len(set(names))
    for secret in manifest["secrets"]:
        assert secret.get("provider", defaults.get("provider")) in providers, secret["name"]
        for notifier in secret.get("notify", defaults.get("notify", [])):
            assert notifier in manifest["notifiers"], notifier


def test_configmap_manifest_passes_rotator_validate(tmp_path: Path) -> None:
    """`rotator validate` accepts the ConfigMap's rotation.yaml once its variables are set."""
    rotator = _tool("rotator")
    text = _objects()["ConfigMap"]["data"]["rotation.yaml"]
    manifest = tmp_path / "rotation.yaml"
    manifest.write_text(text)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ROTATOR_", "VAULT_"))}
    for name in set(re.findall(r"\$\{(\w+)\}", text)):
        env[name] = "https://example.invalid/x" if name.endswith(("_ADDR", "_URL")) else "dummy"
    env["ROTATOR_AUDIT_LOG"] = str(tmp_path / "audit.jsonl")
    result = subprocess.run([rotator, "-f", str(manifest), "validate"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=60, check=False)
    missing = re.search(r"unknown provider type '(\w+)'", result.stderr)
    if result.returncode == 2 and missing:
        pytest.skip(f"provider distribution rotator-{missing.group(1)} is not installed")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_every_manifest_variable_reaches_the_workload(kind: str) -> None:
    """Each `${VAR}` of the ConfigMap's rotation.yaml is in the workload's env (secrets via secretKeyRef)."""
    text = _objects()["ConfigMap"]["data"]["rotation.yaml"]
    variables = set(re.findall(r"\$\{(\w+)\}", text))
    env = {e["name"]: e for e in _container(_pod_specs()[kind])["env"]}
    assert variables <= env.keys(), f"missing: {sorted(variables - env.keys())}"
    for name in variables:
        if re.search(r"TOKEN|PASSWORD|SECRET|WEBHOOK|KEY", name):
            assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{name} must come from a Secret"


# --------------------------------------------------------------------------- alerts and dashboard


def test_prometheus_rule_structure() -> None:
    """alerts.yaml is a PrometheusRule whose every alert has expr, for, severity, annotations and runbook."""
    (rule,) = _docs(ALERTS)
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["name"]
    assert rule["spec"]["groups"]
    for group in rule["spec"]["groups"]:
        assert group["name"]
        assert group["rules"]
    alerts = _alert_rules()
    names = [alert["alert"] for alert in alerts]
    assert len(names) == len(set(names))
    assert set(REQUIRED_ALERTS) <= set(names)
    for alert in alerts:
        assert set(alert) <= ALERT_FIELDS, alert["alert"]
        assert isinstance(alert["expr"], str)
        assert alert["expr"].strip()
        assert re.fullmatch(r"(\d+[smhdwy])+", alert["for"]), alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}
        annotations = alert["annotations"]
        assert annotations["summary"]
        assert annotations["description"]
        assert re.fullmatch(r"https://\S+#incident-runbook", annotations["runbook_url"])


def test_alert_expressions_use_known_metrics() -> None:
    """Every alert expression names only rotator's metrics, and each alert watches the metric it is about."""
    for alert in _alert_rules():
        metrics = _check_promql(alert["expr"], alert["alert"])
        if alert["alert"] in REQUIRED_ALERTS:
            assert REQUIRED_ALERTS[alert["alert"]] in metrics, alert["alert"]


def test_promql_name_extraction() -> None:
    """The PromQL scanner the checks rely on finds metrics and functions, not labels, ranges or variables."""
    metrics, functions = _promql_names(
        'sum by (secret) (increase(rotator_rotations_total{result="failed", secret=~"$secret"}'
        "[$__rate_interval])) > on (secret) group_left max(up) or vector(0)"
    )
    assert metrics == {"rotator_rotations_total", "up"}
    assert functions == {"sum", "increase", "max", "vector"}


def test_known_metrics_match_the_exporter() -> None:
    """The metric names the alerts and the dashboard may use are exactly the families rotator exports."""
    from rotator.metrics import Metrics

    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in Metrics().registry.collect()
    }
    assert exported == KNOWN_METRICS


def test_dashboard_is_a_valid_grafana_dashboard() -> None:
    """The dashboard is JSON with a modern schema, a templated Prometheus datasource and sane panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["title"]
    assert dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = _dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
    titles = " | ".join(panel["title"].lower() for panel in panels)
    for topic in ("age vs policy", "next rotations", "grace expiries", "rotation failures",
                  "notification failures", "backend errors", "circuit"):
        assert topic in titles, f"no panel about {topic}"


def test_dashboard_queries_use_known_metrics() -> None:
    """Every panel query and template variable query names only rotator's metrics."""
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in _dashboard_panels():
        for target in panel.get("targets", []):
            used |= _check_promql(target["expr"], f"panel {panel['title']!r}")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert match, variable["name"]
            assert match.group(1) in KNOWN_METRICS, variable["name"]
    # rotator_sink_deliveries_total has no panel yet (its alert-worthy failures also emit sink.failed events)
    assert KNOWN_METRICS - {"rotator_up", "rotator_build_info", "rotator_rotation_duration_seconds",
                            "rotator_sink_deliveries_total"} <= used


def test_runbook_section_covers_every_alert() -> None:
    """The operations notes have the `Incident runbook` section the alerts link to, naming every alert."""
    docs = [path for path in (ROOT / "README.md", DEPLOY / "README.md") if path.exists()]
    text = "\n".join(path.read_text() for path in docs)
    assert re.search(r"^#+ Incident runbook\s*$", text, re.MULTILINE)
    for name in REQUIRED_ALERTS:
        assert name in text, f"runbook does not mention {name}"
    for command in ("rotator plan", "--revoke-previous", "rotator rollback", "rotator audit verify"):
        assert command in text


def test_cli_accepts_the_arguments_the_manifests_pass() -> None:
    """Every option the Dockerfile CMD and both workloads pass exists on the `rotator` CLI they call."""
    from rotator.cli import cli

    def options(command: Any) -> set[str]:
        return {opt for param in command.params for opt in param.opts}

    (log_format,) = [param for param in cli.params if "--log-format" in param.opts]
    assert "json" in log_format.type.choices
    invocations = [json.loads(dict(_runtime_stage())["CMD"])]
    invocations += [_container(pod)["args"] for pod in _pod_specs().values()]
    for args in invocations:
        (position,) = [i for i, arg in enumerate(args) if arg in cli.commands]
        assert {a for a in args[:position] if a.startswith("-")} <= options(cli), args
        command = cli.commands[args[position]]
        assert {a for a in args[position + 1 :] if a.startswith("-")} <= options(command), args
