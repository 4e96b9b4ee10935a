"""The offboarding plan, rule by rule and fall-through by fall-through: pure inputs in, a plan out."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

from rich.console import Console

from shared.mapping import Mapping, load_mapping, parse_mapping_text
from shared.offboarding import (
    Attempt,
    HeldLicence,
    Leaver,
    OffboardingMode,
    OpenRecord,
    Owner,
    OwnerDirectory,
    Queue,
    offboarding_plan,
)
from shared.offboarding.plan import reclaimable

DEMO = Path(__file__).resolve().parents[3] / "examples" / "mapping.yaml"
LEAVER = "0055g00000LEAVERAAA"
MANAGER = Owner("0055g00000MANAGRAAA", "boss@example.com")
ADMIN = Owner("0055g00000ADMINNAAA", "admin@idsync-sandbox.example.com")
LEAD_QUEUE = Queue("00G5g00000LEADQAAA", "Lead_Queue", frozenset({"Lead"}))
SUPPORT_QUEUE = Queue("00G5g00000SUPPQAAA", "Support_Queue", frozenset({"Case"}))
DIRECTORY = OwnerDirectory(users={ADMIN.name: ADMIN}, queues={"Lead_Queue": LEAD_QUEUE,
                                                               "Support_Queue": SUPPORT_QUEUE})


def leaver(**values: object) -> Leaver:
    base: dict[str, object] = {"entra_id": "e-1", "upn": "leaver@example.com", "entra_status": "disabled",
                               "sf_user_id": LEAVER, "sf_active": True, "sf_frozen": False, "manager": MANAGER,
                               "manager_source": "Salesforce ManagerId"}
    base.update(values)
    return Leaver(**base)  # type: ignore[arg-type]


def records(sobject: str, n: int, prefix: str = "006") -> list[OpenRecord]:
    return [OpenRecord(f"{prefix}5g{i:010d}AAA", sobject, LEAVER, f"{sobject} {i}") for i in range(n)]


def mapping(text: str) -> Mapping:
    return parse_mapping_text(textwrap.dedent(text), "mapping.yaml")


def owners(plan: object) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for move in plan.moves:  # type: ignore[attr-defined]
        out.setdefault(move.record.sobject, set()).add(move.owner_name)
    return out


def test_the_demo_contract_manager_else_fallback_and_queues_for_leads_and_cases() -> None:
    demo = load_mapping(DEMO)
    found = {"Opportunity": records("Opportunity", 3), "Account": records("Account", 2, "001"),
             "Task": records("Task", 1, "00T"), "Lead": records("Lead", 2, "00Q"), "Case": records("Case", 2, "500")}
    plan = offboarding_plan(leaver(), found, DIRECTORY, demo)
    assert plan.mode is OffboardingMode.OFFBOARD and plan.freeze and plan.deactivate
    assert owners(plan) == {"Opportunity": {MANAGER.name}, "Account": {MANAGER.name}, "Task": {MANAGER.name},
                            "Lead": {"Lead_Queue"}, "Case": {"Support_Queue"}}
    assert plan.unplaced == ()
    opp = next(m for m in plan.moves if m.record.sobject == "Opportunity")
    assert opp.rule.startswith("manager (Salesforce ManagerId) (mapping.yaml:")
    assert plan.open_counts == {"Opportunity": 3, "Account": 2, "Task": 1, "Lead": 2, "Case": 2}

    no_manager = offboarding_plan(leaver(manager=None, manager_note="the leaver has no manager"), found, DIRECTORY,
                                  demo)
    assert owners(no_manager)["Opportunity"] == {ADMIN.name}
    assert next(m for m in no_manager.moves if m.record.sobject == "Account").rule.startswith(
        f"fallback owner {ADMIN.name}")


def test_an_inactive_manager_falls_through_to_the_fallback_owner() -> None:
    inactive = Owner(MANAGER.id, MANAGER.name, active=False)
    plan = offboarding_plan(leaver(manager=inactive), {"Opportunity": records("Opportunity", 1)}, DIRECTORY,
                            load_mapping(DEMO))
    assert owners(plan) == {"Opportunity": {ADMIN.name}}


def test_an_unlinked_manager_falls_through_and_the_reason_survives_into_an_unplaced_record() -> None:
    m = mapping("""\
        offboarding:
          objects:
            Opportunity:
              rules: [manager]
        """)
    plan = offboarding_plan(leaver(manager=None, manager_note="the Entra manager boss@x is not linked to a "
                                   "Salesforce user"), {"Opportunity": records("Opportunity", 1)}, DIRECTORY, m)
    assert plan.moves == ()
    [item] = plan.unplaced
    assert item.reasons == ("rule 1 (manager): the Entra manager boss@x is not linked to a Salesforce user",)


def test_round_robin_deals_records_to_active_members_in_turn_and_skips_the_leaver() -> None:
    m = mapping("""\
        offboarding:
          fallback_owner: admin@idsync-sandbox.example.com
          objects:
            Opportunity:
              rules: [{round_robin: Sales_Team}, fallback]
        """)
    a, b = Owner("0055g0000000AAAAAA", "a@x"), Owner("0055g0000000BBBAAA", "b@x")
    gone = Owner("0055g0000000CCCAAA", "c@x", active=False)
    team = OwnerDirectory(users=DIRECTORY.users, groups={"Sales_Team": (a, Owner(LEAVER, "leaver@x"), b, gone)})
    plan = offboarding_plan(leaver(), {"Opportunity": records("Opportunity", 5)}, team, m)
    assert [move.owner_name for move in plan.moves] == ["a@x", "b@x", "a@x", "b@x", "a@x"]
    assert plan.moves[0].rule.startswith("round robin Sales_Team")

    empty = OwnerDirectory(users=DIRECTORY.users, groups={"Sales_Team": (gone,)})
    fell = offboarding_plan(leaver(), {"Opportunity": records("Opportunity", 1)}, empty, m)
    assert owners(fell) == {"Opportunity": {ADMIN.name}}
    missing = offboarding_plan(leaver(), {"Opportunity": records("Opportunity", 1)}, DIRECTORY, m)
    assert owners(missing) == {"Opportunity": {ADMIN.name}}


def test_a_queue_that_does_not_take_the_object_falls_through_with_the_setup_fix_named() -> None:
    m = mapping("""\
        offboarding:
          objects:
            Task:
              rules: [{queue: Lead_Queue}, {user: admin@idsync-sandbox.example.com}]
            Case:
              rules: [{queue: Nope_Queue}]
        """)
    plan = offboarding_plan(leaver(), {"Task": records("Task", 1, "00T"), "Case": records("Case", 1, "500")},
                            DIRECTORY, m)
    assert owners(plan) == {"Task": {ADMIN.name}}
    [case] = plan.unplaced
    assert case.reasons == ("rule 1 (queue Nope_Queue): queue Nope_Queue does not exist in Salesforce",)
    only_queue = mapping("""\
        offboarding:
          objects:
            Task:
              rules: [{queue: Lead_Queue}]
        """)
    [task] = offboarding_plan(leaver(), {"Task": records("Task", 1, "00T")}, DIRECTORY, only_queue).unplaced
    assert "does not take Task records (Setup > Queues > Lead_Queue > Supported Objects)" in task.reasons[0]


def test_salesforce_refusing_an_owner_moves_the_record_to_the_next_rule() -> None:
    demo = load_mapping(DEMO)
    [opp] = records("Opportunity", 1)
    inactive = Attempt(opp.id, 0, MANAGER.id, "INACTIVE_OWNER_OR_USER", f"inactive user [{MANAGER.id}]")
    plan = offboarding_plan(leaver(), {"Opportunity": [opp]}, DIRECTORY, demo, attempts={opp.id: [inactive]})
    assert [(m.owner_name, m.rule_index) for m in plan.moves] == [(ADMIN.name, 1)]

    validation = Attempt(opp.id, 1, ADMIN.id, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Owner must be in Sales")
    exhausted = offboarding_plan(leaver(), {"Opportunity": [opp]}, DIRECTORY, demo,
                                 attempts={opp.id: [inactive, validation]})
    assert exhausted.moves == ()
    [item] = exhausted.unplaced
    assert item.reasons == (
        f"rule 1 (manager): Salesforce refused owner {MANAGER.id}: INACTIVE_OWNER_OR_USER: inactive user "
        f"[{MANAGER.id}]",
        f"rule 2 (fallback): Salesforce refused owner {ADMIN.id}: FIELD_CUSTOM_VALIDATION_EXCEPTION: Owner must be "
        "in Sales",
    )


def test_an_owner_reported_inactive_meanwhile_is_skipped_for_every_record() -> None:
    plan = offboarding_plan(leaver(), {"Opportunity": records("Opportunity", 3)}, DIRECTORY, load_mapping(DEMO),
                            refused_owners=frozenset({MANAGER.id}))
    assert owners(plan) == {"Opportunity": {ADMIN.name}}


def test_a_leaver_is_never_their_own_new_owner() -> None:
    plan = offboarding_plan(leaver(manager=Owner(LEAVER, "leaver@example.com")),
                            {"Opportunity": records("Opportunity", 1)}, DIRECTORY, load_mapping(DEMO))
    assert owners(plan) == {"Opportunity": {ADMIN.name}}


def test_no_rule_placing_a_record_makes_it_unplaced_with_every_reason() -> None:
    m = mapping("""\
        offboarding:
          fallback_owner: nobody@example.com
          objects:
            Account:
              rules: [manager, fallback]
        """)
    plan = offboarding_plan(leaver(manager=Owner(MANAGER.id, MANAGER.name, active=False)),
                            {"Account": records("Account", 2, "001")}, DIRECTORY, m)
    assert plan.moves == () and len(plan.unplaced) == 2
    assert plan.unplaced[0].reasons == (
        f"rule 1 (manager): the manager {MANAGER.name} is inactive",
        "rule 2 (fallback): the fallback owner nobody@example.com does not exist in Salesforce",
    )


def test_leave_of_absence_is_freeze_only_and_an_enabled_user_is_no_leaver() -> None:
    demo = load_mapping(DEMO)
    found = {"Opportunity": records("Opportunity", 2)}
    on_leave = offboarding_plan(leaver(on_leave=True), found, DIRECTORY, demo)
    assert on_leave.mode is OffboardingMode.LEAVE_OF_ABSENCE
    assert (on_leave.freeze, on_leave.deactivate, on_leave.moves, on_leave.licences) == (True, False, (), ())
    enabled = offboarding_plan(leaver(entra_status="enabled"), found, DIRECTORY, demo)
    assert enabled.mode is OffboardingMode.NOT_A_LEAVER and not (enabled.freeze or enabled.deactivate or enabled.moves)
    nobody = offboarding_plan(leaver(sf_user_id=None), found, DIRECTORY, demo)
    assert nobody.mode is OffboardingMode.NO_SALESFORCE_USER


def test_without_an_offboarding_section_the_user_is_still_frozen_and_deactivated_and_records_stay() -> None:
    plan = offboarding_plan(leaver(sf_frozen=True), {"Opportunity": records("Opportunity", 2)}, DIRECTORY,
                            mapping("version: 1\n"))
    assert (plan.mode, plan.configured, plan.freeze, plan.deactivate, plan.moves) == (
        OffboardingMode.OFFBOARD, False, False, True, ())


def test_more_records_of_one_object_than_the_threshold_go_through_bulk() -> None:
    m = mapping("""\
        offboarding:
          fallback_owner: admin@idsync-sandbox.example.com
          bulk_threshold: 3
          objects:
            Opportunity: {rules: [fallback]}
            Account: {rules: [fallback]}
        """)
    plan = offboarding_plan(leaver(), {"Opportunity": records("Opportunity", 4), "Account": records("Account", 3,
                                                                                                   "001")},
                            DIRECTORY, m)
    assert plan.bulk_objects == {"Opportunity"}


def test_licence_reclaim_takes_idsync_permission_sets_then_licences_no_remaining_set_needs() -> None:
    psl = HeldLicence("psl", "SalesCloudUserPsl", "0PL1", "2LA1")
    other_psl = HeldLicence("psl", "OtherPsl", "0PL2", "2LA2")
    ours = HeldLicence("ps", "Sales_Cloud_User", "0PS1", "0Pa1", needs="0PL1", granted=True)
    theirs = HeldLicence("ps", "Admin_Tools", "0PS2", "0Pa2", needs="0PL2", granted=False)
    assert reclaimable([psl, other_psl, ours, theirs]) == (ours, psl)
    m = mapping("""\
        offboarding:
          reclaim_licences: true
          objects: {}
        """)
    plan = offboarding_plan(leaver(), {}, DIRECTORY, m, licences=[psl, ours])
    assert [h.key for h in plan.licences] == ["ps:Sales_Cloud_User", "psl:SalesCloudUserPsl"]
    off = offboarding_plan(leaver(), {}, DIRECTORY, load_mapping(DEMO), licences=[psl, ours])
    assert off.licences == ()


def test_the_plan_renders_for_people_and_serialises_for_machines() -> None:
    plan = offboarding_plan(leaver(), {"Opportunity": records("Opportunity", 2), "Lead": records("Lead", 1, "00Q")},
                            DIRECTORY, load_mapping(DEMO))
    out = io.StringIO()
    plan.render(Console(file=out, width=200))
    text = out.getvalue()
    assert "Open records (3)" in text and "Lead_Queue" in text and MANAGER.name in text
    data = json.loads(plan.to_json())
    assert data["mode"] == "offboard" and len(data["moves"]) == 3
    assert data["moves"][0]["from"] == LEAVER and data["open_records"]["Opportunity"] == 2
