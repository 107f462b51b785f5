"""The command target against a real local HTTP key service driven by tiny issue/revoke/verify scripts."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.command_target import CommandTarget, CommandTargetConfig
from rotator.errors import CredentialRefused, OperationFailed, TargetDenied, TargetUnavailable
from rotator.target import Binding, Credential, Strategy, load_target_class
from rotator.testing.target_contract import TargetContract
from tests.key_service import KeyService

SCRIPTS = Path(__file__).resolve().parent / "key_scripts"


def script(name: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / f"{name}.py")]


def make_target(service: KeyService, *, url: str | None = None, token: str | None = None,
                **overrides: Any) -> CommandTarget:
    config: dict[str, Any] = {"issue": script("issue"), "revoke": script("revoke"), "verify": script("verify"),
                              "check": script("check"), "timeout": "20s",
                              "env": {"KEY_SERVICE_URL": url or service.url}, "fields": {"api": "key-service"}}
    config.update(overrides)
    admin = [Credential({"token": token or service.admin_token})]
    return CommandTarget(name="keys", config=CommandTargetConfig.model_validate(config), base_dir=SCRIPTS,
                         admin=lambda: admin)


@pytest.fixture
def service() -> Iterator[KeyService]:
    svc = KeyService()
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def target(service: KeyService) -> CommandTarget:
    return make_target(service)


@pytest.fixture
def make_binding() -> Callable[[Strategy], Binding]:
    counter = iter(range(1_000_000))

    def make(strategy: Strategy) -> Binding:
        user = f"svc{next(counter)}"
        return Binding(secret=f"keys/{user}", target="keys", username=user, strategy=strategy)
    return make


@pytest.fixture
def unreachable_target(service: KeyService) -> CommandTarget:
    down = KeyService()
    down.start()
    url = down.url
    down.stop()
    return make_target(service, url=url)


@pytest.fixture
def denied_target(service: KeyService) -> CommandTarget:
    return make_target(service, token="not-the-admin-token")


class TestCommandContract(TargetContract):
    """The shared target contract against the local key service."""


def _binding(user: str = "app") -> Binding:
    return Binding(secret="keys/app", target="keys", username=user, strategy=Strategy.DUAL)


def test_registered_as_entry_point() -> None:
    """`type: command` resolves through the rotator.targets entry-point group of the core distribution."""
    assert load_target_class("command") is CommandTarget


def test_issue_request_carries_no_secret_of_kept_credentials(service: KeyService, tmp_path: Path) -> None:
    """issue gets secret, username, current and keep as non-secret fields; the kept key's secret stays out."""
    target = make_target(service)
    first = target.issue(_binding(), "app", ())
    capture = tmp_path / "request.json"
    recorder = tmp_path / "record.py"
    recorder.write_text(f"import sys; open({str(capture)!r}, 'w').write(sys.stdin.read()); "
                        "print('{\"id\": \"k1\", \"api_key\": \"sk_recorded_value_123456\"}')\n")
    target = make_target(service, issue=[sys.executable, str(recorder)])
    issued = target.issue(_binding(), "app", (first,))
    request = json.loads(capture.read_text())
    assert request["protocol"] == 1
    assert request["action"] == "issue"
    assert request["secret"] == "keys/app"
    assert request["username"] == "app"
    assert request["current"] == {"id": first["id"], "username": "app", "api": "key-service"}
    assert request["keep"] == [request["current"]]
    assert first.secret not in capture.read_text()
    assert dict(issued) == {"id": "k1", "api_key": "sk_recorded_value_123456", "username": "app",
                            "api": "key-service"}


def test_issue_deletes_leftovers_not_kept(service: KeyService, target: CommandTarget) -> None:
    """The example issue script removes keys the store does not keep, so the service's 2-key limit holds."""
    binding = _binding()
    first = target.issue(binding, "app", ())
    target.issue(binding, "app", (first,))  # a crashed attempt: the store never kept this key
    third = target.issue(binding, "app", (first,))
    assert sorted(service.live_keys("app")) == sorted([first["id"], third["id"]])


def test_timeout_kills_the_command_and_its_children(service: KeyService) -> None:
    """A command that never answers is killed with its children: TargetUnavailable naming the timeout."""
    target = make_target(service, issue=script("hang"), timeout="1s")
    with pytest.raises(TargetUnavailable, match="timed out after 1s"):
        target.issue(_binding(), "app", ())


def test_secret_echoed_to_stderr_never_reaches_logs(service: KeyService, caplog: pytest.LogCaptureFixture,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    """A script that prints the request and the new key to stderr: neither appears in logs or our output."""
    target = make_target(service, issue=script("leaky_issue"))
    with caplog.at_level(logging.DEBUG):
        issued = target.issue(_binding(), "app", ())
        target.login(_binding(), issued)
        target.disable(_binding(), issued)
    out, err = capfd.readouterr()
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records) + out + err
    assert issued.secret not in text
    assert service.admin_token not in text
    assert any(getattr(r, "stderr_bytes", 0) > 0 for r in caplog.records)


def test_plain_text_output_is_not_quoted(service: KeyService) -> None:
    """issue printing the key as text (not JSON) fails without showing what it printed."""
    target = make_target(service, issue=script("noisy_issue"))
    with pytest.raises(OperationFailed, match="did not print a JSON object") as info:
        target.issue(_binding(), "app", ())
    (key_id,) = service.live_keys("app")
    assert service.keys[key_id][1] not in str(info.value)


def test_output_without_a_secret_field_is_refused(service: KeyService, tmp_path: Path) -> None:
    """issue output must hold a non-empty secret field; the error lists the fields it did get."""
    bad = tmp_path / "bad.py"
    bad.write_text("print('{\"id\": \"k1\"}')\n")
    with pytest.raises(OperationFailed, match=r"no secret field.*fields: id"):
        make_target(service, issue=[sys.executable, str(bad)]).issue(_binding(), "app", ())


def test_verify_refusal_and_missing_verify(service: KeyService, caplog: pytest.LogCaptureFixture) -> None:
    """A revoked key fails verify (CredentialRefused); without verify, login only warns."""
    target = make_target(service)
    key = target.issue(_binding(), "app", ())
    target.disable(_binding(), key)
    with pytest.raises(CredentialRefused, match="exit status 1"):
        target.login(_binding(), key)
    unchecked = make_target(service, verify=None)
    with caplog.at_level(logging.WARNING, logger="rotator.targets.command"):
        unchecked.login(_binding(), key)
    assert any("not checked" in r.getMessage() for r in caplog.records)


def test_exit_codes_map_to_errors(service: KeyService, tmp_path: Path) -> None:
    """Exit 75 is TargetUnavailable, 77 TargetDenied, anything else OperationFailed (exit 1)."""
    for status, error in ((75, TargetUnavailable), (77, TargetDenied), (3, OperationFailed)):
        program = tmp_path / f"exit{status}.py"
        program.write_text(f"import sys; sys.stdin.read(); sys.exit({status})\n")
        target = make_target(service, revoke=[sys.executable, str(program)])
        with pytest.raises(error, match=f"status {status}"):
            target.disable(_binding(), Credential({"username": "app", "id": "k", "api_key": "x" * 20}))


def test_values_never_in_argv_or_environment(service: KeyService, tmp_path: Path) -> None:
    """The command's argv and environment hold no secret: only the configured env and ROTATOR_* names."""
    dump = tmp_path / "seen.json"
    spy = tmp_path / "spy.py"
    spy.write_text(f"import json, os, sys; sys.stdin.read(); json.dump({{'argv': sys.argv, "
                   f"'env': dict(os.environ)}}, open({str(dump)!r}, 'w'))\n")
    key = Credential({"username": "app", "id": "k", "api_key": "sk_" + "q" * 30})
    make_target(service, revoke=[sys.executable, str(spy)]).disable(_binding(), key)
    seen = json.loads(dump.read_text())
    assert key.secret not in json.dumps(seen)
    assert service.admin_token not in json.dumps(seen)
    assert seen["env"]["ROTATOR_ACTION"] == "revoke"
    assert "AWS_SECRET_ACCESS_KEY" not in seen["env"]
    assert set(seen["env"]) - set(os.environ) <= {"KEY_SERVICE_URL", "ROTATOR_TARGET", "ROTATOR_ACTION",
                                                  "LC_CTYPE", "PWD"}


def test_missing_program_is_named(service: KeyService) -> None:
    """A program that cannot start fails naming the step and the program."""
    target = make_target(service, issue=["./no-such-program"])
    with pytest.raises(OperationFailed, match=r"issue command \./no-such-program could not start"):
        target.issue(_binding(), "app", ())


def test_enable_command_gets_the_credential(service: KeyService, tmp_path: Path) -> None:
    """With `enable` configured, a rollback's enable runs it with the full credential on stdin."""
    seen = tmp_path / "enable.json"
    recorder = tmp_path / "enable.py"
    recorder.write_text(f"import sys; open({str(seen)!r}, 'w').write(sys.stdin.read())\n")
    target = make_target(service, enable=[sys.executable, str(recorder)])
    key = Credential({"username": "app", "id": "k9", "api_key": "sk_" + "e" * 30})
    target.enable(_binding(), key)
    request = json.loads(seen.read_text())
    assert request["action"] == "enable"
    assert request["credential"] == dict(key)
    assert request["admin"] == {"token": service.admin_token}
