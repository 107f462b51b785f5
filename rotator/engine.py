"""The engine: a small executor that reads a keyset, asks :func:`rotator.plan.decide` for the step, applies
the step's transition to the store (and its target, if the secret has one) with one conditional write, and
emits events. docs/architecture.md has the step table and why a crash at any point resumes.

Concurrency model: no locks. Every write is conditional on the revision read; the loser of a race re-reads
and either resumes the winner's pending attempt or reports that the secret was already rotated. ``kill -9``
at any instant leaves a keyset that the next run completes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from rotator.clock import Clock, utcnow
from rotator.errors import (
    ConflictError,
    IllegalTransition,
    OperationFailed,
    RotatorError,
    UsageError,
    VerifyFailed,
)
from rotator.events import Event, EventBus, EventType, new_correlation_id
from rotator.generators import generate, matches_kind
from rotator.hooks import run_hook
from rotator.keyset import Keyset, KeyVersion, SecretValue, State
from rotator.logs import get_logger, register_secret
from rotator.manifest import Manifest, SecretPolicy
from rotator.meta import KeysetMeta
from rotator.outcome import Outcome, OutcomeAction, exit_code_for, summarise
from rotator.plan import Action, Decision, decide, notice_key, notices_sent
from rotator.provider import Provider, ProviderSet
from rotator.target import SECRET_FIELDS, Capability, Credential, Strategy
from rotator.targeting import TargetSet, credential_of
from rotator.transitions import (
    Adopt,
    Create,
    Discard,
    Promote,
    Purge,
    Retire,
    Revoke,
    Rollback,
    Stage,
    Transition,
    UpdateMeta,
)

__all__ = ["Engine", "Outcome", "exit_code_for"]

log = get_logger("rotator.engine")
_MAX_STEPS = 8
_ROTATING = (Action.CREATE, Action.ROTATE, Action.RESUME)
_FINAL = (Action.ROTATE, Action.RESUME, Action.REVOKE)
_SETTLED = (Action.NONE, Action.PAUSED, Action.BACKOFF, Action.WAIT, Action.FROZEN, Action.REMIND)


class Engine:
    """Runs rotations for the secrets of one manifest."""

    def __init__(self, manifest: Manifest, providers: ProviderSet, bus: EventBus, *, actor: str,
                 clock: Clock = utcnow, stop_requested: Callable[[], bool] = lambda: False,
                 targets: TargetSet | None = None) -> None:
        self.manifest = manifest
        self.providers = providers
        self.targets = targets if targets is not None else TargetSet({}, manifest.base_dir, lambda _: ())
        self.bus = bus
        self.actor = actor
        self.clock = clock
        self.stop_requested = stop_requested

    # --- public operations ---------------------------------------------------------------------------

    def read(self, policy: SecretPolicy, *, values: bool = True) -> Keyset | None:
        """The stored keyset (backend errors are counted once, by the provider's guard).

        ``values=False`` is for deciding and stepping: a ``STATE_READ`` provider (AWS) may then leave out values
        it would need extra requests for. A target-bound secret always reads values (disabling needs them)."""
        provider = self._provider(policy)
        keyset = provider.read(policy.ref) if values or policy.binding is not None \
            else provider.read_state(policy.ref)
        if keyset is not None:
            for version in keyset.versions:
                if version.value is not None:
                    _register(version.value)
        return keyset

    def keep_previous(self, policy: SecretPolicy) -> int:
        """How many previous versions may be in grace at once: the manifest's limit, one on stores without
        ``MULTI_PREVIOUS`` and on two-slot targets (dual, alternating), none for ``single``."""
        keep = policy.keep_previous
        if Capability.MULTI_PREVIOUS not in self._provider(policy).capabilities:
            keep = min(keep, 1)
        if (binding := policy.binding) is not None:
            keep = min(keep, 0 if binding.strategy is Strategy.SINGLE else 1)
        return keep

    def reconcile(self, policies: Iterable[SecretPolicy], *, force: bool = False, reason: str | None = None,
                  revoke_previous: bool = False, dry_run: bool = False, concurrency: int = 1,
                  on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Bring each secret up to date (or rotate it now with ``force``), ``concurrency`` at a time.

        A forced rotation that finds a value newer than the start of this call reports ``already_rotated``."""
        since = self.clock()

        def one(policy: SecretPolicy) -> Outcome:
            outcome = self.reconcile_one(policy, force=force, reason=reason, revoke_previous=revoke_previous,
                                         dry_run=dry_run, since=since)
            if on_done is not None:
                on_done(outcome)
            return outcome

        chosen = list(policies)
        if concurrency <= 1 or len(chosen) <= 1:
            return [one(p) for p in chosen]
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rotate") as pool:
            return list(pool.map(one, chosen))

    def reconcile_one(self, policy: SecretPolicy, *, force: bool = False, reason: str | None = None,
                      revoke_previous: bool = False, dry_run: bool = False,
                      since: datetime | None = None) -> Outcome:
        """Take every step due for one secret; never raises for a per-secret problem."""
        cid = new_correlation_id()
        done: list[Outcome] = []
        conflicts = 0
        settled: datetime | None = None
        overrode = ""
        for _ in range(_MAX_STEPS):
            if self.stop_requested():
                break
            decision: Decision | None = None
            try:
                keyset = self.read(policy, values=False)
                now = self.clock()
                if force and policy.spec.kind == "manual":
                    raise OperationFailed(f"{policy.name}: kind manual is reminder-only: rotate it by hand, then "
                                          f"`rotator mark-rotated {policy.name} --reason ...`")
                decision = decide(policy, keyset, now, force=force, revoke=revoke_previous,
                                  since=since, keep_previous=self.keep_previous(policy))
                if force and not overrode and (frozen := policy.schedule.frozen(now)) is not None:
                    overrode = f"; {frozen}: overridden by --now"
                    if not dry_run:
                        self._emit(EventType.FREEZE_OVERRIDDEN, policy, cid, reason=reason,
                                   details={"until": frozen.until.isoformat(), "why": frozen.why})
                if decision.action in _SETTLED:
                    settled = decision.next_at
                    if not done:
                        done.append(Outcome(policy.name, OutcomeAction.of(decision.action), True, decision.detail))
                    break
                if decision.action is Action.ALREADY:
                    done.append(Outcome(policy.name, OutcomeAction.ALREADY_ROTATED, True, decision.detail))
                    break
                if decision.action is Action.BLOCKED:
                    raise OperationFailed(f"{policy.name}: {decision.detail}",
                                          hint=f"wait, `rotator retire {policy.name}` first, or rotate with "
                                               "--revoke-previous if the older value must stop working now")
                if dry_run:
                    done.append(Outcome(policy.name, OutcomeAction.would(decision.action), True, decision.detail))
                    break
                outcome = self._step(policy, keyset, decision, now, cid, reason,
                                     revoke_previous and decision.action in _FINAL)
            except ConflictError as exc:
                conflicts += 1
                if conflicts < 3:
                    continue  # someone else moved the keyset: re-read and decide again
                done.append(Outcome(policy.name, OutcomeAction.CONFLICT, False, str(exc), error=exc))
                break
            except RotatorError as exc:
                log.warning("secret.failed", secret=policy.name, correlation_id=cid, error=str(exc),
                            exit_code=int(exc.exit_code), target=policy.binding.target if policy.binding else None)
                if decision is not None and decision.action in _ROTATING and not isinstance(exc, VerifyFailed):
                    self._emit(EventType.FAILED, policy, cid, reason=str(exc))
                done.append(Outcome(policy.name, OutcomeAction.FAILED, False, str(exc), error=exc))
                break
            done.append(outcome)
            if not outcome.ok or outcome.action is OutcomeAction.ALREADY_ROTATED or decision.action in _FINAL or (
                    force and decision.action is Action.CREATE):
                break  # a rotation (or a resumed one) leaves nothing else due: skip the extra read
        summary = summarise(policy.name, done)
        if overrode and summary.ok:
            summary = replace(summary, message=summary.message + overrode)
        return replace(summary, next_at=settled) if settled is not None else summary

    def rollback(self, policy: SecretPolicy, reason: str) -> Outcome:
        """Make the previous value current again; never a revoked one. On a target, the restored value logs in
        again before the store flips back, and the value rolled back from stops logging in after."""
        if policy.spec.kind == "manual":  # a rollback would date the restored record from now (rotator.manual)
            raise UsageError(f"{policy.name} is a kind: manual secret: correct its record with "
                             f"`rotator mark-rotated {policy.name} --at WHEN --reason ...` instead of a rollback")
        cid = new_correlation_id()
        keyset = self._require(policy)
        now = self.clock()
        old = keyset.current
        transition = Rollback(now, reason, policy.rollback_window)
        planned = transition.apply(keyset)  # IllegalTransition (exit 1) before anything is touched
        if (binding := policy.binding) is not None and (restored := credential_of(planned.current)) is not None:
            self.targets.restore(binding, restored)
        new = self._conditional(policy, keyset, transition)
        self._disable_left(policy, keyset, new)
        restored_version = new.current
        assert restored_version is not None
        self._emit(EventType.ROLLED_BACK, policy, cid, reason=reason, new=restored_version.id,
                   old=old.id if old else None)
        return Outcome(policy.name, OutcomeAction.ROLLED_BACK, True, f"{restored_version.id[:8]} is current again",
                       restored_version.id, old.id if old else None)

    def retire_now(self, policy: SecretPolicy, reason: str = "retired by operator") -> Outcome:
        """End the grace period of every previous value now (a no-op, exit 0, when nothing is in grace)."""
        cid = new_correlation_id()
        keyset = self._require(policy)
        olds = keyset.previous_versions
        if not olds:
            return Outcome(policy.name, OutcomeAction.NONE, True, "nothing in grace to retire")
        now = self.clock()
        for previous in olds:
            keyset = self._retire(policy, keyset, previous, now, reason, cid)
        ids = ", ".join(v.id[:8] for v in olds)
        return Outcome(policy.name, OutcomeAction.RETIRED, True, f"{ids} retired", old_version=olds[0].id)

    # --- steps -----------------------------------------------------------------------------------------

    def _step(self, policy: SecretPolicy, keyset: Keyset | None, decision: Decision, now: datetime, cid: str,
              reason: str | None, revoke: bool) -> Outcome:
        action = decision.action
        if action is Action.UNMANAGED:
            raise OperationFailed(
                f"{policy.name}: a value exists at {policy.provider}:{policy.ref.path} that rotator did not "
                "write; set 'adopt: true' on the secret to take it over", hint="or choose another path")
        if action is Action.CREATE:
            return self._create(policy, now, cid)
        assert keyset is not None
        provider = self._provider(policy)
        if action is Action.ADOPT:
            adopted = provider.apply(policy.ref, keyset, Adopt())
            current = adopted.current
            self._emit(EventType.ADOPTED, policy, cid, details={"version": current.id if current else None})
            return Outcome(policy.name, OutcomeAction.ADOPTED, True, "existing value adopted as current")
        if action is Action.RESUME:  # an incident revoke that finds a pending attempt finishes it as a revoke
            pending = keyset.pending
            assert pending is not None
            revoking = revoke or KeysetMeta.of(keyset).revoking is not None
            grace = timedelta(0) if revoking else policy.grace
            return self._finish(policy, keyset, pending, None, cid, grace, reason, resumed=True, revoke=revoking)
        if action is Action.DISCARD:
            pending = keyset.pending
            assert pending is not None
            self._discard(policy, keyset, pending)
            self._emit(EventType.DISCARDED, policy, cid, reason="stale", details={"version": pending.id})
            return Outcome(policy.name, OutcomeAction.DISCARDED, True, f"stale pending {pending.id[:8]} discarded")
        if action is Action.RETIRE:
            previous = keyset.get(decision.versions[0])
            why = "grace period ended" if previous.expires_at is None or previous.expires_at <= now \
                else "every consumer acknowledged the new version"
            self._retire(policy, keyset, previous, now, why, cid)
            return Outcome(policy.name, OutcomeAction.RETIRED, True, f"{previous.id[:8]} retired",
                           old_version=previous.id)
        if action is Action.REVOKE:
            return self._revoke_older(policy, keyset, decision.versions, now, cid, reason)
        if action is Action.PURGE:
            provider.apply(policy.ref, keyset, Purge(now, policy.rollback_window))
            return Outcome(policy.name, OutcomeAction.PURGED, True, "retired values past the rollback window purged")
        if action is Action.NOTICE:
            return self._notice(policy, keyset, decision, now, cid)
        if action is Action.OVERDUE:
            from rotator.manual import overdue_notice

            return overdue_notice(self, policy, keyset, decision, cid)
        return self._rotate(policy, keyset, now, cid, reason, revoke)

    def _create(self, policy: SecretPolicy, now: datetime, cid: str) -> Outcome:
        version = self._new_version(policy, now, State.CURRENT, None)
        binding = policy.binding
        credential = credential_of(version)
        if binding is not None and credential is not None:
            self.targets.create(binding, credential)  # set on the target and logged in before it is stored
        assert version.value is not None
        self._hook(policy, version.id, version.value)  # verify runs on the first value too
        try:
            self._provider(policy).apply(policy.ref, None, Create(
                version.replace(promoted_at=now), {"next_due": policy.schedule.due_at(now, now).isoformat()}))
        except ConflictError:
            self._lost_create(policy, version)
            return Outcome(policy.name, OutcomeAction.ALREADY_ROTATED, True, "created by another actor")
        stored = self._provider(policy).read_value(policy.ref, version.id)
        if stored is None or stored != version.value:
            raise VerifyFailed(f"{policy.name}: read-back of the first value {version.id[:8]} differs from what "
                               "was written")
        self._emit(EventType.SUCCEEDED, policy, cid, new=version.id, reason="initial value",
                   details={"initial": True, **self._target_details(policy, credential)})
        return Outcome(policy.name, OutcomeAction.CREATED, True, "first value stored", version.id)

    def _lost_create(self, policy: SecretPolicy, ours: KeyVersion) -> None:
        """Another actor created the secret first: give the target back to the winner's value."""
        if (binding := policy.binding) is None:
            return
        winner = self.read(policy)
        theirs = credential_of(winner.current if winner else None)
        if binding.strategy is Strategy.DUAL or self.targets.issues(binding):
            self.targets.disable(binding, [ours], [])
        elif theirs is not None:
            self.targets.restore(binding, theirs)

    def _rotate(self, policy: SecretPolicy, keyset: Keyset, now: datetime, cid: str, reason: str | None,
                revoke: bool) -> Outcome:
        if (binding := policy.binding) is not None:
            self.targets.get(binding.target).check()  # a target that is down fails here, store unchanged
        version = self._new_version(policy, now, State.PENDING, keyset)
        grace = timedelta(0) if revoke else policy.grace
        # a revoke is marked: a crash before promote still finishes as a revoke
        meta = KeysetMeta.staged(policy.schedule.due_at(now, now), revoking=now if revoke else None)
        if revoke and Capability.ASSIGNS_VERSION_IDS in self._provider(policy).capabilities:
            keyset = self._provider(policy).apply(policy.ref, keyset, UpdateMeta({"revoking": meta["revoking"]}))
        try:
            staged = self._provider(policy).apply(policy.ref, keyset, Stage(version, meta))
        except ConflictError:
            if binding is not None and self.targets.issues(binding):
                self.targets.disable(binding, [version], [])  # the key we issued will never be stored
            fresh = self.read(policy, values=False)
            if fresh is not None and fresh.pending is not None:
                log.info("rotation.resuming_other", secret=policy.name, pending=fresh.pending.id)
                return self._finish(policy, fresh, fresh.pending, None, cid, grace, reason, resumed=True,
                                    revoke=revoke)
            if _current_id(fresh) != _current_id(keyset):
                return Outcome(policy.name, OutcomeAction.ALREADY_ROTATED, True, "rotated by another actor meanwhile")
            raise
        pending = staged.pending  # the provider may store it under an id of its own (AWS: the stage token)
        assert pending is not None
        return self._finish(policy, staged, pending, version, cid, grace, reason, resumed=False, revoke=revoke)

    def _finish(self, policy: SecretPolicy, keyset: Keyset, pending: KeyVersion, ours: KeyVersion | None,
                cid: str, grace: timedelta, reason: str | None, *, resumed: bool, revoke: bool) -> Outcome:
        started = time.monotonic()
        provider = self._provider(policy)
        try:
            value = self._verify(policy, pending, ours)
        except VerifyFailed as exc:
            self._record_failure(policy, provider, pending, str(exc), cid)
            raise
        old = keyset.current
        now = self.clock()
        if pending.value is None:
            keyset = keyset.replace(versions=tuple(v.replace(value=value) if v.id == pending.id else v
                                                   for v in keyset.versions))
        transition = Promote(pending.id, now, grace, reason, revoke, self.keep_previous(policy))
        planned = transition.apply(keyset)
        if revoke:  # leak safety: the revoked values stop logging in before the store says so
            self._disable_left(policy, keyset, planned)
        try:
            promoted = provider.apply(policy.ref, keyset, transition)
        except ConflictError:
            fresh = self.read(policy, values=False)
            if fresh is not None and _current_id(fresh) == pending.id:
                return Outcome(policy.name, OutcomeAction.ALREADY_ROTATED, True, "promoted by another actor",
                               pending.id, old.id if old else None)
            raise
        if not revoke:
            self._disable_left(policy, keyset, promoted)  # previous values a promote retired early
        old_id = old.id if old else None
        details: dict[str, Any] = {"resumed": resumed, "duration_seconds": round(time.monotonic() - started, 3),
                                   **self._target_details(policy, credential_of(
                                       next(v for v in promoted.versions if v.id == pending.id)))}
        if grace > timedelta(0) and old is not None:
            details["grace_until"] = (now + grace).isoformat()
        if policy.spec.consumers:
            details["consumers"] = list(policy.spec.consumers)
        self._emit(EventType.SUCCEEDED, policy, cid, reason=reason, new=pending.id, old=old_id,
                   details=details)
        before = {v.id: v.state for v in keyset.versions}
        for version in promoted.versions:
            if before.get(version.id) is State.PREVIOUS and version.state is State.RETIRED:
                self._emit(EventType.RETIRED, policy, cid, reason=version.reason or "superseded", old=version.id)
            elif version.state is State.REVOKED and before.get(version.id) is not State.REVOKED:
                self._emit(EventType.REVOKED, policy, cid, reason=reason or "revoked", old=version.id,
                           details={"consumers": list(policy.spec.consumers)})
        clear = KeysetMeta.of(promoted).cleared()
        if clear:
            self._conditional(policy, promoted, UpdateMeta(clear))
        action = OutcomeAction.REVOKED if revoke and old else (
            OutcomeAction.RESUMED if resumed else OutcomeAction.ROTATED)
        outcome = Outcome(policy.name, action, True, f"{pending.id[:8]} is current", pending.id, old_id,
                          consumers=tuple(policy.spec.consumers) if action is OutcomeAction.REVOKED else ())
        return self._post_check(policy, pending.id, value, outcome, cid)

    def _verify(self, policy: SecretPolicy, pending: KeyVersion, ours: KeyVersion | None) -> SecretValue:
        """Read the pending value back, check it, make it log in on the target, run the verify hook."""
        value = self._provider(policy).read_value(policy.ref, pending.id)  # a real read-back, one request
        if value is None:
            raise VerifyFailed(f"{policy.name}: pending {pending.id[:8]} vanished before it was verified")
        _register(value)
        if ours is not None and ours.value is not None:
            if value != ours.value:
                raise VerifyFailed(f"{policy.name}: read-back of {pending.id[:8]} differs from what was written")
        elif policy.binding is None and not matches_kind(policy.spec.kind, value.reveal(), policy.params):
            raise VerifyFailed(f"{policy.name}: stored pending {pending.id[:8]} is not a valid {policy.spec.kind}")
        if (binding := policy.binding) is not None:
            self.targets.activate(binding, Credential.from_value(value))  # idempotent: a resume repeats it
        self._hook(policy, pending.id, value)
        return value

    def _hook(self, policy: SecretPolicy, version_id: str, value: SecretValue) -> None:
        if (hook := policy.spec.verify) is not None:
            result = run_hook(hook.command, value, timeout=hook.timeout, cwd=self.manifest.base_dir,
                              secret=policy.name, version=version_id, kind=policy.spec.kind)
            if not result.ok:
                raise VerifyFailed(f"{policy.name}: verify failed: {result.reason}; current value unchanged")

    def _post_check(self, policy: SecretPolicy, version_id: str, value: SecretValue, outcome: Outcome,
                    cid: str) -> Outcome:
        check = policy.spec.post_check
        if check is None:
            return outcome
        result = run_hook(check.command, value, timeout=check.within, cwd=self.manifest.base_dir,
                          secret=policy.name, version=version_id, kind=policy.spec.kind)
        if result.ok:
            return outcome
        why = f"post_check failed: {result.reason}"
        self._emit(EventType.FAILED, policy, cid, reason=why, new=version_id, old=outcome.old_version)
        if not policy.spec.auto_rollback:
            return Outcome(policy.name, OutcomeAction.POST_CHECK_FAILED, False, f"{why}; new value stays current",
                           version_id, outcome.old_version, OperationFailed(why))
        try:
            rolled = self.rollback(policy, why)
        except IllegalTransition as exc:  # e.g. the value before was revoked: never bring it back
            return Outcome(policy.name, OutcomeAction.POST_CHECK_FAILED, False, f"{why}; not rolled back: {exc}",
                           version_id, outcome.old_version, OperationFailed(why))
        return Outcome(policy.name, OutcomeAction.ROLLED_BACK, False, f"{why}; rolled back automatically",
                       rolled.new_version, version_id, OperationFailed(why))

    def _notice(self, policy: SecretPolicy, keyset: Keyset, decision: Decision, now: datetime,
                cid: str) -> Outcome:
        current = keyset.current
        assert current is not None
        assert decision.due_at is not None
        assert decision.notice is not None
        reached = {notice_key(lead) for lead in policy.notices if decision.due_at - lead <= now}
        changes = KeysetMeta.noticed(current.id, notices_sent(keyset) | reached)
        self._provider(policy).apply(policy.ref, keyset, UpdateMeta(changes))  # a conflict: re-decide
        self._emit(EventType.UPCOMING, policy, cid, old=current.id, reason=f"rotation due in "
                   f"{notice_key(decision.due_at - now)}", details={"due_at": decision.due_at.isoformat(),
                                                                     "lead": notice_key(decision.notice)})
        return Outcome(policy.name, OutcomeAction.NOTICED, True,
                       f"announced rotation due {decision.due_at:%Y-%m-%d %H:%M}Z")

    def _retire(self, policy: SecretPolicy, keyset: Keyset, previous: KeyVersion, now: datetime, why: str,
                cid: str) -> Keyset:
        """The previous credential stops logging in on the target first, then the store retires it."""
        transition = Retire(previous.id, now, why)
        self._disable_left(policy, keyset, transition.apply(keyset))
        retired = self._conditional(policy, keyset, transition)
        self._emit(EventType.RETIRED, policy, cid, reason=why, old=previous.id)
        return retired

    def _revoke_older(self, policy: SecretPolicy, keyset: Keyset, ids: tuple[str, ...], now: datetime, cid: str,
                      reason: str | None) -> Outcome:
        why = reason or "revoked"
        transition = Revoke(ids, now, why)
        self._disable_left(policy, keyset, transition.apply(keyset))
        self._conditional(policy, keyset, transition)
        for vid in ids:
            self._emit(EventType.REVOKED, policy, cid, reason=why, old=vid,
                       details={"consumers": list(policy.spec.consumers)})
        return Outcome(policy.name, OutcomeAction.REVOKED, True, f"rotated by another actor meanwhile; "
                       f"{', '.join(v[:8] for v in ids)} revoked", old_version=ids[0],
                       consumers=tuple(policy.spec.consumers))

    def _discard(self, policy: SecretPolicy, keyset: Keyset, pending: KeyVersion) -> Keyset:
        if (binding := policy.binding) is not None:
            if pending.value is None:
                keyset = self._require(policy)
                pending = keyset.get(pending.id)
            self.targets.discard(binding, keyset, pending)
        return self._provider(policy).apply(policy.ref, keyset, Discard(pending.id))

    # --- helpers ---------------------------------------------------------------------------------------

    def _provider(self, policy: SecretPolicy) -> Provider:
        return self.providers.get(policy.provider)

    def _require(self, policy: SecretPolicy) -> Keyset:
        keyset = self.read(policy, values=False)
        if keyset is None:
            raise OperationFailed(f"{policy.name}: nothing stored at {policy.provider}:{policy.ref.path} yet "
                                  "(run `rotator run` first)")
        return keyset

    def _conditional(self, policy: SecretPolicy, keyset: Keyset, transition: Transition) -> Keyset:
        """Apply ``transition``; on a conflict caused only by bookkeeping changes, re-read and try again."""
        provider = self._provider(policy)
        for _ in range(3):
            try:
                return provider.apply(policy.ref, keyset, transition)
            except ConflictError:
                fresh = self._require(policy)
                if [(v.id, v.state) for v in fresh.versions] != [(v.id, v.state) for v in keyset.versions]:
                    raise ConflictError(f"{policy.name}: changed by another actor meanwhile; "
                                        "check `rotator status` and retry") from None
                keyset = fresh
        raise ConflictError(f"{policy.name}: kept changing under us; retry")

    def _disable_left(self, policy: SecretPolicy, before: Keyset, after: Keyset) -> None:
        """On a target: credentials accepted ``before`` but not ``after`` stop logging in."""
        if (binding := policy.binding) is None:
            return
        staying = after.accepted()
        kept = {v.id for v in staying}
        gone = [v for v in before.accepted() if v.id not in kept]
        if gone:
            self.targets.disable(binding, gone, staying)

    def _new_version(self, policy: SecretPolicy, now: datetime, state: State, keyset: Keyset | None) -> KeyVersion:
        token = uuid.uuid4().hex
        public = None
        if (binding := policy.binding) is not None:
            username = binding.username if state is State.CURRENT else self.targets.next_username(binding, keyset)
            if self.targets.issues(binding):
                issued = self.targets.issue(binding, username, keyset)
                value = self.targets.document(binding, username, None, issued).to_value()
            else:
                value = self.targets.document(binding, username, generate(policy.params).value).to_value()
        else:
            generated = generate(policy.params)
            value = generated.value
            public = dict(generated.public, kid=token) if generated.public else None
        _register(value)
        return KeyVersion(id=token, state=state, created_at=now, value=value, attempt=token,
                          actor=self.actor, public=public)

    def _record_failure(self, policy: SecretPolicy, provider: Provider, pending: KeyVersion, why: str,
                        cid: str) -> None:
        try:
            keyset = self._require(policy)
            if keyset.pending is not None and keyset.pending.id == pending.id:
                keyset = self._discard(policy, keyset, keyset.pending)
            failures = KeysetMeta.of(keyset).failures + 1
            provider.apply(policy.ref, keyset, UpdateMeta(KeysetMeta.failure(failures, why, self.clock())))
        except (ConflictError, IllegalTransition):
            pass  # another actor moved on; the failure is still reported below
        self._emit(EventType.FAILED, policy, cid, reason=why, new=pending.id)

    def _target_details(self, policy: SecretPolicy, credential: Credential | None) -> dict[str, Any]:
        if (binding := policy.binding) is None:
            return {}
        out: dict[str, Any] = {"target": binding.target, "strategy": str(binding.strategy)}
        if credential is not None and credential.username:
            out["identity"] = credential.username
        return out

    def _emit(self, kind: EventType, policy: SecretPolicy, cid: str, *, reason: str | None = None,
              new: str | None = None, old: str | None = None, details: dict[str, Any] | None = None) -> None:
        event = Event(type=kind, secret=policy.name, provider=policy.provider, at=self.clock(),
                      actor=self.actor, correlation_id=cid, reason=reason, new_version=new, old_version=old,
                      details=details or {})
        self.bus.emit(event)



def _current_id(keyset: Keyset | None) -> str | None:
    current = keyset.current if keyset is not None else None
    return current.id if current is not None else None


def _register(value: SecretValue) -> None:
    """Redact a value in logs, and for a credential document each secret field in it too."""
    register_secret(value.reveal())
    text = value.reveal()
    if text.startswith("{"):
        credential = Credential.from_value(value)
        for name in SECRET_FIELDS & set(credential):
            register_secret(str(credential[name]))
