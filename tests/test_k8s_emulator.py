"""The Kubernetes emulator answers like the API server (shared/reference section 7), driven by the official
``kubernetes`` client exactly as rotator_kubernetes drives it: this keeps the emulator honest."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.k8s_emulator import KubernetesEmulator

kubernetes = pytest.importorskip("kubernetes", reason="pip install -e providers/kubernetes")
from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

TOKEN = "tok-rotator"
USER = "system:serviceaccount:rotator:rotator"


def kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    """A kubeconfig file pointing at ``server`` with a bearer token (what the sink tests hand rotator)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": server}}],
        "users": [{"name": "rotator", "user": {"token": token}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "rotator"}}],
    }))
    return path


@pytest.fixture
def emulator() -> Iterator[KubernetesEmulator]:
    """An emulator where the rotator token may do everything in namespace ``payments``."""
    with KubernetesEmulator() as emu:
        emu.grant(TOKEN, USER, [("secrets", "payments", None, {"get", "update", "create", "patch"}),
                                ("deployments", "payments", None, {"get", "patch", "update"})])
        yield emu
    assert emu.internal_errors == []


@pytest.fixture
def apis(emulator: KubernetesEmulator) -> Iterator[tuple[client.CoreV1Api, client.AppsV1Api]]:
    """The client configured as in the reference: host, Bearer api_key."""
    cfg = client.Configuration()
    cfg.host = emulator.address
    cfg.api_key = {"authorization": TOKEN}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api_client = client.ApiClient(cfg)
    yield client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    api_client.close()


def _status(exc: ApiException) -> dict[str, object]:
    return json.loads(exc.body)


def test_read_returns_base64_data_and_resource_version(emulator: KubernetesEmulator, apis: tuple) -> None:
    """GET sends the bearer token and returns a V1Secret whose data is still base64."""
    emulator.add_secret("payments", "partner-api", {"OTHER": "x"})
    secret = apis[0].read_namespaced_secret("partner-api", "payments")
    assert base64.b64decode(secret.data["OTHER"]) == b"x"
    assert secret.metadata.resource_version.isdigit()
    assert emulator.requests[-1] == ("GET", "/api/v1/namespaces/payments/secrets/partner-api", None)


def test_stale_resource_version_gets_the_exact_conflict_status(emulator: KubernetesEmulator, apis: tuple) -> None:
    """PUT with an old resourceVersion is 409 with apimachinery's Conflict body; nothing is written."""
    core = apis[0]
    emulator.add_secret("payments", "s", {"A": "1"})
    stale = core.read_namespaced_secret("s", "payments")
    fresh = core.read_namespaced_secret("s", "payments")
    fresh.data = {"A": base64.b64encode(b"2").decode()}
    core.replace_namespaced_secret("s", "payments", fresh)
    stale.data = {"A": base64.b64encode(b"3").decode()}
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_secret("s", "payments", stale)
    assert caught.value.status == 409
    assert _status(caught.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Operation cannot be fulfilled on secrets "s": the object has been modified; please apply '
                   "your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": "s", "kind": "secrets"}, "code": 409}
    assert emulator.secret_data("payments", "s") == {"A": "2"}


def test_put_without_content_type_and_without_resource_version(emulator: KubernetesEmulator, apis: tuple) -> None:
    """The client sends PUT with no Content-Type; without resourceVersion the update is unconditional."""
    core = apis[0]
    emulator.add_secret("payments", "s", {"A": "1"})
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="s"), data={"A": base64.b64encode(b"9").decode()})
    core.replace_namespaced_secret("s", "payments", body)
    assert emulator.requests[-1][0] == "PUT"
    assert emulator.requests[-1][2] is None
    assert emulator.secret_data("payments", "s") == {"A": "9"}


def test_string_data_merges_into_data_and_is_never_read_back(emulator: KubernetesEmulator, apis: tuple) -> None:
    """stringData overrides keys of data on write and does not come back on read."""
    core = apis[0]
    emulator.add_secret("payments", "s", {"A": "1", "B": "2"})
    secret = core.read_namespaced_secret("s", "payments")
    secret.string_data = {"B": "two"}
    core.replace_namespaced_secret("s", "payments", secret)
    again = core.read_namespaced_secret("s", "payments")
    assert again.string_data is None
    assert emulator.secret_data("payments", "s") == {"A": "1", "B": "two"}


def test_immutable_secret_refuses_new_data(emulator: KubernetesEmulator, apis: tuple) -> None:
    """immutable: true freezes data: 422 Invalid."""
    core = apis[0]
    emulator.add_secret("payments", "s", {"A": "1"}, immutable=True)
    secret = core.read_namespaced_secret("s", "payments")
    secret.data = {"A": base64.b64encode(b"2").decode()}
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_secret("s", "payments", secret)
    assert caught.value.status == 422
    assert "immutable" in _status(caught.value)["message"]


def test_missing_secret_is_404_not_found_status(apis: tuple) -> None:
    """A missing object is 404 with reason NotFound and the plural kind."""
    with pytest.raises(ApiException) as caught:
        apis[0].read_namespaced_secret("nope", "payments")
    assert caught.value.status == 404
    assert _status(caught.value)["details"] == {"name": "nope", "kind": "secrets"}
    assert _status(caught.value)["message"] == 'secrets "nope" not found'


def test_create_twice_is_already_exists(apis: tuple) -> None:
    """POST creates (201); a second POST of the same name is 409 AlreadyExists."""
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="n"), data={})
    created = apis[0].create_namespaced_secret("payments", body)
    assert created.metadata.uid
    with pytest.raises(ApiException) as caught:
        apis[0].create_namespaced_secret("payments", body)
    assert (caught.value.status, _status(caught.value)["reason"]) == (409, "AlreadyExists")


def test_rollout_restart_patch_is_strategic_merge_and_rolls_out(emulator: KubernetesEmulator, apis: tuple) -> None:
    """A dict patch goes as strategic-merge; the template annotation changes, containers stay, one rollout."""
    emulator.add_deployment("payments", "api")
    patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "t1"}}}}}
    result = apis[1].patch_namespaced_deployment("api", "payments", patch)
    assert emulator.requests[-1][2] == "application/strategic-merge-patch+json"
    assert result.spec.template.metadata.annotations == {"kubectl.kubernetes.io/restartedAt": "t1"}
    assert [c.name for c in result.spec.template.spec.containers] == ["app"]
    assert result.metadata.generation == 2
    assert emulator.rollouts[("payments", "api")] == 1


def test_strategic_merge_merges_containers_by_name(emulator: KubernetesEmulator, apis: tuple) -> None:
    """Lists with a merge key (containers, env) merge by it instead of being replaced."""
    emulator.add_deployment("payments", "api")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "X", "value": "1"}]}]}}}}
    result = apis[1].patch_namespaced_deployment("api", "payments", patch)
    (container,) = result.spec.template.spec.containers
    assert container.image == "example/app:1"
    assert [e.name for e in container.env] == ["MODE", "X"]


def test_merge_patch_replaces_lists(emulator: KubernetesEmulator, apis: tuple) -> None:
    """application/merge-patch+json is RFC 7386: a list in the patch replaces the stored one."""
    emulator.add_deployment("payments", "api")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "other", "image": "x:2"}]}}}}
    result = apis[1].patch_namespaced_deployment("api", "payments", patch,
                                                 _content_type="application/merge-patch+json")
    assert [c.name for c in result.spec.template.spec.containers] == ["other"]


def test_json_patch_list_body(emulator: KubernetesEmulator, apis: tuple) -> None:
    """A list body goes as application/json-patch+json (RFC 6902)."""
    emulator.add_deployment("payments", "api")
    result = apis[1].patch_namespaced_deployment("api", "payments",
                                                 [{"op": "replace", "path": "/spec/replicas", "value": 5}])
    assert emulator.requests[-1][2] == "application/json-patch+json"
    assert result.spec.replicas == 5


def test_other_patch_content_type_is_415(emulator: KubernetesEmulator, apis: tuple) -> None:
    """Anything but the three patch types is 415 Unsupported Media Type."""
    emulator.add_deployment("payments", "api")
    with pytest.raises(ApiException) as caught:
        apis[1].patch_namespaced_deployment("api", "payments", {"spec": {}},
                                            _content_type="application/apply-patch+yaml")
    assert caught.value.status == 415


def test_forbidden_names_user_verb_and_resource(emulator: KubernetesEmulator) -> None:
    """A token without the verb gets 403 Forbidden in the API server's wording; an unknown token 401."""
    emulator.grant("narrow", USER, [("secrets", "payments", "only-this", {"get"})])
    emulator.add_secret("payments", "other", {"A": "1"})
    cfg = client.Configuration()
    cfg.host = emulator.address
    cfg.api_key, cfg.api_key_prefix = {"authorization": "narrow"}, {"authorization": "Bearer"}
    with client.ApiClient(cfg) as api_client:
        core = client.CoreV1Api(api_client)
        with pytest.raises(ApiException) as caught:
            core.read_namespaced_secret("other", "payments")
        assert caught.value.status == 403
        assert _status(caught.value)["message"] == (
            f'secrets "other" is forbidden: User "{USER}" cannot get resource "secrets" in API group "" in the '
            'namespace "payments"')
        cfg.api_key = {"authorization": "wrong"}
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(client.ApiClient(cfg)).read_namespaced_secret("other", "payments")
        assert caught.value.status == 401


def test_kubeconfig_loading_reaches_the_emulator(emulator: KubernetesEmulator, tmp_path: Path) -> None:
    """load_kube_config with a token user talks to the emulator (the path the sink uses outside a pod)."""
    from kubernetes import config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig(tmp_path / "kc", emulator.address)),
                            client_configuration=cfg, persist_config=False)
    emulator.add_secret("payments", "s", {"A": "1"})
    with client.ApiClient(cfg) as api_client:
        assert client.CoreV1Api(api_client).read_namespaced_secret("s", "payments").metadata.name == "s"
