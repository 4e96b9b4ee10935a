"""Property: any order or repetition of one user's events ends in the same Salesforce state.

Events are hints (docs/decisions.md#events-are-hints): a hint makes idsync read the current state, so duplicates,
late hints and hints that arrive before the change they announce must not change where a user ends up. For a
random list of Entra changes to a user, two identical users get the same changes; one has its hints delivered in a
random order (some repeated, some early), the other once each, in order. Both must end with the same Salesforce
state — and planning either again finds nothing to do.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.admin_clients import GraphAdmin, OrgAdmin
from shared.provisioning.batch import SyncDeps, sync_users
from shared.provisioning.group_events import members_changed

OPS: list[tuple[str, str, Any]] = [
    ("set", "jobTitle", "Analyst"), ("set", "jobTitle", "Sales Manager"), ("set", "department", "Sales"),
    ("set", "department", None), ("set", "mobilePhone", "+1 206 555 0199"), ("set", "mobilePhone", None),
    ("join", "Sales Team West", None), ("leave", "Sales Team West", None), ("join", "Customer Support", None),
    ("leave", "Customer Support", None), ("join", "Marketing", None), ("leave", "Marketing", None),
    ("join", "Account Executives", None), ("leave", "Account Executives", None),
]
COMPARED = ("IsActive", "IsFrozen", "Profile", "Role", "Title", "Department", "MobilePhone", "PermissionSets",
            "PermissionSetGroups", "Groups")
_serial = itertools.count(1)


def _new_user(tenant: GraphAdmin) -> dict[str, Any]:
    n = next(_serial)
    upn = f"prop{n:04d}@{tenant.verified_domain()}"
    user = tenant.create_user("Prop", f"User{n:04d}", upn, jobTitle="Engineer", department="IT", usageLocation="US")
    tenant.add_to_group(user["id"], "All Employees")
    return user


def _deliver(deps: SyncDeps, tenant: GraphAdmin, hint: tuple[str, str], user_id: str) -> None:
    """What the pipeline does with one hint: a user hint plans the user; a group hint reads the group again and plans
    whoever joined or left (here: the user, if so)."""
    kind, target = hint
    if kind == "user":
        sync_users(deps, [user_id])
        return
    changed = members_changed(deps.graph, deps.redis, deps.mappings.current(), tenant.group(target)["id"]).users
    if user_id in changed:
        sync_users(deps, [user_id])


def _apply(tenant: GraphAdmin, user_id: str, op: tuple[str, str, Any], groups: set[str]) -> tuple[str, str] | None:
    """Make the change in Entra; returns its hint (None when the op does not apply to the current state)."""
    kind, target, value = op
    if kind == "set":
        tenant.update(user_id, {target: value})
        return ("user", user_id)
    if (kind == "join") == (target in groups):
        return None
    (tenant.add_to_group if kind == "join" else tenant.remove_from_group)(user_id, target)
    (groups.add if kind == "join" else groups.discard)(target)
    return ("group", target)


def _view(org: OrgAdmin, upn: str) -> dict[str, Any]:
    view = org.view(upn)
    assert view is not None
    return {k: view[k] for k in COMPARED}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(data=st.data())
def test_any_order_or_repetition_of_a_users_events_ends_in_the_same_salesforce_state(data, deps, sandbox):
    tenant, org = GraphAdmin(sandbox.env()), OrgAdmin(sandbox.env())
    sync_users(deps, [], dry_run=True)  # the mapping's group snapshots exist
    ops = data.draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=6), label="Entra changes")
    shuffled, in_order = _new_user(tenant), _new_user(tenant)
    members_changed(deps.graph, deps.redis, deps.mappings.current(), tenant.group("All Employees")["id"])
    sync_users(deps, [shuffled["id"], in_order["id"]])  # both start provisioned, identically

    # the twin in order: each change, then its hint, once
    groups: set[str] = set()
    for op in ops:
        hint = _apply(tenant, in_order["id"], op, groups)
        if hint is not None:
            _deliver(deps, tenant, (hint[0], in_order["id"]) if hint[0] == "user" else hint, in_order["id"])

    # the shuffled one: the same changes, hints repeated, late, or delivered before their change happened
    timeline: list[tuple[float, int, int]] = [(i * 10.0, 0, i) for i in range(len(ops))]
    groups = set()
    plan_hints = data.draw(st.lists(st.tuples(st.integers(0, max(0, len(ops) - 1)), st.floats(-5, 70)),
                                    max_size=8), label="extra deliveries (op index, time)")
    order = data.draw(st.permutations(list(range(len(ops)))), label="late delivery order")
    for rank, i in enumerate(order):
        timeline.append((len(ops) * 10.0 + rank, 1, i))  # every change's hint once, after all changes, shuffled
    for i, at in plan_hints:
        timeline.append((at, 1, i))  # extra copies, possibly before the change they announce
    for _at, kind, i in sorted(timeline, key=lambda t: (t[0], t[1])):
        op = ops[i]
        if kind == 0:
            _apply(tenant, shuffled["id"], op, groups)
            continue
        hint = ("user", shuffled["id"]) if op[0] == "set" else ("group", op[1])
        _deliver(deps, tenant, hint, shuffled["id"])

    assert _view(org, shuffled["userPrincipalName"]) == _view(org, in_order["userPrincipalName"])
    again = sync_users(deps, [shuffled["id"], in_order["id"]], dry_run=True)
    assert [p.changes for p in again.plans.values()] == [(), ()]
