"""Properties of `plan` over random users and random Salesforce states (hypothesis):
- applying a plan reaches a fixed point: planning again gives a no-op plan;
- after it, the user holds every wanted entitlement and every managed field has its wanted value;
- what idsync did not grant is never removed;
- planning is deterministic (same inputs, same JSON)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.engine import (
    ChangeKind,
    EntraUser,
    PlanAction,
    SalesforceUserState,
    desired_user,
    entitlement_key,
    plan,
)
from tests.shared.engine.builders import (
    PERMISSION_SETS,
    PROFILES,
    PSGS,
    PSL,
    PUBLIC_GROUPS,
    QUEUES,
    ROLES,
    apply_to_state,
    demo_mapping,
    entra_user,
    existing_user,
    sandbox_catalog,
)

CATALOG = sandbox_catalog()
MAPPING = demo_mapping()
GROUPS = ["All Employees", "Sales Team West", "Sales Team East", "Account Executives", "Customer Support",
          "Marketing", "Engineering"]
ALL_KEYS = (["role"] + [entitlement_key("ps", n) for n in PERMISSION_SETS]
            + [entitlement_key("psg", n) for n in PSGS] + [entitlement_key("psl", n) for n in PSL]
            + [entitlement_key("group", n) for n in PUBLIC_GROUPS] + [entitlement_key("queue", n) for n in QUEUES])

text = st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=120))
short = st.one_of(st.none(), st.text(alphabet="abcdefghij XYZ-", min_size=1, max_size=30))


@st.composite
def entra_users(draw: st.DrawFn) -> EntraUser:
    manager = draw(st.sampled_from([None, "3b1d3f0c-5a7e-4a59-9d3e-1f7e6c2b9a10"]))
    return entra_user(
        draw(st.sets(st.sampled_from(GROUPS), max_size=5)),
        upn=draw(st.sampled_from(["jane.smith@contoso.example.com", "Jane.Doe@Contoso.example.com"])),
        enabled=draw(st.booleans() | st.just(True)),
        user_type=draw(st.sampled_from(["Member", "Member", "Guest"])),
        manager_id=manager,
        jobTitle=draw(text),
        department=draw(short),
        mobilePhone=draw(short),
        employeeId=draw(st.one_of(st.none(), st.text(alphabet="E0123456789", min_size=1, max_size=25))),
        givenName=draw(short),
        surname=draw(short),
        displayName=draw(st.sampled_from(["Jane Smith", None])),
        mail=draw(st.sampled_from([None, "jane.smith@contoso.example.com", "JANE@contoso.example.com"])),
        usageLocation=draw(st.sampled_from([None, "US", "DE", "FR", "ZZ"])),
    )


@st.composite
def salesforce_states(draw: st.DrawFn) -> SalesforceUserState:
    manager_sf = draw(st.sampled_from([None, "005000000000077AAA"]))
    if draw(st.booleans()):
        return SalesforceUserState(manager_sf_id=manager_sf)
    user = existing_user(
        Title=draw(text), Department=draw(short), MobilePhone=draw(short), Email=draw(st.sampled_from(
            ["jane.smith@contoso.example.com", "old@legacy.example.com"])),
        ProfileId=draw(st.sampled_from(list(PROFILES.values()))),
        UserRoleId=draw(st.sampled_from([None, *ROLES.values()])),
        ManagerId=draw(st.sampled_from([None, "005000000000011AAA"])),
        IsActive=draw(st.booleans()),
        Entra_Object_Id__c=draw(st.sampled_from([None, "7f3c1c9e-0b7d-4c8e-9a55-2d1f0e6b1a01"])),
    )
    ps = draw(st.sets(st.sampled_from(list(PERMISSION_SETS))))
    return SalesforceUserState(
        user=user,
        permission_sets={PERMISSION_SETS[n].id: f"0Pa{n}" for n in ps},
        permission_set_groups={PSGS[n]: f"0Pg{n}" for n in draw(st.sets(st.sampled_from(list(PSGS))))},
        licences={PSL[n]: f"2LA{n}" for n in draw(st.sets(st.sampled_from(list(PSL))))},
        groups={gid: f"011{gid}" for gid in draw(st.sets(st.sampled_from([*PUBLIC_GROUPS.values(),
                                                                            *QUEUES.values()])))},
        granted=frozenset(draw(st.sets(st.sampled_from(ALL_KEYS)))),
        manager_sf_id=manager_sf,
    )


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(entra_users(), salesforce_states())
def test_applying_a_plan_reaches_a_fixed_point(user: EntraUser, state: SalesforceUserState) -> None:
    first = plan(user, MAPPING, state, CATALOG)
    after = apply_to_state(first, state)
    second = plan(user, MAPPING, after, CATALOG)
    assert second.is_noop, second.to_json()
    if first.action in (PlanAction.IGNORE, PlanAction.REVIEW, PlanAction.NOOP):
        assert after == state


@PROPERTY
@given(entra_users(), salesforce_states())
def test_after_a_plan_the_user_has_what_the_mapping_wants(user: EntraUser, state: SalesforceUserState) -> None:
    desired = desired_user(user, MAPPING, CATALOG, state.manager_sf_id)
    first = plan(user, MAPPING, state, CATALOG)
    if not desired.in_scope or first.reviews or first.action is PlanAction.REVIEW:
        return  # nothing to provision, or a person decides part of it
    after = apply_to_state(first, state)
    assert after.user is not None
    held = {**after.permission_sets, **after.permission_set_groups, **after.licences, **after.groups}
    for grants in desired.entitlements.values():
        for grant in grants.values():
            assert grant.sf_id in held, grant
    for name, wanted in desired.fields.items():
        if wanted.create_only and first.action is not PlanAction.CREATE:
            continue
        current: Any = after.user.get(name)
        if name in ("Username", "Email") and isinstance(current, str) and isinstance(wanted.value, str):
            if name == "Username":
                assert current.casefold() in {c.casefold() for c in desired.username_candidates}
            else:
                assert current.casefold() == wanted.value.casefold()
        else:
            assert (current or None) == (wanted.value or None), name
    assert desired.profile is not None and after.user["ProfileId"] == desired.profile.sf_id


@PROPERTY
@given(entra_users(), salesforce_states())
def test_only_entitlements_idsync_granted_are_ever_removed(user: EntraUser, state: SalesforceUserState) -> None:
    p = plan(user, MAPPING, state, CATALOG)
    for change in p.changes:
        if change.kind.value.startswith("remove_"):
            assert change.revokes and set(change.revokes) <= state.granted
        if change.kind is ChangeKind.SET_ROLE and change.after is None:
            assert "role" in state.granted


@PROPERTY
@given(entra_users(), salesforce_states())
def test_planning_is_deterministic(user: EntraUser, state: SalesforceUserState) -> None:
    assert plan(user, MAPPING, state, CATALOG).to_json() == plan(user, MAPPING, state, CATALOG).to_json()
