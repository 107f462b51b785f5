"""The behaviour every target plugin must show, as a pytest mixin gated on declared capabilities.

A plugin's test module subclasses :class:`TargetContract` and provides four fixtures:

- ``target``: a ready :class:`~rotator.target.Target` against a real server, with a working admin.
- ``make_binding``: ``(strategy) -> Binding`` giving a fresh binding (unique identities) the admin may manage.
- ``unreachable_target``: the same target type configured at an address where nothing listens.
- ``denied_target``: the same target type whose admin credential is wrong.

Tests for a strategy the target does not declare are skipped with a line saying so.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

import pytest

from rotator.errors import CredentialRefused, TargetDenied, TargetUnavailable
from rotator.target import Binding, Capability, Credential, Strategy, Target

__all__ = ["TargetContract", "new_credential"]

MakeBinding = Callable[[Strategy], Binding]


def new_credential(target: Target, binding: Binding, username: str | None = None,
                   keep: Sequence[Credential] = ()) -> Credential:
    """A fresh credential for ``username`` (default: the binding's): issued by ``ISSUES`` targets, else generated.

    ``keep`` is what an ``ISSUES`` target must not delete to make room (IAM deletes every other key of the user)."""
    user = username or binding.username
    if Capability.ISSUES in target.capabilities:
        return target.issue(binding, user, tuple(keep))
    password = secrets.token_urlsafe(24)
    return Credential({"username": user, "password": password, **target.fields(binding)})


def _need(target: Target, capability: Capability) -> None:
    if capability not in target.capabilities:
        pytest.skip(f"{target.type_name} does not declare {capability}")


def _first_step(target: Target, binding: Binding) -> None:
    """The first call a rotation makes on the target: ``issue`` for ``ISSUES`` targets, else ``enable``."""
    if Capability.ISSUES in target.capabilities:
        target.issue(binding, binding.username, ())
    else:
        target.enable(binding, Credential({"username": binding.username, "password": "x" * 20}))


def _strategies(target: Target) -> list[Strategy]:
    return [s for s in Strategy if Capability(s.value) in target.capabilities]


class TargetContract:
    """Mixin: subclass it in a plugin's test module and provide the fixtures named in the module docstring."""

    def test_enable_then_login(self, target: Target, make_binding: MakeBinding) -> None:
        """A credential enabled on the target logs in over a real connection, for every declared strategy."""
        for strategy in _strategies(target):
            binding = make_binding(strategy)
            target.prepare(binding)
            credential = new_credential(target, binding)
            target.enable(binding, credential)
            target.login(binding, credential)

    def test_enable_and_disable_are_idempotent(self, target: Target, make_binding: MakeBinding) -> None:
        """Repeating enable or disable (a step retried after a crash) leaves the target as one call would."""
        binding = make_binding(_strategies(target)[0])
        target.prepare(binding)
        target.prepare(binding)
        credential = new_credential(target, binding)
        target.enable(binding, credential)
        target.enable(binding, credential)
        target.login(binding, credential)
        target.disable(binding, credential)
        target.disable(binding, credential)
        with pytest.raises(CredentialRefused):
            target.login(binding, credential)

    def test_wrong_secret_is_refused(self, target: Target, make_binding: MakeBinding) -> None:
        """login raises CredentialRefused (not a driver error) for a wrong secret."""
        binding = make_binding(_strategies(target)[0])
        target.prepare(binding)
        credential = new_credential(target, binding)
        target.enable(binding, credential)
        field = next(k for k in ("password", "secret_access_key", "secret", "token", "api_key", "key")
                     if k in credential)
        wrong = credential.with_fields(**{field: secrets.token_urlsafe(24)})
        with pytest.raises(CredentialRefused) as info:
            target.login(binding, wrong)
        assert credential.secret not in str(info.value)
        assert wrong.secret not in str(info.value)

    def test_single_replaces_the_password(self, target: Target, make_binding: MakeBinding) -> None:
        """single: enabling a new credential for the identity makes the old one stop logging in."""
        _need(target, Capability.SINGLE)
        binding = make_binding(Strategy.SINGLE)
        target.prepare(binding)
        old, new = new_credential(target, binding), new_credential(target, binding)
        target.enable(binding, old)
        target.enable(binding, new)
        target.login(binding, new)
        with pytest.raises(CredentialRefused):
            target.login(binding, old)

    def test_dual_holds_two_credentials(self, target: Target, make_binding: MakeBinding) -> None:
        """dual: two credentials of one identity both log in until one is disabled."""
        _need(target, Capability.DUAL)
        binding = make_binding(Strategy.DUAL)
        target.prepare(binding)
        old = new_credential(target, binding)
        target.enable(binding, old)
        new = new_credential(target, binding, keep=(old,))
        target.enable(binding, new)
        target.login(binding, old)
        target.login(binding, new)
        target.disable(binding, old)
        target.login(binding, new)
        with pytest.raises(CredentialRefused):
            target.login(binding, old)

    def test_alternating_uses_two_identities(self, target: Target, make_binding: MakeBinding) -> None:
        """alternating: both identities exist after prepare and each logs in with its own password."""
        _need(target, Capability.ALTERNATING)
        binding = make_binding(Strategy.ALTERNATING)
        target.prepare(binding)
        first, second = binding.identities()
        one = new_credential(target, binding, first)
        two = new_credential(target, binding, second)
        target.enable(binding, one)
        target.enable(binding, two)
        target.login(binding, one)
        target.login(binding, two)
        target.disable(binding, one)
        target.login(binding, two)
        with pytest.raises(CredentialRefused):
            target.login(binding, one)
        target.enable(binding, one)  # the idle identity comes back for the next rotation
        target.login(binding, one)

    def test_unreachable_target_is_target_unavailable(self, unreachable_target: Target,
                                                      make_binding: MakeBinding) -> None:
        """Nothing listening: TargetUnavailable (exit 4), naming the target, from check and from steps."""
        with pytest.raises(TargetUnavailable):
            unreachable_target.check()
        binding = make_binding(_strategies(unreachable_target)[0])
        with pytest.raises(TargetUnavailable):
            _first_step(unreachable_target, binding)

    def test_wrong_admin_is_target_denied(self, denied_target: Target, make_binding: MakeBinding) -> None:
        """A wrong admin credential: TargetDenied (exit 4), not a driver exception."""
        with pytest.raises(TargetDenied):
            denied_target.check()

    def test_repr_shows_no_secret(self, target: Target, make_binding: MakeBinding) -> None:
        """The target's repr and a credential's repr never show a secret."""
        binding = make_binding(_strategies(target)[0])
        target.prepare(binding)
        credential = new_credential(target, binding)
        assert credential.secret not in repr(credential)
        assert credential.secret not in repr(target)
