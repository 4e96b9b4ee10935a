"""Every deactivation blocker Salesforce names is explained in plain words with where in Setup it is fixed."""

from __future__ import annotations

import pytest

from sandbox.salesforce.rules import DEACTIVATION_BLOCKERS
from shared.offboarding.blockers import describe_blocker
from shared.salesforce_bulk import parse_row_error


@pytest.mark.parametrize("reason", sorted(DEACTIVATION_BLOCKERS))
def test_each_message_salesforce_gives_maps_to_its_blocker_and_a_setup_fix(reason: str) -> None:
    blocker = describe_blocker("FIELD_INTEGRITY_EXCEPTION", DEACTIVATION_BLOCKERS[reason])
    assert blocker.kind == reason
    assert blocker.fix.startswith("Setup > ")
    assert blocker.describe().endswith(".") and "Fix: Setup > " in blocker.describe()


def test_the_last_admin_and_an_unknown_refusal_are_explained_too() -> None:
    last = describe_blocker("CANNOT_DISABLE_LAST_ADMIN", "Cannot disable the last active system administrator")
    assert last.kind == "last_admin" and "System Administrator" in last.fix
    other = describe_blocker("FIELD_INTEGRITY_EXCEPTION", "Something new Salesforce invented")
    assert other.kind == "other" and "Something new Salesforce invented" in other.plain


def test_a_bulk_result_error_cell_splits_into_code_and_message() -> None:
    assert parse_row_error("INACTIVE_OWNER_OR_USER:operation performed with inactive user [005x] as owner of "
                           "opportunity:--") == ("INACTIVE_OWNER_OR_USER", "operation performed with inactive user "
                                                 "[005x] as owner of opportunity")
    assert parse_row_error("FIELD_CUSTOM_VALIDATION_EXCEPTION:Owner must be in Sales:OwnerId --") == (
        "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Owner must be in Sales")
