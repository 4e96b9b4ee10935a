"""The mass-deprovisioning guard: a broken scope or mapping must never deactivate half the company.

Why: one wrong edit (the in-scope group deleted in Entra, a scope filter mistyped) turns every linked user into a
"leaver" at once. Microsoft's accidental-deletions threshold only counts per provisioning cycle; idsync also acts on
live notifications, so it counts in two places:

- **reconcile runs** (`hold_run`): a run that would deactivate more than `guard_max_count` users, or more than
  `guard_max_share` of the `linked_total` linked users, is held as a whole under its run id. The caller still
  publishes every deprovision to the revocation lane: the lane freezes each user at once and deactivates only those
  the guard lets through. A run within the limits is pre-approved, so its users neither count nor get held again in
  the live window (one run, one decision).
- **the live pipeline** (`check_deactivation`, called by the revocation lane before every deactivation: disabled,
  deleted or out of scope): a sliding window of `guard_window_s` counts the distinct users idsync deactivated or
  held. A deactivation that would take the window over a threshold is held, and so is every further one while the
  window stays over it; they all join the open live run (`live-YYYYMMDD-N`) until someone decides.

The rule for a leaver who arrives while a live hold is open (what an admin can predict): it is held if, counted with
every deactivation of the last `guard_window_s` (done or held), it exceeds a threshold, exactly as if no hold were
open. Once the burst has slid out of the window, single leavers go through again while the held run still waits.
Deciding a live run starts the count again (`approve` clears the window; `reject` removes the rejected users from
it). A user already held stays held (whatever the window says) until their run is decided.

What waits and what does not: a held user is **frozen** at once (the revocation lane freezes before it asks the
guard), so access is blocked; only the deactivation and the ownership transfer wait. The share threshold never holds
fewer than `guard_share_min_count` deactivations, so a small tenant is not stopped by its fifth leaver. 0 disables a
threshold; both at 0 turn the guard off.

Deciding (`idsync approve RUN_ID` / `idsync reject RUN_ID`, with the operator as actor in the audit trail):
- `approve`: each held user gets an approval mark and one `revocation.release_held` task (`publish_release`), which
  re-reads Graph and deactivates whoever is still disabled, deleted or out of scope (users back in scope meanwhile
  are handed to the sync lane instead); the ownership transfer follows each deactivation.
- `reject`: nobody in the run is deactivated. Each user is re-planned on the sync lane (`replan_rejected`): a user
  Entra shows enabled and in scope again (the mistake was fixed) is unfrozen by the usual reactivation of what idsync
  revoked; a user still out stays frozen but active, with a review item, and the guard keeps them so (not counted,
  not held again) for `guard_reject_keep_s`, so a rejected mistake does not come straight back as a new hold.

State lives in Redis (one key family, `idsync:guard:*`); the live check is one Lua script call (atomic, so two workers
can never both let the 51st deactivation through).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import metrics
from shared.audit import append_many
from shared.audit_events import Action, AuditEvent
from shared.identity_links import LINKS_BY_SF_KEY
from shared.logging import get_logger
from shared.redis_values import as_text
from shared.settings import Settings

log = get_logger(__name__)

PREFIX = "idsync:guard"
#: Every held user, any run: entra id -> run id.
HELD_KEY = f"{PREFIX}:held"
#: Runs waiting for a decision: run id -> when they were held.
RUNS_KEY = f"{PREFIX}:runs"
#: The live sliding window: entra id -> when idsync deactivated (or held) them.
WINDOW_KEY = f"{PREFIX}:live:window"
#: The open live run, if any.
LIVE_RUN_KEY = f"{PREFIX}:live:run"
LIVE_SEQ_PREFIX = f"{PREFIX}:live:seq"
RUN_PREFIX = f"{PREFIX}:run:"
APPROVED_PREFIX = f"{PREFIX}:approved:"
REJECTED_PREFIX = f"{PREFIX}:rejected:"
#: An approval waits this long for its deactivation (a blocked one is retried every 15 min meanwhile).
APPROVAL_TTL_S = 7 * 86_400
#: A reconcile run within the limits publishes its deprovisions at once: its pre-approval need not last long, and a
#: user it did not deactivate (back in scope) must soon count again like anyone else.
PREAPPROVAL_TTL_S = 86_400
#: A decided run is kept this long for `idsync held RUN_ID` and for approving twice (which republishes).
DECIDED_RUN_TTL_S = 30 * 86_400
#: What the revocation lane publishes per approved user (in `shared.dispatch.SCHEDULED_TASKS`).
RELEASE_TASK = "revocation.release_held"
#: Review items about a rejected hold are kept under this topic.
REVIEW_TOPIC = "guard"
REJECTED_REASON = "deprovision_rejected"

# Decisions of the live check.
ALLOWED = "allowed"
APPROVED = "approved"
HELD = "held"
REJECTED = "rejected"

MODE_LIVE = "live"
MODE_RECONCILE = "reconcile"

# KEYS: 1 held index, 2 this user's approval, 3 this user's rejection, 4 window, 5 links by Salesforce id,
#       6 open live run, 7 runs waiting, 8 today's live run counter
# ARGV: 1 entra id, 2 now, 3 window s, 4 max count, 5 max share, 6 share minimum, 7 user json, 8 run key prefix,
#       9 date
# Returns {decision, run id, count, linked, opened (1: this call opened the live run), new (1: newly held)}.
# Run keys are built here from the run id (one Redis, no cluster: the product runs on a single instance).
_CHECK = """
local run = redis.call('HGET', KEYS[1], ARGV[1])
if run then return {'held', run, 0, 0, 0, 0} end
local approved = redis.call('GET', KEYS[2])
if approved then return {'approved', approved, 0, 0, 0, 0} end
local rejected = redis.call('GET', KEYS[3])
if rejected then return {'rejected', rejected, 0, 0, 0, 0} end
local max_count, max_share = tonumber(ARGV[4]), tonumber(ARGV[5])
if max_count <= 0 and max_share <= 0 then return {'allowed', '', 0, 0, 0, 0} end
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then return {'allowed', '', 0, 0, 0, 0} end
local count = redis.call('ZCARD', KEYS[4]) + 1
local linked = redis.call('HLEN', KEYS[5])
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('PEXPIRE', KEYS[4], math.ceil(window * 1000) + 60000)
local over = (max_count > 0 and count > max_count)
  or (max_share > 0 and count > math.max(tonumber(ARGV[6]), max_share * linked))
if not over then return {'allowed', '', count, linked, 0, 0} end
run = redis.call('GET', KEYS[6])
local opened = 0
if not run then
  run = 'live-' .. ARGV[9] .. '-' .. redis.call('INCR', KEYS[8])
  redis.call('EXPIRE', KEYS[8], 172800)
  redis.call('SET', KEYS[6], run)
  redis.call('HSET', ARGV[8] .. run, 'run_id', run, 'mode', 'live', 'status', 'held', 'since', ARGV[2],
             'count_at_hold', count, 'linked_total', linked)
  redis.call('ZADD', KEYS[7], now, run)
  opened = 1
end
redis.call('HSET', ARGV[8] .. run .. ':users', ARGV[1], ARGV[7])
redis.call('HSET', KEYS[1], ARGV[1], run)
return {'held', run, count, linked, opened, 1}
"""

# KEYS: 1 run, 2 run users, 3 held index, 4 runs waiting, 5 open live run, 6 window
# ARGV: 1 run id, 2 decision (approved|rejected), 3 actor, 4 now, 5 mark prefix, 6 mark ttl s, 7 decided-run ttl s
# Returns {status before, released user ids...}: the users whose hold this call lifted (held under this run).
_DECIDE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'unknown'} end
if status ~= 'held' then return {status} end
local out = {'held'}
for _, user in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('HGET', KEYS[3], user) == ARGV[1] then
    redis.call('HDEL', KEYS[3], user)
    redis.call('SET', ARGV[5] .. user, ARGV[1], 'EX', ARGV[6])
    if ARGV[2] == 'rejected' then redis.call('ZREM', KEYS[6], user) end
    out[#out + 1] = user
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'decided_by', ARGV[3], 'decided_at', ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('GET', KEYS[5]) == ARGV[1] then
  redis.call('DEL', KEYS[5])
  if ARGV[2] == 'approved' then redis.call('DEL', KEYS[6]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return out
"""


class GuardError(ValueError):
    """An operator asked for something the guard cannot do (an unknown run, approving a rejected run...)."""


class UnknownRun(GuardError):
    """The run id names no run the guard holds or held."""


@dataclass(frozen=True)
class HeldUser:
    entra_id: str
    sf_user_id: str | None
    upn: str | None
    held_at: float | None = None
    rule: str | None = None

    def to_json(self) -> str:
        return json.dumps({"sf_user_id": self.sf_user_id, "upn": self.upn, "held_at": self.held_at,
                           "rule": self.rule})

    @classmethod
    def from_json(cls, entra_id: str, raw: str) -> HeldUser:
        data = json.loads(raw)
        return cls(entra_id, data.get("sf_user_id"), data.get("upn"), data.get("held_at"), data.get("rule"))


@dataclass(frozen=True)
class GuardDecision:
    """What `hold_run` decided for a reconcile run; `held` True means: deactivate none of them now."""

    run_id: str
    held: bool
    reason: str
    count: int
    linked_total: int
    status: str  # allowed, held, approved or rejected (a run decided earlier keeps its decision)


@dataclass(frozen=True)
class LiveCheck:
    """What the live check decided for one deactivation."""

    decision: str  # allowed, approved, held or rejected
    run_id: str | None = None
    newly_held: bool = False
    opened: bool = False

    @property
    def holds(self) -> bool:
        """True: freeze only, do not deactivate (held, or a rejected hold still in force)."""
        return self.decision in (HELD, REJECTED)


@dataclass(frozen=True)
class HeldRun:
    run_id: str
    mode: str
    count: int
    reason: str
    held_at: float
    linked_total: int


def run_key(run_id: str) -> str:
    return f"{RUN_PREFIX}{run_id}"


def run_users_key(run_id: str) -> str:
    return f"{RUN_PREFIX}{run_id}:users"


class DeprovisionGuard:
    """The guard over one Redis (client with `decode_responses=True`) and the settings' thresholds."""

    def __init__(self, redis: Any, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._check = redis.register_script(_CHECK)
        self._decide = redis.register_script(_DECIDE)

    # --- thresholds ------------------------------------------------------------------------------------------------

    def exceeds(self, count: int, linked_total: int) -> str | None:
        """Why `count` deactivations out of `linked_total` linked users must wait for a person; None when they may
        go. The live script applies the same rule."""
        s = self.settings
        if s.guard_max_count > 0 and count > s.guard_max_count:
            return f"{count} deactivations exceed the limit of {s.guard_max_count} (IDSYNC_GUARD_MAX_COUNT)"
        if s.guard_max_share > 0 and count > max(s.guard_share_min_count, s.guard_max_share * linked_total):
            share = count / linked_total if linked_total else 1.0
            return (f"{count} deactivations are {share:.1%} of {linked_total} linked users, over the limit of "
                    f"{s.guard_max_share:.1%} (IDSYNC_GUARD_MAX_SHARE)")
        return None

    # --- reconcile runs --------------------------------------------------------------------------------------------

    def hold_run(self, run_id: str, deprovisions: Sequence[tuple[str, str | None, str | None]],
                 linked_total: int) -> GuardDecision:
        """Decide a reconcile run's deactivations as one set: `deprovisions` are (entra id, Salesforce user id, UPN).

        Held: the users are recorded under `run_id` and the revocation lane freezes them without deactivating.
        Allowed: they are pre-approved, so the live window neither counts nor holds them. A run id seen before keeps
        its first decision (a resumed run asks again and gets the same answer)."""
        stored = self.redis.hgetall(run_key(run_id))
        if stored:
            return self._decision_of(run_id, stored)
        now = time.time()
        users = {e: HeldUser(e, sf, upn, now) for e, sf, upn in deprovisions}
        count = len(users)
        reason = self.exceeds(count, linked_total)
        meta = {"run_id": run_id, "mode": MODE_RECONCILE, "since": repr(now), "count_at_hold": count,
                "linked_total": linked_total, "reason": reason or ""}
        pipe = self.redis.pipeline(transaction=True)
        if reason is None:
            pipe.hset(run_key(run_id), mapping={**meta, "status": ALLOWED})
            pipe.expire(run_key(run_id), DECIDED_RUN_TTL_S)
            for entra_id in users:
                pipe.set(f"{APPROVED_PREFIX}{entra_id}", run_id, ex=PREAPPROVAL_TTL_S)
            pipe.execute()
            return GuardDecision(run_id, False, "", count, linked_total, ALLOWED)
        pipe.hset(run_key(run_id), mapping={**meta, "status": HELD})
        for start in range(0, count, 1000):
            chunk = list(users.values())[start:start + 1000]
            pipe.hset(run_users_key(run_id), mapping={u.entra_id: u.to_json() for u in chunk})
            for user in chunk:
                pipe.hsetnx(HELD_KEY, user.entra_id, run_id)  # held in an earlier run: that run decides them
        pipe.zadd(RUNS_KEY, {run_id: now})
        pipe.execute()
        log.warning("guard_run_held", run_id=run_id, mode=MODE_RECONCILE, users=count, linked_total=linked_total,
                    reason=reason)
        _audit_users(self.redis, Action.GUARD_HELD, run_id, users.values(), "held", reason=reason,
                     mode=MODE_RECONCILE)
        _count_held(MODE_RECONCILE, count)
        return GuardDecision(run_id, True, reason, count, linked_total, HELD)

    def _decision_of(self, run_id: str, stored: dict[str, Any]) -> GuardDecision:
        status = str(stored.get("status"))
        count = int(stored.get("count_at_hold") or 0)
        linked = int(stored.get("linked_total") or 0)
        reason = str(stored.get("reason") or "")
        if status == REJECTED:
            reason = f"rejected by {stored.get('decided_by')}: {reason}"
        return GuardDecision(run_id, status in (HELD, REJECTED), reason, count, linked, status)

    # --- the live pipeline -----------------------------------------------------------------------------------------

    def check_deactivation(self, entra_id: str, sf_user_id: str | None, upn: str | None,
                           rule: str | None = None) -> LiveCheck:
        """Called by the revocation lane right before it deactivates (the user is frozen already): may it?

        One script call; a newly held user is audited (`guard_held`), and a newly opened live run gets its reason."""
        s = self.settings
        now = time.time()
        user = HeldUser(entra_id, sf_user_id, upn, now, rule)
        keys = [HELD_KEY, f"{APPROVED_PREFIX}{entra_id}", f"{REJECTED_PREFIX}{entra_id}", WINDOW_KEY,
                LINKS_BY_SF_KEY, LIVE_RUN_KEY, RUNS_KEY, f"{LIVE_SEQ_PREFIX}:{_day(now)}"]
        args = [entra_id, repr(now), s.guard_window_s, s.guard_max_count, s.guard_max_share,
                s.guard_share_min_count, user.to_json(), RUN_PREFIX, _day(now)]
        decision, run_id, count, linked, opened, new = self._check(keys=keys, args=args)
        decision, run_id = as_text(decision), as_text(run_id) or None
        if decision != HELD or not int(new):
            return LiveCheck(decision, run_id)
        assert run_id is not None
        if int(opened):
            reason = self.exceeds(int(count), int(linked)) or "over the limit"
            reason = f"{reason}, within {s.guard_window_s / 60:g} min (live pipeline)"
            self.redis.hset(run_key(run_id), "reason", reason)
            log.warning("guard_run_held", run_id=run_id, mode=MODE_LIVE, count=int(count), linked_total=int(linked),
                        reason=reason)
        _audit_users(self.redis, Action.GUARD_HELD, run_id, [user], "held", mode=MODE_LIVE,
                     window_count=int(count), linked_total=int(linked))
        _count_held(MODE_LIVE, 1)
        return LiveCheck(HELD, run_id, newly_held=True, opened=bool(int(opened)))

    def approval_used(self, entra_id: str) -> None:
        """The approved deactivation went through: the mark must not let a later, unrelated one bypass the count."""
        self.redis.delete(f"{APPROVED_PREFIX}{entra_id}")

    def forget_rejection(self, entra_id: str) -> bool:
        """An operator wants this rejected user deactivated after all (`idsync review resolve ID --retry`)."""
        return bool(self.redis.delete(f"{REJECTED_PREFIX}{entra_id}"))

    # --- decisions -------------------------------------------------------------------------------------------------

    def approve(self, run_id: str, actor: str) -> list[HeldUser]:
        """Lift the hold: every user of the run may be deactivated. Returns them (the caller publishes one
        `revocation.release_held` each: `publish_release`). Approving an approved run returns its users again, so
        a publish that failed half-way can be repeated."""
        return self._settle(run_id, APPROVED, actor, APPROVED_PREFIX, APPROVAL_TTL_S)

    def reject(self, run_id: str, actor: str) -> list[HeldUser]:
        """Drop the hold: nobody in the run is deactivated; each user keeps a rejection for `guard_reject_keep_s`
        (frozen, not deactivated, not counted). Returns them (the caller re-plans them: `replan_rejected`)."""
        return self._settle(run_id, REJECTED, actor, REJECTED_PREFIX, int(self.settings.guard_reject_keep_s))

    def _settle(self, run_id: str, decision: str, actor: str, prefix: str, ttl_s: int) -> list[HeldUser]:
        keys = [run_key(run_id), run_users_key(run_id), HELD_KEY, RUNS_KEY, LIVE_RUN_KEY, WINDOW_KEY]
        result = [as_text(v) for v in self._decide(
            keys=keys, args=[run_id, decision, actor, repr(time.time()), prefix, ttl_s, DECIDED_RUN_TTL_S])]
        before, released = result[0], result[1:]
        if before == "unknown":
            raise UnknownRun(f"no held run {run_id!r} (`idsync held` lists the held runs)")
        users = self.users(run_id)
        if before == decision:
            return users  # decided so before: the same answer again
        if before != HELD:
            raise GuardError(f"run {run_id} was {before} already, by {self._run(run_id).get('decided_by', '?')}")
        lifted = set(released)
        chosen = [u for u in users if u.entra_id in lifted]
        action = Action.GUARD_APPROVED if decision == APPROVED else Action.GUARD_REJECTED
        _audit_users(self.redis, action, run_id, chosen, decision, actor=actor)
        log.warning(f"guard_run_{decision}", run_id=run_id, users=len(chosen), actor=actor)
        return chosen

    # --- reading ---------------------------------------------------------------------------------------------------

    def _run(self, run_id: str) -> dict[str, Any]:
        return dict(self.redis.hgetall(run_key(run_id)))

    def users(self, run_id: str) -> list[HeldUser]:
        """Every user recorded in a run, oldest first."""
        raw = self.redis.hgetall(run_users_key(run_id))
        users = [HeldUser.from_json(str(e), str(v)) for e, v in raw.items()]
        return sorted(users, key=lambda u: (u.held_at or 0.0, u.entra_id))

    def held_runs(self) -> list[HeldRun]:
        """Runs waiting for `idsync approve` / `idsync reject`, oldest first."""
        ids = [as_text(r) for r in self.redis.zrange(RUNS_KEY, 0, -1)]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(run_key(run_id))
            pipe.hlen(run_users_key(run_id))
        replies = pipe.execute()
        runs = []
        for run_id, meta, count in zip(ids, replies[::2], replies[1::2], strict=True):
            runs.append(HeldRun(run_id, str(meta.get("mode", "?")), int(count), str(meta.get("reason") or ""),
                                float(meta.get("since") or 0.0), int(meta.get("linked_total") or 0)))
        return runs

    def held_users(self) -> int:
        return int(self.redis.hlen(HELD_KEY))

    def held_run_of(self, entra_id: str) -> str | None:
        run = self.redis.hget(HELD_KEY, entra_id)
        return None if run is None else as_text(run)


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


def _audit_users(redis: Any, action: str, run_id: str, users: Iterable[HeldUser], outcome: str, *,
                 actor: str = "idsync", **detail: Any) -> None:
    """One audit record per user (the trail answers "why was this user deactivated hours after being frozen"),
    written in one round trip."""
    events = [AuditEvent.build(str(action), outcome, actor=actor, entra_id=u.entra_id, sf_user_id=u.sf_user_id,
                               upn=u.upn, rule=u.rule, detail=json.loads(json.dumps({"run_id": run_id, **detail},
                                                                                     default=str)))
              for u in users]
    for start in range(0, len(events), 1000):
        append_many(redis, events[start:start + 1000])


def _count_held(mode: str, n: int) -> None:
    metrics.GUARD_HELD.labels(mode).inc(n)


def back_in_scope(redis: Any, links: Any, entra_id: str) -> None:
    """idsync reactivated this user (Entra has them enabled and in scope): a rejected hold is moot, and so is the
    review item that explained it."""
    if redis.delete(f"{REJECTED_PREFIX}{entra_id}"):
        links.resolve_review(entra_id, REVIEW_TOPIC)


# ------------------------------------------------------------------------------------------- acting on a decision
def publish_release(sender: Any, users: Iterable[HeldUser], tenant: str) -> int:
    """One `revocation.release_held` per approved user, through the dispatch table; returns how many."""
    from shared.dispatch import publish
    from shared.events import EventKind, EventSource, IdentityEvent

    sent = 0
    for user in users:
        event = IdentityEvent(kind=EventKind.USER_OUT_OF_SCOPE, source=EventSource.OPERATOR, tenant=tenant,
                              object_id=user.entra_id)
        publish(sender, event, RELEASE_TASK)
        sent += 1
    return sent


def replan_rejected(sender: Any, redis: Any, users: Iterable[HeldUser], tenant: str) -> int:
    """Rejected users go back to the sync lane's backlog: Entra decides again (in scope and enabled: unfrozen; still
    out: kept frozen by their rejection, with a review item). Returns how many."""
    from shared.dirty_users import DirtyUsers
    from shared.dispatch import schedule_drain

    ids = [u.entra_id for u in users]
    if ids:
        backlog = DirtyUsers(redis)
        backlog.mark(ids)
        schedule_drain(sender, backlog, tenant)
    return len(ids)
