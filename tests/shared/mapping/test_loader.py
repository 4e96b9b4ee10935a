"""Reading mapping files: every problem with the exact line and column, and a fix; the demo mapping is valid."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest

from shared.mapping import Mapping, MappingError, check_mapping_text, load_mapping, parse_mapping_text
from shared.mapping.model import parse_match_rule

DEMO = Path(__file__).resolve().parents[3] / "examples" / "mapping.yaml"


def problems(text: str) -> list[str]:
    return [str(p) for p in check_mapping_text(textwrap.dedent(text), "m.yaml")]


def test_the_shipped_demo_mapping_is_valid() -> None:
    mapping = load_mapping(DEMO)
    assert [r.group for r in mapping.group_rules] == [
        "All Employees", "Customer Support", "Sales Team West", "Sales Team East", "Account Executives", "Marketing"]
    assert check_mapping_text(DEMO.read_text(), "mapping.yaml") == []


def test_where_names_the_file_line_of_a_rule() -> None:
    mapping = load_mapping(DEMO)
    lines = DEMO.read_text().splitlines()
    title_line = next(i for i, line in enumerate(lines, 1) if line.strip().startswith("Title:"))
    assert mapping.where(("attributes", "Title")) == f"mapping.yaml:{title_line}"
    west = next(i for i, line in enumerate(lines, 1) if line.strip() == "- group: Sales Team West")
    assert mapping.where(("group_rules", 2)) == f"mapping.yaml:{west}"


def test_bad_indentation_is_reported_at_the_line_and_column_with_a_fix() -> None:
    found = problems("""\
        scope:
          groups: [All Employees]
         attributes:
          Title: jobTitle
        """)
    assert len(found) == 1
    assert found[0].startswith("m.yaml:3:2: YAML syntax:")
    assert "(fix: check this line's indentation" in found[0]


def test_an_unknown_key_suggests_the_closest_valid_one() -> None:
    assert problems("""\
        group_rules:
          - group: Sales Team West
            permision_sets: [Sales_Cloud_User]
        """) == ["m.yaml:3:5: group_rules[0]: unknown key 'permision_sets' (fix: did you mean 'permission_sets'?)"]


def test_an_unknown_key_inside_a_transform_suggests_from_that_transform() -> None:
    found = problems("""\
        attributes:
          Title:
            source: jobTitle
            transforms: [{regex_replace: {pattern: x, replacment: y}}]
        """)
    assert found == ["m.yaml:4:47: attributes.Title.transforms[0].regex_replace: unknown key 'replacment' "
                     "(fix: did you mean 'replacement'?)"]


def test_a_wrong_type_names_what_was_expected() -> None:
    assert problems("""\
        scope:
          groups: All Employees
        """) == ["m.yaml:2:11: scope.groups: expected a list, got text 'All Employees' (fix: write a list here)"]


def test_an_unknown_transform_suggests_the_closest_known_one() -> None:
    assert problems("""\
        attributes:
          Title:
            source: jobTitle
            transforms: [trim, lowr]
        """) == ["m.yaml:4:24: attributes.Title.transforms[1]: unknown transform 'lowr' (fix: did you mean 'lower'?)"]


def test_a_transform_needing_an_argument_says_how_to_write_it() -> None:
    found = problems("""\
        attributes:
          Title: {source: jobTitle, transforms: [truncate]}
        """)
    assert len(found) == 1 and "transform 'truncate' needs an argument, e.g. {truncate: 20}" in found[0]


def test_a_bad_enum_value_lists_the_allowed_ones() -> None:
    assert problems("""\
        attributes:
          Title: {source: jobTitle, on_empty: maybe}
        """) == ["m.yaml:2:39: attributes.Title.on_empty: 'maybe' is not allowed here (fix: use 'clear' or 'keep')"]


def test_a_bad_regular_expression_is_reported_where_it_is_written() -> None:
    found = problems("""\
        scope:
          filters:
            - {attribute: department, matches: "(Sales"}
        """)
    assert len(found) == 1
    assert found[0].startswith("m.yaml:3:40: scope.filters[0].matches: not a valid regular expression: missing )")


def test_a_duplicate_key_is_an_error_because_yaml_would_silently_keep_the_last() -> None:
    assert problems("""\
        attributes:
          Title: jobTitle
          Title: department
        """) == ["m.yaml:3:3: attributes.Title: duplicate key (first at line 2) "
                 "(fix: keep one of them: YAML would silently use the last)"]


def test_several_problems_are_all_reported_in_file_order() -> None:
    found = problems("""\
        scope:
          usr_types: [Member]
        group_rules:
          - group: A
            profile: [x]
          - profile: Standard User
        """)
    assert [f.split(": ")[0] for f in found] == ["m.yaml:2:3", "m.yaml:5:14", "m.yaml:6:5"]
    assert "missing required key 'group'" in found[2]


def test_a_reserved_field_cannot_be_mapped_as_an_attribute() -> None:
    assert problems("""\
        attributes:
          ProfileId: department
        """) == ["m.yaml:2:3: attributes.ProfileId: ProfileId cannot be mapped here: group_rules set the profile "
                 "(fix: remove attributes.ProfileId)"]


def test_a_matching_rule_may_only_compare_fields_the_mapping_fills() -> None:
    found = problems("""\
        attributes:
          Email: mail
        matching:
          rules: [link, Email AND EmployeeNumber]
        """)
    assert found == ["m.yaml:4:17: matching.rules[1]: rule 'Email AND EmployeeNumber' compares EmployeeNumber, "
                     "which this mapping gives no value (fix: add attributes.EmployeeNumber, or drop it from the rule)"]


def test_the_stored_link_rule_must_come_first() -> None:
    found = problems("""\
        matching:
          rules: [Username, link]
        """)
    assert len(found) == 1 and "'link' must be the first rule" in found[0]


def test_a_group_rule_granting_nothing_is_flagged() -> None:
    found = problems("""\
        group_rules:
          - group: Engineering
            precedence: 3
        """)
    assert found == ["m.yaml:2:5: group_rules[0]: the rule for 'Engineering' grants nothing "
                     "(fix: add a profile, role, permission_sets, ... or remove the rule)"]


def test_an_empty_file_is_a_problem_not_an_empty_mapping() -> None:
    assert problems("") == ["m.yaml:1:1: the mapping file is empty (fix: start from examples/mapping.yaml)"]


def test_load_mapping_raises_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text("scope:\n  usr_types: []\nattributes:\n  Title: {source: x, transforms: [lowr]}\n")
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert [(p.line, p.column) for p in err.value.problems] == [(2, 3), (4, 35)]
    assert str(err.value).startswith("mapping.yaml:2:3: scope: unknown key 'usr_types'")


def test_an_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as err:
        load_mapping(tmp_path / "missing.yaml")
    assert "cannot read the file" in str(err.value)


def test_a_mapping_built_in_code_has_no_file_lines() -> None:
    assert Mapping().where(("attributes", "Title")) == "mapping"


def test_match_rules_are_fields_joined_by_and() -> None:
    assert parse_match_rule("Email AND EmployeeNumber") == ("Email", "EmployeeNumber")
    assert parse_match_rule("link") == ("link",)
    with pytest.raises(ValueError, match="stands alone"):
        parse_match_rule("link AND Email")


def test_the_json_schema_describes_the_file_including_shorthands() -> None:
    schema = Mapping.model_json_schema()
    assert set(schema["properties"]) == {"version", "scope", "username", "attributes", "locale", "manager",
                                         "link_field", "group_rules", "matching", "offboarding", "guests",
                                         "enrichment", "requests"}
    entry = schema["properties"]["attributes"]["additionalProperties"]
    assert {"type": "string"} in entry["anyOf"]  # `Title: jobTitle`
    json.dumps(schema)


def test_parse_mapping_text_returns_a_mapping_that_knows_its_lines() -> None:
    mapping = parse_mapping_text("attributes:\n  Title: jobTitle\n", "inline.yaml")
    assert mapping.where(("attributes", "Title")) == "inline.yaml:2"


def test_a_loaded_mapping_pickles_with_its_lines_and_compiles_again() -> None:
    mapping = load_mapping(DEMO)
    first_rule = mapping.compiled.attributes[0].rule
    copy = pickle.loads(pickle.dumps(mapping))
    assert copy == mapping
    assert copy.compiled.attributes[0].rule == first_rule
