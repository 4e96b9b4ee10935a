"""SOQL parser and engine against an in-memory RecordSource over the shipped org schema (no server needed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pytest

from sandbox.salesforce.schema import FieldInfo, default_schema
from sandbox.salesforce.soql import QueryResult, SoqlError, SoqlQuery, execute, parse

NOW = dt.datetime(2026, 3, 11, 15, 30, tzinfo=dt.UTC)  # a Wednesday


class FakeSource:
    """Implements `RecordSource` with the real schema and hand-made records stored like the org stores them."""

    def __init__(self) -> None:
        self.schema = default_schema()
        self._lower = {name.lower(): name for name in self.schema}
        self._prefix = {od.key_prefix: name for name, od in self.schema.items()}
        self.live: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self.deleted: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self._n = 0

    def object_names(self) -> list[str]:
        return list(self.schema)

    def describe_fields(self, sobject: str) -> dict[str, FieldInfo] | None:
        name = self._lower.get(sobject.lower())
        return None if name is None else self.schema[name].fields

    def records(self, sobject: str, include_deleted: bool = False) -> Iterable[dict[str, Any]]:
        rows = list(self.live[sobject].values())
        if include_deleted:
            rows += list(self.deleted[sobject].values())
        return rows

    def get(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        name = self._prefix.get(record_id[:3])
        if name is None:
            return None
        for rid, rec in {**self.live[name], **self.deleted[name]}.items():
            if rid[:15] == record_id[:15]:
                return name, rec
        return None

    def add(self, sobject: str, *, deleted: bool = False, **values: Any) -> str:
        """Insert a record with every schema field present (None when not given)."""
        self._n += 1
        rid = self.schema[sobject].key_prefix + f"5G000{self._n:07d}AAA"
        rec: dict[str, Any] = {name: None for name in self.schema[sobject].fields}
        rec.update(values, Id=rid, IsDeleted=deleted)
        (self.deleted if deleted else self.live)[sobject][rid] = rec
        return rid


@pytest.fixture
def org() -> FakeSource:
    src = FakeSource()
    std = src.add("Profile", Name="Standard User")
    admin = src.add("Profile", Name="System Administrator")
    src.add("User", Username="ada@example.com", LastName="Lovelace", FirstName="Ada", IsActive=True, ProfileId=std,
            Department="Engineering", CreatedDate="2026-03-11T08:00:00.000+0000", FederationIdentifier="ada-1")
    src.add("User", Username="bob@example.com", LastName="O'Brien", FirstName="Bob", IsActive=False, ProfileId=admin,
            Department=None, CreatedDate="2026-02-01T08:00:00.000+0000")
    src.add("User", Username="cy_x@example.com", LastName="Cyr", FirstName="Cy", IsActive=True, ProfileId=None,
            Department="Sales", CreatedDate="2025-12-31T23:59:59.000+0000")
    return src


def rows(org: FakeSource, soql: str, **kw: Any) -> list[dict[str, Any]]:
    return execute(parse(soql), org, now=NOW, **kw).records("62.0")


def usernames(org: FakeSource, where: str) -> list[str]:
    return [r["Username"] for r in rows(org, f"SELECT Username FROM User WHERE {where}")]


def soql_error(org: FakeSource, soql: str) -> SoqlError:
    with pytest.raises(SoqlError) as info:
        execute(parse(soql), org, now=NOW)
    return info.value


# ---------------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "soql",
    [
        "SELECT Id, Username, Profile.Name, Owner.IsActive FROM User",
        "select id from user where isactive = true and (department = 'x' or department = null)",
        "SELECT COUNT() FROM User",
        "SELECT COUNT(Id) FROM User WHERE IsActive = TRUE",
        "SELECT Id FROM User WHERE NOT (IsActive = false)",
        "SELECT Id FROM User WHERE Username IN ('a@b.c', 'd@e.f') AND Id NOT IN ('005000000000001')",
        "SELECT Id FROM User WHERE Username LIKE 'a%_\\%' AND Department <> 'x' AND Department != 'y'",
        "SELECT Id FROM User WHERE CreatedDate >= 2024-01-01T00:00:00Z AND CreatedDate < 2024-01-01T00:00:00+05:00",
        "SELECT Id FROM Opportunity WHERE CloseDate = 2024-01-01 OR CloseDate > LAST_N_DAYS:30",
        "SELECT Id FROM User WHERE CreatedDate = TODAY OR CreatedDate = YESTERDAY OR CreatedDate < NEXT_N_DAYS:7",
        "SELECT Id FROM Opportunity WHERE Amount > -10.5 AND Amount <= 100",
        "SELECT Id FROM User ORDER BY LastName DESC NULLS FIRST, FirstName ASC NULLS LAST, Id LIMIT 10 OFFSET 20",
        "SELECT Id FROM User WHERE Id = '005000000000001AAA' FOR UPDATE",
        "SELECT Id FROM User FOR VIEW",
        "SELECT Id\nFROM User\nWHERE IsActive = true",
    ],
)
def test_parser_accepts_the_supported_query_forms(soql: str) -> None:
    query = parse(soql)
    assert isinstance(query, SoqlQuery)
    assert query.sobject.lower() in {"user", "opportunity"}


@pytest.mark.parametrize(
    "soql",
    [
        "SELECT FROM User",
        "SELECT Id, FROM User",
        "SELECT Id User",
        "SELECT Id FROM User WHERE",
        "SELECT Id FROM User WHERE IsActive = true AND Department = 'x' OR Department = 'y'",
        'SELECT Id FROM User WHERE Username = "ada@example.com"',
        "SELECT Id FROM User LIMIT ten",
        "SELECT Id FROM User WHERE CreatedDate = LAST_N_DAYS",
        "SELECT Id FROM User WHERE CreatedDate = SOMEDAY",
        "SELECT Id FROM User WHERE Username = 'a\\qb'",
        "SELECT Id FROM User WHERE Username = 'unterminated",
        "SELECT Id FROM User ORDER Username",
        "DELETE FROM User",
    ],
)
def test_parser_rejects_malformed_queries_with_malformed_query(soql: str) -> None:
    with pytest.raises(SoqlError) as info:
        parse(soql)
    assert info.value.error_code == "MALFORMED_QUERY"
    assert "ERROR at Row:" in info.value.message


def test_malformed_query_message_points_at_the_unexpected_token() -> None:
    with pytest.raises(SoqlError) as info:
        parse("SELECT Id FROM User WHERE IsActive = true AND Department = 'x' OR Department = 'y'")
    assert info.value.message.endswith("ERROR at Row:1:Column:64\nunexpected token: 'OR'")
    with pytest.raises(SoqlError) as info:
        parse("SELECT Id FROM User WHERE")
    assert info.value.message == (
        "\nSELECT Id FROM User WHERE\n                         ^\nERROR at Row:1:Column:26\nunexpected token: <EOF>"
    )


def test_empty_query_is_malformed() -> None:
    with pytest.raises(SoqlError) as info:
        parse("   ")
    assert info.value.error_code == "MALFORMED_QUERY"


def test_offset_above_2000_is_out_of_range() -> None:
    with pytest.raises(SoqlError) as info:
        parse("SELECT Id FROM User OFFSET 2001")
    assert info.value.error_code == "NUMBER_OUTSIDE_VALID_RANGE"
    assert parse("SELECT Id FROM User OFFSET 2000").offset == 2000


# ---------------------------------------------------------------------------------------------------- semantic errors


def test_unknown_field_is_invalid_field_with_salesforce_message(org: FakeSource) -> None:
    err = soql_error(org, "SELECT Foo FROM User")
    assert err.error_code == "INVALID_FIELD"
    assert err.message == (
        "\nSELECT Foo FROM User\n       ^\nERROR at Row:1:Column:8\nNo such column 'Foo' on entity 'User'. If you are "
        "attempting to use a custom field, be sure to append the '__c' after the custom field name. Please "
        "reference your WSDL or the describe call for the appropriate names."
    )


def test_unknown_object_is_invalid_type(org: FakeSource) -> None:
    err = soql_error(org, "SELECT Id FROM Foo")
    assert err.error_code == "INVALID_TYPE"
    assert err.message.startswith("\nSELECT Id FROM Foo\n               ^\nERROR at Row:1:Column:16\n"
                                  "sObject type 'Foo' is not supported.")


def test_unknown_field_on_a_related_object_names_that_object(org: FakeSource) -> None:
    err = soql_error(org, "SELECT Id, Profile.Foo FROM User")
    assert err.error_code == "INVALID_FIELD"
    assert "No such column 'Foo' on entity 'Profile'." in err.message


def test_unknown_relationship_is_invalid_field(org: FakeSource) -> None:
    err = soql_error(org, "SELECT Id FROM User WHERE ProfileId.Name = 'x'")
    assert err.error_code == "INVALID_FIELD"
    assert "Didn't understand relationship 'ProfileId' in field path." in err.message


def test_unknown_field_in_where_and_order_by_is_invalid_field(org: FakeSource) -> None:
    assert soql_error(org, "SELECT Id FROM User WHERE Bogus = 1").error_code == "INVALID_FIELD"
    assert soql_error(org, "SELECT Id FROM User ORDER BY Bogus").error_code == "INVALID_FIELD"


def test_quoted_boolean_is_rejected_like_salesforce(org: FakeSource) -> None:
    err = soql_error(org, "SELECT Id FROM User WHERE IsActive = 'true'")
    assert err.error_code == "INVALID_FIELD"
    assert err.message.endswith(
        "value of filter criterion for field 'IsActive' must be of type boolean and should not be enclosed in quotes"
    )


@pytest.mark.parametrize(
    ("where", "wanted"),
    [
        ("Username = 5", "must be of type string and should be enclosed in quotes"),
        ("CreatedDate = '2024-01-01'", "must be of type dateTime and should not be enclosed in quotes"),
        ("CreatedDate = 2024-01-01", "must be of type dateTime and should not be enclosed in quotes"),
        ("IsActive IN (true, 'false')", "must be of type boolean"),
    ],
)
def test_filter_values_must_match_the_field_type(org: FakeSource, where: str, wanted: str) -> None:
    err = soql_error(org, f"SELECT Id FROM User WHERE {where}")
    assert err.error_code == "INVALID_FIELD"
    assert wanted in err.message


def test_malformed_id_literal_is_an_invalid_id_filter(org: FakeSource) -> None:
    err = soql_error(org, "SELECT Id FROM User WHERE Id = 'not-an-id'")
    assert err.error_code == "INVALID_QUERY_FILTER_OPERATOR"
    assert err.message.endswith("invalid ID field: not-an-id")


def test_duplicate_and_mixed_aggregate_selects_are_malformed(org: FakeSource) -> None:
    assert soql_error(org, "SELECT Id, id FROM User").error_code == "MALFORMED_QUERY"
    assert "Field must be grouped or aggregated: Username" in soql_error(
        org, "SELECT COUNT(Id), Username FROM User").message
    assert soql_error(org, "SELECT Id, COUNT() FROM User").error_code == "MALFORMED_QUERY"


# ---------------------------------------------------------------------------------------------------- results


def test_records_carry_attributes_and_canonical_field_names_in_select_order(org: FakeSource) -> None:
    out = rows(org, "select username, ID, isactive from USER where lastname = 'lovelace'")
    assert len(out) == 1
    rec = out[0]
    assert list(rec) == ["attributes", "Username", "Id", "IsActive"]
    assert rec["attributes"] == {"type": "User", "url": f"/services/data/v62.0/sobjects/User/{rec['Id']}"}
    assert rec["IsActive"] is True


def test_relationship_fields_are_nested_and_null_parents_are_null(org: FakeSource) -> None:
    out = rows(org, "SELECT Username, Profile.Name, Profile.Id FROM User ORDER BY Username")
    assert out[0]["Profile"]["Name"] == "Standard User"
    assert out[0]["Profile"]["attributes"]["type"] == "Profile"
    assert out[0]["Profile"]["attributes"]["url"].startswith("/services/data/v62.0/sobjects/Profile/00e")
    assert list(out[0]["Profile"]) == ["attributes", "Name", "Id"]
    assert out[1]["Profile"]["Name"] == "System Administrator"
    assert out[2]["Profile"] is None


def test_two_level_relationships_resolve_through_reference_fields(org: FakeSource) -> None:
    ada = next(iter(org.live["User"]))
    org.add("Opportunity", Name="Big deal", OwnerId=ada, IsClosed=False, StageName="Prospecting")
    out = rows(org, "SELECT Name, Owner.Profile.Name, Owner.IsActive FROM Opportunity WHERE Owner.IsActive = true")
    assert out[0]["Owner"]["Profile"] == {
        "attributes": out[0]["Owner"]["Profile"]["attributes"], "Name": "Standard User"}
    assert out[0]["Owner"]["IsActive"] is True


def test_polymorphic_owner_fields_read_whichever_parent_owns_the_record(org: FakeSource) -> None:
    ada = next(iter(org.live["User"]))
    queue = org.add("Group", Name="Support Queue", Type="Queue")
    org.add("Case", Subject="user-owned", OwnerId=ada, IsClosed=False)
    org.add("Case", Subject="queue-owned", OwnerId=queue, IsClosed=False)
    out = rows(org, "SELECT Subject, Owner.Name, Owner.IsActive FROM Case ORDER BY Subject")
    assert [r["Owner"]["attributes"]["type"] for r in out] == ["Group", "User"]
    assert out[0]["Owner"]["Name"] == "Support Queue"
    assert [r["Subject"] for r in rows(org, "SELECT Subject FROM Case WHERE Owner.IsActive = true")] == ["user-owned"]


def test_permission_set_assignments_filter_out_profile_owned_sets(org: FakeSource) -> None:
    ada = next(iter(org.live["User"]))
    owned = org.add("PermissionSet", Name="X00ex00000018ozh_128_09_04_12_1", IsOwnedByProfile=True)
    sales = org.add("PermissionSet", Name="Sales_Ops", Label="Sales Ops", IsOwnedByProfile=False)
    org.add("PermissionSetAssignment", AssigneeId=ada, PermissionSetId=owned)
    org.add("PermissionSetAssignment", AssigneeId=ada, PermissionSetId=sales)
    out = rows(org, f"SELECT Id, PermissionSet.Name, PermissionSet.IsOwnedByProfile FROM PermissionSetAssignment "
                    f"WHERE AssigneeId = '{ada[:15]}' AND PermissionSet.IsOwnedByProfile = false")
    assert [r["PermissionSet"]["Name"] for r in out] == ["Sales_Ops"]
    assert out[0]["PermissionSet"]["IsOwnedByProfile"] is False


def test_datetimes_render_in_salesforce_format(org: FakeSource) -> None:
    created = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    org.add("User", Username="dt@example.com", LastName="Dt", CreatedDate=created)
    out = rows(org, "SELECT CreatedDate FROM User WHERE Username = 'dt@example.com'")
    assert out[0]["CreatedDate"] == "2024-01-02T03:04:05.000+0000"
    org.add("Opportunity", Name="d", CloseDate=dt.date(2024, 5, 6), Amount=12.5)
    opp = rows(org, "SELECT CloseDate, Amount FROM Opportunity")[0]
    assert opp["CloseDate"] == "2024-05-06"
    assert opp["Amount"] == 12.5


# ---------------------------------------------------------------------------------------------------- filters


def test_string_equality_is_case_insensitive(org: FakeSource) -> None:
    assert usernames(org, "Department = 'ENGINEERING'") == ["ada@example.com"]


def test_like_is_case_insensitive_with_percent_and_underscore_wildcards(org: FakeSource) -> None:
    assert usernames(org, "Username LIKE 'ADA%'") == ["ada@example.com"]
    assert usernames(org, "Username LIKE '%@EXAMPLE.com'") == ["ada@example.com", "bob@example.com",
                                                               "cy_x@example.com"]
    assert usernames(org, "Username LIKE '_ob@%'") == ["bob@example.com"]
    assert usernames(org, "Username LIKE '%y\\_x%'") == ["cy_x@example.com"]
    assert usernames(org, "Username LIKE 'c_x%'") == []


def test_in_and_not_in_lists(org: FakeSource) -> None:
    assert usernames(org, "Department IN ('sales', 'Engineering')") == ["ada@example.com", "cy_x@example.com"]
    # Salesforce keeps records whose field is null in NOT IN and != results
    assert usernames(org, "Department NOT IN ('Sales')") == ["ada@example.com", "bob@example.com"]
    assert usernames(org, "Department != 'Sales'") == ["ada@example.com", "bob@example.com"]
    assert usernames(org, "Department IN ('Sales', null)") == ["bob@example.com", "cy_x@example.com"]


def test_null_comparisons(org: FakeSource) -> None:
    assert usernames(org, "Department = null") == ["bob@example.com"]
    assert usernames(org, "Department != NULL") == ["ada@example.com", "cy_x@example.com"]
    assert usernames(org, "ProfileId = null") == ["cy_x@example.com"]


def test_boolean_not_and_or_with_parentheses(org: FakeSource) -> None:
    assert usernames(org, "IsActive = false") == ["bob@example.com"]
    assert usernames(org, "NOT IsActive = true") == ["bob@example.com"]
    assert usernames(org, "IsActive = true AND (Department = 'Sales' OR FirstName = 'Ada')") == [
        "ada@example.com", "cy_x@example.com"]
    assert usernames(org, "NOT (IsActive = true AND Department = 'Sales')") == ["ada@example.com",
                                                                                 "bob@example.com"]


def test_string_literal_escapes(org: FakeSource) -> None:
    assert usernames(org, "LastName = 'O\\'Brien'") == ["bob@example.com"]
    org.add("User", Username="slash@example.com", LastName="back\\slash", Title="two\nlines")
    assert usernames(org, "LastName = 'back\\\\slash'") == ["slash@example.com"]
    assert usernames(org, "Title = 'two\\nlines'") == ["slash@example.com"]


def test_ids_match_on_their_15_character_prefix(org: FakeSource) -> None:
    ada = next(iter(org.live["User"]))
    assert usernames(org, f"Id = '{ada[:15]}'") == ["ada@example.com"]
    assert usernames(org, f"Id IN ('{ada}')") == ["ada@example.com"]
    assert usernames(org, f"Id = '{ada[:15].lower()}'") == []  # 15-character ids are case-sensitive


def test_datetime_and_relative_date_literals_use_the_given_clock(org: FakeSource) -> None:
    assert usernames(org, "CreatedDate = TODAY") == ["ada@example.com"]
    assert usernames(org, "CreatedDate = LAST_N_DAYS:30") == ["ada@example.com"]
    assert usernames(org, "CreatedDate = LAST_N_DAYS:70") == ["ada@example.com", "bob@example.com",
                                                              "cy_x@example.com"]
    assert usernames(org, "CreatedDate < THIS_YEAR") == ["cy_x@example.com"]
    assert usernames(org, "CreatedDate >= 2026-02-01T08:00:00Z") == ["ada@example.com", "bob@example.com"]
    assert usernames(org, "CreatedDate > 2026-02-01T08:00:00Z") == ["ada@example.com"]
    assert usernames(org, "CreatedDate = 2026-02-01T09:00:00+01:00") == ["bob@example.com"]
    assert usernames(org, "CreatedDate = YESTERDAY") == []
    later = execute(parse("SELECT Id FROM User WHERE CreatedDate = YESTERDAY"), org, now=NOW + dt.timedelta(days=1))
    assert later.total_size == 1


def test_date_fields_compare_with_date_and_relative_literals(org: FakeSource) -> None:
    org.add("Opportunity", Name="past", CloseDate="2026-03-01")
    org.add("Opportunity", Name="soon", CloseDate="2026-03-14")
    org.add("Opportunity", Name="open", CloseDate=None)

    def names(where: str) -> list[str]:
        return [r["Name"] for r in rows(org, f"SELECT Name FROM Opportunity WHERE {where} ORDER BY Name")]

    assert names("CloseDate = 2026-03-01") == ["past"]
    assert names("CloseDate > 2026-03-01") == ["soon"]
    assert names("CloseDate = NEXT_N_DAYS:7") == ["soon"]
    assert names("CloseDate = THIS_MONTH") == ["past", "soon"]
    assert names("CloseDate < TODAY") == ["past"]
    assert soql_error(org, "SELECT Id FROM Opportunity WHERE CloseDate = 2026-03-01T00:00:00Z").error_code == (
        "INVALID_FIELD")


def test_numbers_compare_numerically(org: FakeSource) -> None:
    for name, amount in (("a", 5), ("b", 50.5), ("c", None)):
        org.add("Opportunity", Name=name, Amount=amount)
    out = rows(org, "SELECT Name FROM Opportunity WHERE Amount > 10")
    assert [r["Name"] for r in out] == ["b"]


# ---------------------------------------------------------------------------------------------------- order, paging


def test_order_by_several_fields_with_nulls_placement(org: FakeSource) -> None:
    def order(clause: str) -> list[str]:
        return [r["Username"] for r in rows(org, f"SELECT Username FROM User ORDER BY {clause}")]

    assert order("Department") == ["bob@example.com", "ada@example.com", "cy_x@example.com"]  # ASC: nulls first
    assert order("Department DESC") == ["cy_x@example.com", "ada@example.com", "bob@example.com"]  # DESC: last
    assert order("Department ASC NULLS LAST") == ["ada@example.com", "cy_x@example.com", "bob@example.com"]
    assert order("Department DESC NULLS FIRST") == ["bob@example.com", "cy_x@example.com", "ada@example.com"]
    assert order("IsActive DESC, LastName DESC") == ["ada@example.com", "cy_x@example.com", "bob@example.com"]
    assert order("Profile.Name NULLS LAST, Username") == ["ada@example.com", "bob@example.com", "cy_x@example.com"]


def test_limit_and_offset_slice_the_ordered_result(org: FakeSource) -> None:
    out = rows(org, "SELECT Username FROM User ORDER BY Username LIMIT 1 OFFSET 1")
    assert [r["Username"] for r in out] == ["bob@example.com"]
    assert execute(parse("SELECT Id FROM User LIMIT 2"), org, now=NOW).total_size == 2


def test_count_returns_total_size_without_records(org: FakeSource) -> None:
    result = execute(parse("SELECT COUNT() FROM User WHERE IsActive = true"), org, now=NOW)
    assert isinstance(result, QueryResult)
    assert result.count_only and result.total_size == 2
    assert result.records() == []


def test_count_of_a_field_is_an_aggregate_result(org: FakeSource) -> None:
    result = execute(parse("SELECT COUNT(Department) FROM User"), org, now=NOW)
    assert result.total_size == 1
    assert result.records() == [{"attributes": {"type": "AggregateResult"}, "expr0": 2}]


def test_query_all_includes_deleted_records(org: FakeSource) -> None:
    org.add("User", deleted=True, Username="gone@example.com", LastName="Gone")
    assert "gone@example.com" not in usernames(org, "LastName != null")
    out = rows(org, "SELECT Username, IsDeleted FROM User WHERE IsDeleted = true", include_deleted=True)
    assert out == [{"attributes": out[0]["attributes"], "Username": "gone@example.com", "IsDeleted": True}]


def test_pages_render_only_the_requested_slice(org: FakeSource) -> None:
    for i in range(10):
        org.add("Account", Name=f"acct-{i:02d}")
    result = execute(parse("SELECT Name FROM Account ORDER BY Name DESC"), org, now=NOW)
    assert result.total_size == 10
    assert [r["Name"] for r in result.page(3, 6, "59.0")] == ["acct-06", "acct-05", "acct-04"]
    assert result.page(3, 4, "59.0")[0]["attributes"]["url"].startswith("/services/data/v59.0/sobjects/Account/001")
