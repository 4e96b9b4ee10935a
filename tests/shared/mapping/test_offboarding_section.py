"""The `offboarding:` section: the demo contract, open-record filters, and the mistakes `mapping check` reports."""

from __future__ import annotations

import textwrap
from pathlib import Path

from shared.mapping import check_mapping_text, load_mapping, parse_mapping_text
from shared.mapping.offboarding import RuleKind
from shared.offboarding.reader import records_query

DEMO = Path(__file__).resolve().parents[3] / "examples" / "mapping.yaml"


def problems(text: str) -> list[str]:
    return [str(p) for p in check_mapping_text(textwrap.dedent(text), "m.yaml")]


def test_the_demo_mapping_carries_the_demo_contract() -> None:
    section = load_mapping(DEMO).offboarding
    assert section is not None
    assert section.fallback_owner == "admin@idsync-sandbox.example.com"
    rules = {name: [(r.kind, r.name) for r in spec.rules] for name, spec in section.objects.items()}
    assert rules == {
        "Opportunity": [(RuleKind.MANAGER, None), (RuleKind.FALLBACK, None)],
        "Account": [(RuleKind.MANAGER, None), (RuleKind.FALLBACK, None)],
        "Task": [(RuleKind.MANAGER, None), (RuleKind.FALLBACK, None)],
        "Lead": [(RuleKind.QUEUE, "Lead_Queue")],
        "Case": [(RuleKind.QUEUE, "Support_Queue")],
    }
    assert (section.bulk_threshold, section.reclaim_licences, section.leave_of_absence) == (2000, False, None)


def test_open_records_filters_default_per_object_and_can_be_replaced_or_dropped() -> None:
    section = parse_mapping_text(textwrap.dedent("""\
        offboarding:
          objects:
            Opportunity: {rules: [manager]}
            Account: {rules: [manager]}
            Case: {open: all, rules: [manager]}
            Project__c: {open: "Status__c != 'Done'", rules: [manager]}
        """), "m.yaml").offboarding
    assert section is not None
    assert section.open_filter("Opportunity") == "IsClosed = false"
    assert section.open_filter("Lead") == "IsConverted = false"
    assert section.open_filter("Account") is None
    assert section.open_filter("Case") is None
    assert section.open_filter("Project__c") == "Status__c != 'Done'"
    assert records_query("Opportunity", "005000000000001AAA", "IsClosed = false") == (
        "SELECT Id, OwnerId, Name FROM Opportunity WHERE OwnerId = '005000000000001AAA' AND (IsClosed = false) "
        "ORDER BY Id")
    assert records_query("Case", "005000000000001AAA", None).startswith("SELECT Id, OwnerId, CaseNumber FROM Case")


def test_a_queue_for_an_object_queues_cannot_own_is_an_error() -> None:
    assert problems("""\
        offboarding:
          objects:
            Opportunity:
              rules: [manager, {queue: Lead_Queue}]
            Account:
              rules:
                - queue: Lead_Queue
        """) == [
        "m.yaml:4:24: offboarding.objects.Opportunity.rules[1]: a queue cannot own Opportunity records (Salesforce "
        "has no queue support for Opportunity) (fix: use manager, round_robin, user or fallback)",
        "m.yaml:7:11: offboarding.objects.Account.rules[0]: a queue cannot own Account records (Salesforce has no "
        "queue support for Account) (fix: use manager, round_robin, user or fallback)",
    ]


def test_fallback_without_a_fallback_owner_and_unknown_rules_are_errors() -> None:
    assert problems("""\
        offboarding:
          objects:
            Lead:
              rules: [fallback]
        """) == ["m.yaml:1:1: offboarding: a rule says 'fallback' but no fallback_owner is set (fix: add "
                 "offboarding.fallback_owner: <Username>)"]
    found = problems("""\
        offboarding:
          objects:
            Lead:
              rules: [managr, {queu: Lead_Queue}]
        """)
    assert found[0].startswith("m.yaml:4:15: offboarding.objects.Lead.rules[0]: unknown rule 'managr'")
    assert found[1] == "m.yaml:4:24: offboarding.objects.Lead.rules[1]: unknown key 'queu' (fix: did you mean " \
                       "'queue'?)"


def test_an_open_filter_must_be_a_condition_only() -> None:
    found = problems("""\
        offboarding:
          objects:
            Lead:
              open: "IsConverted = false ORDER BY Name"
              rules: [manager]
            Case:
              open: ""
              rules: [manager]
        """)
    assert found == [
        "m.yaml:4:13: offboarding.objects.Lead.open: 'order by' does not belong in a condition: write only what "
        "follows WHERE",
        "m.yaml:7:13: offboarding.objects.Case.open: an empty condition: leave 'open' out for the default, or write "
        "'all'",
    ]


def test_a_mapping_without_the_section_stays_valid() -> None:
    assert problems("version: 1\n") == []
