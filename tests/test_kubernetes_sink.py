"""The kubernetes sink against the API-server emulator: compare-and-set updates, rollout restarts at most
once per rotation, paused Deployments, least-privilege RBAC (the Role in deploy/k8s-sinks) and errors."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.errors import ExitCode
from rotator.keyset import SecretValue
from rotator.sinks.base import Content, SinkError
from tests.k8s_emulator import KubernetesEmulator
from tests.test_k8s_emulator import TOKEN, USER, kubeconfig

pytest.importorskip("kubernetes", reason="pip install -e providers/kubernetes")
from rotator_kubernetes.config import KubernetesSinkConfig
from rotator_kubernetes.sink import PENDING, RESTARTED_AT, VERSIONS, KubernetesSink

ROLE = Path(__file__).resolve().parent.parent / "deploy" / "k8s-sinks" / "role.yaml"
CURRENT, PREVIOUS = "current-value-0123456789", "previous-value-0123456789"


def role_rules(path: Path = ROLE) -> list[tuple[str, str, str | None, set[str]]]:
    """The deploy/ Role as emulator grants: the sink must work with exactly these permissions."""
    (role,) = [d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Role"]
    rules = []
    for rule in role["rules"]:
        for resource in rule["resources"]:
            for name in rule.get("resourceNames") or [None]:
                rules.append((resource, role["metadata"]["namespace"], name, set(rule["verbs"])))
    return rules


@pytest.fixture
def emulator() -> Iterator[KubernetesEmulator]:
    """An emulator with the example's Deployments and the rotator token bound to the deploy/ Role."""
    with KubernetesEmulator() as emu:
        emu.grant(TOKEN, USER, role_rules())
        emu.add_deployment("payments", "api")
        emu.add_deployment("payments", "worker")
        yield emu
    assert emu.internal_errors == []


@pytest.fixture
def make_sink(emulator: KubernetesEmulator, tmp_path: Path) -> Iterator[object]:
    """Build sinks for the emulator through a kubeconfig file; closed at teardown."""
    made: list[KubernetesSink] = []
    config_file = kubeconfig(tmp_path / "kubeconfig", emulator.address)

    def build(**overrides: object) -> KubernetesSink:
        fields: dict[str, object] = {"type": "kubernetes", "namespace": "payments", "secret": "partner-api",
                                     "key": "API_KEY", "restart": ["deployment/api", "deployment/worker"],
                                     "kubeconfig": str(config_file), **overrides}
        made.append(KubernetesSink(config=KubernetesSinkConfig.model_validate(fields), base_dir=tmp_path))
        return made[-1]

    yield build
    for sink in made:
        sink.close()


def content(current: str = CURRENT, previous: str | None = None) -> Content:
    """Desired content: API_KEY, and API_KEY_PREVIOUS during grace."""
    values = {"API_KEY": SecretValue(current)}
    versions = {"API_KEY": f"v-{current[:7]}"}
    if previous is not None:
        values["API_KEY_PREVIOUS"] = SecretValue(previous)
        versions["API_KEY_PREVIOUS"] = f"v-{previous[:8]}"
    return Content(values, versions, ("partner-api",), frozenset({"API_KEY", "API_KEY_PREVIOUS"}))


def test_updates_secret_then_restarts_each_deployment_once(emulator: KubernetesEmulator, make_sink) -> None:
    """A change is one GET + PUT, one strategic-merge restartedAt patch per Deployment, then the
    pending annotation is cleared; other keys of the Secret stay."""
    emulator.add_secret("payments", "partner-api", {"API_KEY": "old-value-000000000", "UNRELATED": "keep"})
    sink = make_sink()
    delivery = sink.deliver(content(CURRENT, PREVIOUS))
    assert delivery.wrote
    assert delivery.reloaded == ("deployment/api", "deployment/worker")
    assert emulator.secret_data("payments", "partner-api") == {"API_KEY": CURRENT, "API_KEY_PREVIOUS": PREVIOUS,
                                                               "UNRELATED": "keep"}
    assert emulator.rollouts == {("payments", "api"): 1, ("payments", "worker"): 1}
    patches = [r for r in emulator.writes() if r[0] == "PATCH"]
    assert {r[2] for r in patches} == {"application/strategic-merge-patch+json"}
    deployment = emulator.get("deployments", "payments", "api")
    assert deployment is not None
    stamp = deployment["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", stamp)  # RFC 3339, local offset
    secret = emulator.get("secrets", "payments", "partner-api")
    assert secret is not None
    annotations = secret["metadata"]["annotations"]
    assert PENDING not in annotations
    assert annotations[VERSIONS] == "API_KEY=v-current,API_KEY_PREVIOUS=v-previous"


def test_same_content_twice_is_one_get_and_no_restart(emulator: KubernetesEmulator, make_sink) -> None:
    """Idempotent: delivering what the Secret already holds writes nothing and restarts nothing."""
    emulator.add_secret("payments", "partner-api", {})
    make_sink().deliver(content())
    before = len(emulator.requests)
    delivery = make_sink().deliver(content())
    assert not delivery.changed
    assert emulator.requests[before:] == [("GET", "/api/v1/namespaces/payments/secrets/partner-api", None)]
    assert emulator.rollouts == {("payments", "api"): 1, ("payments", "worker"): 1}


def test_grace_end_removes_the_previous_key(emulator: KubernetesEmulator, make_sink) -> None:
    """When the previous value leaves grace, API_KEY_PREVIOUS disappears from the Secret."""
    emulator.add_secret("payments", "partner-api", {})
    make_sink().deliver(content(CURRENT, PREVIOUS))
    make_sink().deliver(content(CURRENT))
    assert emulator.secret_data("payments", "partner-api") == {"API_KEY": CURRENT}


def test_conflict_reads_again_and_keeps_the_other_writer(emulator: KubernetesEmulator, make_sink) -> None:
    """A writer racing between our GET and PUT makes the PUT 409; the sink reads again and merges."""
    emulator.add_secret("payments", "partner-api", {"API_KEY": "old-value-000000000"})

    def other_writer() -> None:
        obj = emulator.get("secrets", "payments", "partner-api")
        assert obj is not None
        obj["data"]["OTHER"] = base64.b64encode(b"theirs").decode()
        emulator._store("secrets", "payments", "partner-api", obj, old=obj)

    emulator.before_write.append(other_writer)
    make_sink(restart=[]).deliver(content())
    assert emulator.secret_data("payments", "partner-api") == {"API_KEY": CURRENT, "OTHER": "theirs"}
    puts = [r for r in emulator.writes() if r[0] == "PUT"]
    assert len(puts) == 2  # the first lost with 409, the second won


def test_missing_secret_is_created_when_allowed(emulator: KubernetesEmulator, make_sink) -> None:
    """With create permission the Secret is created with the value and the Deployments restarted."""
    emulator.grant(TOKEN, USER, [*role_rules(), ("secrets", "payments", None, {"create"})])
    delivery = make_sink().deliver(content())
    assert delivery.wrote
    assert len(delivery.reloaded) == 2
    assert emulator.secret_data("payments", "partner-api") == {"API_KEY": CURRENT}
    secret = emulator.get("secrets", "payments", "partner-api")
    assert secret is not None
    assert PENDING not in secret["metadata"]["annotations"]


def test_missing_secret_without_create_permission_names_the_fix(make_sink) -> None:
    """The deploy/ Role has no create: the error says 403 and points at the Role."""
    with pytest.raises(SinkError) as caught:
        make_sink().deliver(content())
    assert caught.value.exit_code == ExitCode.BACKEND
    assert not caught.value.transient
    assert "kubernetes:payments/partner-api: create the Secret: HTTP 403" in caught.value.message
    assert caught.value.hint is not None
    assert "kubectl -n payments create secret generic partner-api" in caught.value.hint


def test_paused_deployment_is_skipped_with_a_note(emulator: KubernetesEmulator, make_sink) -> None:
    """Like kubectl, a paused Deployment is not restarted; the note says how to resume."""
    emulator.add_deployment("payments", "worker", paused=True)
    emulator.add_secret("payments", "partner-api", {})
    delivery = make_sink().deliver(content())
    assert delivery.reloaded == ("deployment/api",)
    assert delivery.skipped == ("deployment/worker is paused: not restarted (run `kubectl rollout resume "
                                "deployment/worker`)",)
    worker = emulator.get("deployments", "payments", "worker")
    assert worker is not None
    assert "annotations" not in worker["spec"]["template"]["metadata"]


def test_failed_restart_is_finished_next_pass_without_restarting_twice(emulator: KubernetesEmulator,
                                                                        make_sink) -> None:
    """api restarts, worker's patch fails: the next pass restarts only worker (at most once per rotation)."""
    emulator.add_secret("payments", "partner-api", {})
    emulator.grant(TOKEN, USER, [r for r in role_rules() if r[2] != "worker"])  # worker: forbidden for now
    with pytest.raises(SinkError, match="deployment/worker: HTTP 403"):
        make_sink().deliver(content())
    secret = emulator.get("secrets", "payments", "partner-api")
    assert secret is not None
    assert json.loads(secret["metadata"]["annotations"][PENDING]) == ["worker"]
    emulator.grant(TOKEN, USER, role_rules())
    delivery = make_sink().deliver(content())
    assert (delivery.wrote, delivery.reloaded) == (False, ("deployment/worker",))
    assert emulator.rollouts == {("payments", "api"): 1, ("payments", "worker"): 1}


def test_patch_only_permission_still_restarts(emulator: KubernetesEmulator, make_sink) -> None:
    """Without `get` on Deployments the sink patches without the paused check."""
    emulator.add_secret("payments", "partner-api", {})
    rules = [(r, ns, n, v - {"get"} if r == "deployments" else v) for r, ns, n, v in role_rules()]
    emulator.grant(TOKEN, USER, rules)
    assert make_sink().deliver(content()).reloaded == ("deployment/api", "deployment/worker")


def test_immutable_secret_is_a_clear_error(emulator: KubernetesEmulator, make_sink) -> None:
    """An immutable Secret cannot be rotated in place; the error says so and is not retried."""
    emulator.add_secret("payments", "partner-api", {"API_KEY": "x"}, immutable=True)
    with pytest.raises(SinkError, match="immutable") as caught:
        make_sink().deliver(content())
    assert not caught.value.transient


def test_unreachable_api_server_is_transient_exit_4(emulator: KubernetesEmulator, make_sink) -> None:
    """Connection refused is a transient SinkError with exit code 4, naming the target."""
    sink = make_sink(timeout=2)
    emulator.stop()
    with pytest.raises(SinkError) as caught:
        sink.deliver(content())
    assert caught.value.transient
    assert caught.value.exit_code == ExitCode.BACKEND
    assert caught.value.message.startswith("kubernetes:payments/partner-api: read the Secret: ")


def test_server_errors_are_transient(emulator: KubernetesEmulator, make_sink) -> None:
    """A 503 from the API server is retried by the reconcile step (transient), exit code 4."""
    emulator.fail_next.append(503)
    with pytest.raises(SinkError) as caught:
        make_sink().deliver(content())
    assert caught.value.transient
    assert caught.value.exit_code == ExitCode.BACKEND


def test_values_never_appear_in_errors_or_requests_log(emulator: KubernetesEmulator, make_sink) -> None:
    """Error messages and the content repr name targets and keys, never values."""
    emulator.add_secret("payments", "partner-api", {}, immutable=True)
    with pytest.raises(SinkError) as caught:
        make_sink().deliver(content(CURRENT, PREVIOUS))
    text = f"{caught.value.message} {caught.value.hint} {content(CURRENT, PREVIOUS)!r}"
    assert CURRENT not in text
    assert PREVIOUS not in text


def test_config_rejects_other_workload_kinds() -> None:
    """restart entries are deployment/NAME, as kubectl spells them."""
    with pytest.raises(ValueError, match="must be deployment/NAME"):
        KubernetesSinkConfig.model_validate({"type": "kubernetes", "namespace": "payments", "secret": "s",
                                             "key": "K", "restart": ["pod/x"]})


def test_role_validates_strictly_and_grants_nothing_more() -> None:
    """deploy/k8s-sinks/role.yaml validates with kubernetes-validate --strict; it names its objects, has no
    wildcard, no list/watch/create/delete, and binds the rotator service account."""
    from tests.test_deploy import OLDEST_K8S

    utils = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate is not installed")
    docs = list(yaml.safe_load_all(ROLE.read_text()))
    for doc in docs:
        for version in (OLDEST_K8S, utils.latest_version()):
            utils.validate(doc, version, strict=True)
    (role,) = [d for d in docs if d["kind"] == "Role"]
    verbs = {(r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    assert verbs == {("secrets", "get"), ("secrets", "update"), ("deployments", "get"), ("deployments", "patch")}
    assert all(r["resourceNames"] and "*" not in json.dumps(r) for r in role["rules"])
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rotator", "namespace": "rotator"}]


# --- the same sink code against any API server: the emulator here, a real cluster when one is named ---------


class _SinkContract:
    """Behaviour observed only through the official client, so it holds on the emulator and on a cluster."""

    namespace = "payments"

    @pytest.fixture
    def client_apis(self, kubeconfig_file: Path) -> Iterator[tuple[object, object]]:
        """CoreV1Api and AppsV1Api from the same kubeconfig the sink uses."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig_file), client_configuration=cfg, persist_config=False)
        with client.ApiClient(cfg) as api_client:
            yield client.CoreV1Api(api_client), client.AppsV1Api(api_client)

    @pytest.fixture
    def objects(self, client_apis: tuple[object, object]) -> Iterator[tuple[str, str, str]]:
        """A fresh Secret and two Deployments (one paused), deleted afterwards: (secret, live, paused)."""
        from kubernetes import client

        core, apps = client_apis
        suffix = uuid.uuid4().hex[:8]
        secret, live, paused = f"rotator-ct-{suffix}", f"rotator-ct-{suffix}-live", f"rotator-ct-{suffix}-paused"
        core.create_namespaced_secret(self.namespace, client.V1Secret(  # type: ignore[attr-defined]
            metadata=client.V1ObjectMeta(name=secret), data={"KEEP": base64.b64encode(b"theirs").decode()}))
        for name, is_paused in ((live, False), (paused, True)):
            labels = {"app": name}
            apps.create_namespaced_deployment(self.namespace, client.V1Deployment(  # type: ignore[attr-defined]
                metadata=client.V1ObjectMeta(name=name), spec=client.V1DeploymentSpec(
                    replicas=0, paused=is_paused, selector=client.V1LabelSelector(match_labels=labels),
                    template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels),
                                                      spec=client.V1PodSpec(containers=[client.V1Container(
                                                          name="app", image="registry.k8s.io/pause:3.9")])))))
        yield secret, live, paused
        core.delete_namespaced_secret(secret, self.namespace)  # type: ignore[attr-defined]
        for name in (live, paused):
            apps.delete_namespaced_deployment(name, self.namespace)  # type: ignore[attr-defined]

    def _sink(self, kubeconfig_file: Path, secret: str, restart: list[str]) -> KubernetesSink:
        config = KubernetesSinkConfig.model_validate({
            "type": "kubernetes", "namespace": self.namespace, "secret": secret, "key": "API_KEY",
            "restart": restart, "kubeconfig": str(kubeconfig_file), "create": False})
        return KubernetesSink(config=config, base_dir=kubeconfig_file.parent)

    def test_delivers_restarts_once_and_is_idempotent(self, kubeconfig_file: Path, client_apis: Any,
                                                      objects: tuple[str, str, str]) -> None:
        """Data lands beside foreign keys; the live Deployment gets restartedAt, the paused one is skipped;
        delivering again leaves the Secret's resourceVersion and the annotation alone."""
        core, apps = client_apis
        secret, live, paused = objects
        sink = self._sink(kubeconfig_file, secret, [f"deployment/{live}", f"deployment/{paused}"])
        try:
            first = sink.deliver(content(CURRENT, PREVIOUS))
            assert first.reloaded == (f"deployment/{live}",)
            assert first.skipped[0].startswith(f"deployment/{paused} is paused")
            stored = core.read_namespaced_secret(secret, self.namespace)
            data = {k: base64.b64decode(v).decode() for k, v in stored.data.items()}
            assert data == {"KEEP": "theirs", "API_KEY": CURRENT, "API_KEY_PREVIOUS": PREVIOUS}
            stamp = apps.read_namespaced_deployment(live, self.namespace).spec.template.metadata.annotations
            assert RESTARTED_AT in stamp
            assert not (apps.read_namespaced_deployment(paused, self.namespace).spec.template.metadata
                        .annotations or {}).get(RESTARTED_AT)
            version = core.read_namespaced_secret(secret, self.namespace).metadata.resource_version
            assert not sink.deliver(content(CURRENT, PREVIOUS)).changed
            assert core.read_namespaced_secret(secret, self.namespace).metadata.resource_version == version
            again = apps.read_namespaced_deployment(live, self.namespace).spec.template.metadata.annotations
            assert again[RESTARTED_AT] == stamp[RESTARTED_AT]
            sink.deliver(content(CURRENT))
            after = core.read_namespaced_secret(secret, self.namespace).data
            assert set(after) == {"KEEP", "API_KEY"}
        finally:
            sink.close()


class TestSinkContractOnEmulator(_SinkContract):
    """The contract on tests/k8s_emulator.py."""

    @pytest.fixture
    def kubeconfig_file(self, tmp_path: Path) -> Iterator[Path]:
        """An emulator that grants everything in the namespace, and a kubeconfig for it."""
        with KubernetesEmulator() as emu:
            emu.grant(TOKEN, USER, [("secrets", self.namespace, None, {"get", "update", "create", "delete"}),
                                    ("deployments", self.namespace, None, {"get", "patch", "create", "delete"})])
            yield kubeconfig(tmp_path / "kubeconfig", emu.address)
        assert emu.internal_errors == []


@pytest.mark.skipif(not os.environ.get("ROTATOR_K8S_CONTRACT_KUBECONFIG"),
                    reason="set ROTATOR_K8S_CONTRACT_KUBECONFIG (and _NAMESPACE) to run against a real cluster")
class TestSinkContractOnCluster(_SinkContract):
    """The same contract on a real cluster (kind, minikube): objects are created and deleted in
    ROTATOR_K8S_CONTRACT_NAMESPACE (default ``default``)."""

    namespace = os.environ.get("ROTATOR_K8S_CONTRACT_NAMESPACE", "default")

    @pytest.fixture
    def kubeconfig_file(self) -> Path:
        """The kubeconfig named by the environment."""
        return Path(os.environ["ROTATOR_K8S_CONTRACT_KUBECONFIG"])
