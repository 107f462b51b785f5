"""The engine: carries each secret through stage -> verify -> promote -> retire with one conditional write
per step, resumes whatever a crashed or concurrent actor left behind, and emits events.

Concurrency model (DESIGN.md section 1): no locks. Every write is conditional on the revision read; the
loser of a race re-reads and either resumes the winner's pending attempt or reports that the secret was
already rotated. ``kill -9`` at any instant leaves a keyset that the next run completes.
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
    VerifyFailed,
)
from rotator.events import Event, EventBus, EventType, new_correlation_id
from rotator.generators import generate, matches_kind
from rotator.hooks import run_hook
from rotator.keyset import Keyset, KeyVersion, SecretValue, State, with_meta
from rotator.logs import get_logger, register_secret
from rotator.manifest import Manifest, SecretPolicy
from rotator.outcome import Outcome, exit_code_for, summarise
from rotator.plan import Action, Decision, decide, notice_key, notices_sent
from rotator.provider import Provider, ProviderSet

__all__ = ["Engine", "Outcome", "exit_code_for"]

log = get_logger("rotator.engine")
_MAX_STEPS = 8
_ROTATING = (Action.CREATE, Action.ROTATE, Action.RESUME)
_FINAL = (Action.ROTATE, Action.RESUME)


class Engine:
    """Runs rotations for the secrets of one manifest."""

    def __init__(self, manifest: Manifest, providers: ProviderSet, bus: EventBus, *, actor: str,
                 clock: Clock = utcnow, stop_requested: Callable[[], bool] = lambda: False,
                 audit: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.manifest = manifest
        self.audit = audit
        self.providers = providers
        self.bus = bus
        self.actor = actor
        self.clock = clock
        self.stop_requested = stop_requested

    # --- public operations ---------------------------------------------------------------------------

    def read(self, policy: SecretPolicy, *, values: bool = True) -> Keyset | None:
        """The stored keyset (backend errors are counted once, by the provider's guard).

        ``values=False`` is for deciding and stepping: a provider that stores versions apart (AWS) may then
        leave out values it would need extra requests for (its optional ``read_state``)."""
        provider = self._provider(policy)
        reader = provider.read
        if not values:
            reader = getattr(provider, "read_state", reader)
        keyset = reader(policy.ref)
        if keyset is not None:
            for version in keyset.versions:
                if version.value is not None:
                    register_secret(version.value.reveal())
        return keyset

    def reconcile(self, policies: Iterable[SecretPolicy], *, force: bool = False, reason: str | None = None,
                  revoke_previous: bool = False, dry_run: bool = False, concurrency: int = 1,
                  on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Bring each secret up to date (or rotate it now with ``force``), ``concurrency`` at a time."""
        def one(policy: SecretPolicy) -> Outcome:
            outcome = self.reconcile_one(policy, force=force, reason=reason, revoke_previous=revoke_previous,
                                         dry_run=dry_run)
            if on_done is not None:
                on_done(outcome)
            return outcome

        chosen = list(policies)
        if concurrency <= 1 or len(chosen) <= 1:
            return [one(p) for p in chosen]
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rotate") as pool:
            return list(pool.map(one, chosen))

    def reconcile_one(self, policy: SecretPolicy, *, force: bool = False, reason: str | None = None,
                      revoke_previous: bool = False, dry_run: bool = False) -> Outcome:
        """Take every step due for one secret; never raises for a per-secret problem."""
        cid = new_correlation_id()
        done: list[Outcome] = []
        conflicts = 0
        settled: datetime | None = None
        for _ in range(_MAX_STEPS):
            if self.stop_requested():
                break
            decision: Decision | None = None
            try:
                keyset = self.read(policy, values=False)
                now = self.clock()
                decision = decide(policy, keyset, now)
                if force and decision.action in (Action.NONE, Action.NOTICE, Action.BACKOFF, Action.PURGE):
                    decision = Decision(Action.ROTATE, "forced (--now)", decision.due_at, now)
                if decision.action in (Action.NONE, Action.PAUSED, Action.BACKOFF):
                    settled = decision.next_at
                    if not done:
                        done.append(Outcome(policy.name, str(decision.action), True, decision.detail))
                    break
                if dry_run:
                    done.append(Outcome(policy.name, f"would {decision.action}", True, decision.detail))
                    break
                outcome = self._step(policy, keyset, decision, now, cid, reason,
                                     revoke_previous and decision.action in _FINAL)
            except ConflictError as exc:
                conflicts += 1
                if conflicts < 3:
                    continue  # someone else moved the keyset: re-read and decide again
                done.append(Outcome(policy.name, "conflict", False, str(exc), error=exc))
                break
            except RotatorError as exc:
                log.warning("secret.failed", secret=policy.name, correlation_id=cid, error=str(exc),
                            exit_code=int(exc.exit_code))
                if decision is not None and decision.action in _ROTATING and not isinstance(exc, VerifyFailed):
                    self._emit(EventType.FAILED, policy, cid, reason=str(exc))
                done.append(Outcome(policy.name, "failed", False, str(exc), error=exc))
                break
            done.append(outcome)
            if not outcome.ok or outcome.action == "already_rotated" or decision.action in _FINAL or (
                    force and decision.action is Action.CREATE):
                break  # a rotation (or a resumed one) leaves nothing else due: skip the extra read
        summary = summarise(policy.name, done)
        return replace(summary, next_at=settled) if settled is not None else summary

    def rollback(self, policy: SecretPolicy, reason: str) -> Outcome:
        """Make the previous value current again (DESIGN.md: rollback)."""
        cid = new_correlation_id()
        keyset = self._require(policy)
        now = self.clock()
        old = keyset.current
        new = self._conditional(policy, keyset, lambda p, ks: p.rollback(policy.ref, ks, now, reason,
                                                                          policy.rollback_window))
        restored = new.current
        assert restored is not None
        self._emit(EventType.ROLLED_BACK, policy, cid, reason=reason, new=restored.id,
                   old=old.id if old else None)
        return Outcome(policy.name, "rolled_back", True, f"{restored.id[:8]} is current again",
                       restored.id, old.id if old else None)

    def retire_now(self, policy: SecretPolicy, reason: str = "retired by operator") -> Outcome:
        """End the grace period of the previous value now."""
        cid = new_correlation_id()
        keyset = self._require(policy)
        previous = keyset.previous
        if previous is None:
            raise IllegalTransition(f"{policy.name}: no previous version in grace; nothing to retire")
        now = self.clock()
        self._conditional(policy, keyset, lambda p, ks: p.retire(policy.ref, ks, previous.id, now, reason))
        self._emit(EventType.RETIRED, policy, cid, reason=reason, old=previous.id)
        return Outcome(policy.name, "retired", True, f"{previous.id[:8]} retired", old_version=previous.id)

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
            adopted = provider.adopt(policy.ref, keyset)
            current = adopted.current
            self._audit("secret.adopted", policy, cid, version=current.id if current else None)
            return Outcome(policy.name, "adopted", True, "existing value adopted as current")
        if action is Action.RESUME:  # an incident revoke that finds a pending attempt finishes it with grace 0
            pending = keyset.pending
            assert pending is not None
            grace = timedelta(0) if revoke else policy.grace
            return self._finish(policy, keyset, pending, None, cid, grace, reason, resumed=True)
        if action is Action.DISCARD:
            pending = keyset.pending
            assert pending is not None
            provider.discard(policy.ref, keyset, pending.id)
            self._audit("pending.discarded", policy, cid, version=pending.id, reason="stale")
            return Outcome(policy.name, "discarded", True, f"stale pending {pending.id[:8]} discarded")
        if action is Action.RETIRE:
            previous = keyset.previous
            assert previous is not None
            why = "grace period ended" if previous.expires_at is None or previous.expires_at <= now \
                else "every consumer acknowledged the new version"
            provider.retire(policy.ref, keyset, previous.id, now, why)
            self._emit(EventType.RETIRED, policy, cid, reason=why, old=previous.id)
            return Outcome(policy.name, "retired", True, f"{previous.id[:8]} retired", old_version=previous.id)
        if action is Action.PURGE:
            provider.purge(policy.ref, keyset, now, policy.rollback_window)
            return Outcome(policy.name, "purged", True, "retired values past the rollback window purged")
        if action is Action.NOTICE:
            return self._notice(policy, keyset, decision, now, cid)
        return self._rotate(policy, keyset, now, cid, reason, revoke)

    def _create(self, policy: SecretPolicy, now: datetime, cid: str) -> Outcome:
        version = self._new_version(policy, now, State.CURRENT)
        try:
            self._provider(policy).create(policy.ref, version.replace(promoted_at=now),
                                          {"next_due": policy.schedule.due_at(now, now).isoformat()})
        except ConflictError:
            return Outcome(policy.name, "already_rotated", True, "created by another actor")
        self._emit(EventType.SUCCEEDED, policy, cid, new=version.id, reason="initial value",
                   details={"initial": True})
        return Outcome(policy.name, "created", True, "first value stored", version.id)

    def _rotate(self, policy: SecretPolicy, keyset: Keyset, now: datetime, cid: str, reason: str | None,
                revoke: bool) -> Outcome:
        version = self._new_version(policy, now, State.PENDING)
        grace = timedelta(0) if revoke else policy.grace
        next_due = policy.schedule.due_at(now, now).isoformat()  # bookkeeping rides on the stage write
        try:
            staged = self._provider(policy).stage(policy.ref, with_meta(keyset, next_due=next_due), version)
        except ConflictError:
            fresh = self.read(policy, values=False)
            if fresh is not None and fresh.pending is not None:
                log.info("rotation.resuming_other", secret=policy.name, pending=fresh.pending.id)
                return self._finish(policy, fresh, fresh.pending, None, cid, grace, reason, resumed=True)
            if _current_id(fresh) != _current_id(keyset):
                return Outcome(policy.name, "already_rotated", True, "rotated by another actor meanwhile")
            raise
        pending = staged.pending  # the provider may store it under an id of its own (AWS: the stage token)
        assert pending is not None
        return self._finish(policy, staged, pending, version, cid, grace, reason, resumed=False)

    def _finish(self, policy: SecretPolicy, keyset: Keyset, pending: KeyVersion, ours: KeyVersion | None,
                cid: str, grace: timedelta, reason: str | None, *, resumed: bool) -> Outcome:
        started = time.monotonic()
        provider = self._provider(policy)
        try:
            value = self._verify(policy, pending, ours)
        except VerifyFailed as exc:
            self._record_failure(policy, provider, pending, str(exc), cid)
            raise
        old = keyset.current
        now = self.clock()
        try:
            promoted = provider.promote(policy.ref, keyset, pending.id, now, grace, reason)
        except ConflictError:
            fresh = self.read(policy, values=False)
            if fresh is not None and _current_id(fresh) == pending.id:
                return Outcome(policy.name, "already_rotated", True, "promoted by another actor",
                               pending.id, old.id if old else None)
            raise
        old_id = old.id if old else None
        details: dict[str, Any] = {"resumed": resumed,
                                   "duration_seconds": round(time.monotonic() - started, 3)}
        if grace > timedelta(0) and old is not None:
            details["grace_until"] = (now + grace).isoformat()
        if policy.spec.consumers:
            details["consumers"] = list(policy.spec.consumers)
        self._emit(EventType.SUCCEEDED, policy, cid, reason=reason, new=pending.id, old=old_id,
                   details=details)
        superseded = keyset.previous
        if superseded is not None:
            self._emit(EventType.RETIRED, policy, cid, reason="superseded", old=superseded.id)
        if old is not None and grace <= timedelta(0):
            self._emit(EventType.REVOKED, policy, cid, reason=reason or "revoked", old=old.id,
                       details={"consumers": list(policy.spec.consumers)})
        if promoted.meta.get("failures"):
            self._conditional(policy, promoted, lambda p, ks: p.update_meta(
                policy.ref, ks, {"failures": None, "last_failure_at": None, "last_failure": None}))
        action = "revoked" if grace <= timedelta(0) and old else ("resumed" if resumed else "rotated")
        outcome = Outcome(policy.name, action, True, f"{pending.id[:8]} is current", pending.id, old_id,
                          consumers=tuple(policy.spec.consumers) if action == "revoked" else ())
        return self._post_check(policy, pending.id, value, outcome, cid)

    def _verify(self, policy: SecretPolicy, pending: KeyVersion, ours: KeyVersion | None) -> SecretValue:
        """Read the pending value back, check it, run the verify hook; return the value as stored."""
        value = self._provider(policy).read_value(policy.ref, pending.id)  # a real read-back, one request
        if value is None:
            raise VerifyFailed(f"{policy.name}: pending {pending.id[:8]} vanished before it was verified")
        register_secret(value.reveal())
        if ours is not None and ours.value is not None:
            if value != ours.value:
                raise VerifyFailed(f"{policy.name}: read-back of {pending.id[:8]} differs from what was written")
        elif not matches_kind(policy.spec.kind, value.reveal(), policy.params):
            raise VerifyFailed(f"{policy.name}: stored pending {pending.id[:8]} is not a valid {policy.spec.kind}")
        if (hook := policy.spec.verify) is not None:
            result = run_hook(hook.command, value, timeout=hook.timeout, cwd=self.manifest.base_dir,
                              secret=policy.name, version=pending.id, kind=policy.spec.kind)
            if not result.ok:
                raise VerifyFailed(f"{policy.name}: verify failed: {result.reason}; current value unchanged")
        return value

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
            return Outcome(policy.name, "post_check_failed", False, f"{why}; new value stays current",
                           version_id, outcome.old_version, OperationFailed(why))
        keyset = self._require(policy)
        now = self.clock()
        rolled = self._conditional(policy, keyset, lambda p, ks: p.rollback(policy.ref, ks, now, why,
                                                                            policy.rollback_window))
        restored = rolled.current
        self._emit(EventType.ROLLED_BACK, policy, cid, reason=why, new=restored.id if restored else None,
                   old=version_id)
        return Outcome(policy.name, "rolled_back", False, f"{why}; rolled back automatically",
                       restored.id if restored else None, version_id, OperationFailed(why))

    def _notice(self, policy: SecretPolicy, keyset: Keyset, decision: Decision, now: datetime,
                cid: str) -> Outcome:
        current = keyset.current
        assert current is not None
        assert decision.due_at is not None
        assert decision.notice is not None
        reached = {notice_key(lead) for lead in policy.notices if decision.due_at - lead <= now}
        value = {"cycle": current.id, "sent": sorted(notices_sent(keyset) | reached)}
        self._provider(policy).update_meta(policy.ref, keyset, {"notices": value})  # a conflict: re-decide
        self._emit(EventType.UPCOMING, policy, cid, old=current.id, reason=f"rotation due in "
                   f"{notice_key(decision.due_at - now)}", details={"due_at": decision.due_at.isoformat(),
                                                                     "lead": notice_key(decision.notice)})
        return Outcome(policy.name, "noticed", True, f"announced rotation due {decision.due_at:%Y-%m-%d %H:%M}Z")

    # --- helpers ---------------------------------------------------------------------------------------

    def _provider(self, policy: SecretPolicy) -> Provider:
        return self.providers.get(policy.provider)

    def _require(self, policy: SecretPolicy) -> Keyset:
        keyset = self.read(policy, values=False)
        if keyset is None:
            raise OperationFailed(f"{policy.name}: nothing stored at {policy.provider}:{policy.ref.path} yet "
                                  "(run `rotator run` first)")
        return keyset

    def _conditional(self, policy: SecretPolicy, keyset: Keyset,
                     write: Callable[[Provider, Keyset], Keyset]) -> Keyset:
        """Run ``write``; on a conflict caused only by bookkeeping changes, re-read and try again."""
        provider = self._provider(policy)
        for _ in range(3):
            try:
                return write(provider, keyset)
            except ConflictError:
                fresh = self._require(policy)
                if [(v.id, v.state) for v in fresh.versions] != [(v.id, v.state) for v in keyset.versions]:
                    raise ConflictError(f"{policy.name}: changed by another actor meanwhile; "
                                        "check `rotator status` and retry") from None
                keyset = fresh
        raise ConflictError(f"{policy.name}: kept changing under us; retry")

    def _new_version(self, policy: SecretPolicy, now: datetime, state: State) -> KeyVersion:
        token = uuid.uuid4().hex
        generated = generate(policy.params)
        register_secret(generated.value.reveal())
        public = dict(generated.public, kid=token) if generated.public else None
        return KeyVersion(id=token, state=state, created_at=now, value=generated.value, attempt=token,
                          actor=self.actor, public=public)

    def _record_failure(self, policy: SecretPolicy, provider: Provider, pending: KeyVersion, why: str,
                        cid: str) -> None:
        try:
            keyset = self._require(policy)
            if keyset.pending is not None and keyset.pending.id == pending.id:
                keyset = provider.discard(policy.ref, keyset, pending.id)
            failures = int(keyset.meta.get("failures", 0)) + 1
            provider.update_meta(policy.ref, keyset, {"failures": failures, "last_failure": why[:200],
                                                      "last_failure_at": self.clock().isoformat()})
        except (ConflictError, IllegalTransition):
            pass  # another actor moved on; the failure is still reported below
        self._emit(EventType.FAILED, policy, cid, reason=why, new=pending.id)

    def _emit(self, kind: EventType, policy: SecretPolicy, cid: str, *, reason: str | None = None,
              new: str | None = None, old: str | None = None, details: dict[str, Any] | None = None) -> None:
        event = Event(type=kind, secret=policy.name, provider=policy.provider, at=self.clock(),
                      actor=self.actor, correlation_id=cid, reason=reason, new_version=new, old_version=old,
                      details=details or {})
        self.bus.emit(event)

    def _audit(self, kind: str, policy: SecretPolicy, cid: str, **fields: Any) -> None:
        """A step worth keeping that is not a contract event (adoption, discarded attempt)."""
        log.info(kind, secret=policy.name, correlation_id=cid, **fields)
        if self.audit is not None:
            self.audit({"type": "step", "step": kind, "secret": policy.name, "provider": policy.provider,
                        "actor": self.actor, "correlation_id": cid, **fields})


def _current_id(keyset: Keyset | None) -> str | None:
    current = keyset.current if keyset is not None else None
    return current.id if current is not None else None
