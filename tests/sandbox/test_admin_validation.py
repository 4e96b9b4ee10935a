"""Checking setting patches and `--set`/`--fault` assignments before they reach the running modules."""

from __future__ import annotations

import pytest

from sandbox.admin import apply_patch, parse_assignment, validate_patch
from sandbox.config import DEFAULT_CONFIG, DEFAULT_FAULTS, Tunables


def test_an_assignment_value_is_read_as_json_when_it_parses() -> None:
    assert parse_assignment("graph.ru_per_10s=100") == {"graph": {"ru_per_10s": 100}}
    assert parse_assignment("salesforce.error_rate=0.25") == {"salesforce": {"error_rate": 0.25}}
    assert parse_assignment("graph.delta_expired_code=resyncRequired") == {
        "graph": {"delta_expired_code": "resyncRequired"}
    }


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("salesforce.error_kinds=503", ["503"]),
        ("salesforce.error_kinds=503,timeout", ["503", "timeout"]),
        ('salesforce.error_kinds=["reset"]', ["reset"]),
    ],
)
def test_a_list_setting_accepts_a_bare_or_comma_separated_value(text: str, kinds: list[str]) -> None:
    patch = validate_patch(DEFAULT_FAULTS, parse_assignment(text, DEFAULT_FAULTS))
    assert patch["salesforce"]["error_kinds"] == kinds


def test_an_assignment_without_section_key_and_value_is_refused() -> None:
    for text in ("ru_per_10s=5", "graph.ru_per_10s", "=5"):
        with pytest.raises(ValueError, match="SECTION.KEY=VALUE"):
            parse_assignment(text)


def test_an_integral_float_is_accepted_for_an_integer_setting() -> None:
    assert validate_patch(DEFAULT_CONFIG, {"graph": {"delta_page_size": 50.0}}) == {"graph": {"delta_page_size": 50}}


def test_a_rejected_patch_leaves_the_tunables_untouched() -> None:
    tunables = Tunables(DEFAULT_FAULTS)
    before = tunables.snapshot()
    with pytest.raises(ValueError, match="unknown kind 'boom'"):
        apply_patch(tunables, DEFAULT_FAULTS, {"salesforce": {"error_rate": 0.5, "error_kinds": ["boom"]}})
    assert tunables.snapshot() == before


def test_null_means_back_to_the_default() -> None:
    tunables = Tunables(DEFAULT_CONFIG)
    apply_patch(tunables, DEFAULT_CONFIG, {"salesforce": {"daily_api_limit": 5}})
    after = apply_patch(tunables, DEFAULT_CONFIG, {"salesforce": {"daily_api_limit": None}})
    assert after["salesforce"]["daily_api_limit"] == DEFAULT_CONFIG["salesforce"]["daily_api_limit"]
