"""Each attribute transform, and the value pipeline around them (source, template, default, constant)."""

from __future__ import annotations

import re

import pytest

from shared.mapping.model import Mapping
from shared.mapping.transforms import (
    Template,
    compile_pipeline,
    lookup,
    lower,
    read_path,
    regex_replace,
    strip_ext,
    trim,
    truncate,
    upper,
)


def value_of(spec: object, **attrs: object) -> object:
    """The value the mapping computes for one attribute `X` from Graph `attrs`."""
    mapping = Mapping.model_validate({"attributes": {"X": spec}})
    return mapping.compiled.attributes[0].value(attrs)


def test_lower_and_upper_change_case() -> None:
    assert lower("Jane.SMITH@Contoso.com") == "jane.smith@contoso.com"
    assert upper("cc-sal-01") == "CC-SAL-01"


def test_trim_drops_blanks_an_hr_system_left_around_a_value() -> None:
    assert trim("  Account Executive \t") == "Account Executive"


def test_strip_ext_turns_a_guest_upn_back_into_the_invited_address() -> None:
    assert strip_ext("jane_contoso.com#EXT#@tenant.onmicrosoft.com") == "jane@contoso.com"


def test_strip_ext_uses_the_last_underscore_so_underscores_in_the_local_part_survive() -> None:
    assert strip_ext("jane_doe_partner.example.org#EXT#@tenant.onmicrosoft.com") == "jane_doe@partner.example.org"


def test_strip_ext_leaves_a_member_upn_unchanged() -> None:
    assert strip_ext("jane_doe@contoso.com") == "jane_doe@contoso.com"


def test_truncate_keeps_the_first_characters() -> None:
    assert truncate("Senior Software Engineer", 6) == "Senior"
    assert value_of({"source": "jobTitle", "transforms": [{"truncate": 3}]}, jobTitle="Engineer") == "Eng"


def test_regex_replace_substitutes_every_match_with_group_references() -> None:
    assert regex_replace("+1 206 555 0100", re.compile(r"^\+1 (\d{3}) "), r"(\1) ") == "(206) 555 0100"
    spec = {"source": "mobilePhone", "transforms": [{"regex_replace": {"pattern": r"\s+", "replacement": ""}}]}
    assert value_of(spec, mobilePhone="+1 206 555 0100") == "+12065550100"


def test_lookup_maps_a_known_value_ignoring_case_by_default() -> None:
    spec = {"source": "usageLocation", "transforms": [{"lookup": {"table": {"US": "United States"}}}]}
    assert value_of(spec, usageLocation="us") == "United States"


def test_lookup_gives_the_default_for_an_unknown_value() -> None:
    table = {"table": {"US": "United States"}, "default": "Other"}
    spec = {"source": "usageLocation", "transforms": [{"lookup": table}]}
    assert value_of(spec, usageLocation="DE") == "Other"


def test_lookup_without_default_keeps_an_unknown_value() -> None:
    assert lookup("DE", {"us": "United States"}, None, case_sensitive=False) == "DE"


def test_lookup_can_be_case_sensitive() -> None:
    spec = {"source": "x", "transforms": [{"lookup": {"table": {"A": "1"}, "case_sensitive": True}}]}
    assert value_of(spec, x="a") == "a"
    assert value_of(spec, x="A") == "1"


def test_transforms_apply_in_the_order_written() -> None:
    pipeline = compile_pipeline(["upper", "trim"])
    assert pipeline is not None and pipeline("  ab ") == "AB"
    assert value_of({"source": "x", "transforms": ["lower", {"truncate": 2}]}, x="ABC") == "ab"


def test_template_joins_attributes_and_literals() -> None:
    assert value_of({"template": "{givenName} {surname}"}, givenName="Jane", surname="Smith") == "Jane Smith"


def test_template_reads_dotted_paths_into_nested_objects() -> None:
    spec = {"template": "{employeeOrgData.costCenter}/{employeeOrgData.division}"}
    assert value_of(spec, employeeOrgData={"costCenter": "CC-1", "division": "GTM"}) == "CC-1/GTM"


def test_template_with_every_placeholder_empty_is_empty_not_its_literals() -> None:
    assert Template("{employeeOrgData.costCenter}-EU").render({}) is None


def test_template_with_some_placeholders_empty_renders_the_rest_trimmed() -> None:
    assert Template("{givenName} {surname}").render({"surname": "Smith"}) == "Smith"


def test_template_doubled_braces_are_literal_braces() -> None:
    assert Template("{{id}} {x}").render({"x": "1"}) == "{id} 1"


def test_template_rejects_an_unbalanced_brace() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        Template("{givenName")


def test_a_list_value_gives_its_first_element_and_a_number_segment_indexes_it() -> None:
    attrs = {"businessPhones": ["+1 425 555 0001", "+1 425 555 0002"]}
    assert read_path(attrs, ("businessPhones",)) == "+1 425 555 0001"
    assert read_path(attrs, ("businessPhones", "1")) == "+1 425 555 0002"
    assert read_path({"businessPhones": []}, ("businessPhones",)) is None


def test_booleans_and_numbers_become_salesforce_text() -> None:
    assert read_path({"a": True, "b": 7}, ("a",)) == "true"
    assert read_path({"a": True, "b": 7}, ("b",)) == "7"


def test_default_applies_when_the_source_is_empty_and_goes_through_the_transforms() -> None:
    spec = {"source": "surname", "default": "{displayName}", "transforms": ["upper"]}
    assert value_of(spec, displayName="Jane Smith") == "JANE SMITH"
    assert value_of(spec, surname="Smith", displayName="Jane Smith") == "SMITH"


def test_constant_gives_the_same_value_whatever_entra_says() -> None:
    assert value_of({"constant": "Contoso"}, companyName="Fabrikam") == "Contoso"
    assert value_of({"constant": True}) is True


def test_an_empty_source_without_default_is_none() -> None:
    assert value_of("jobTitle", jobTitle="") is None
    assert value_of("jobTitle") is None
