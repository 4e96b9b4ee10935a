"""The access report on a small scenario with known answers: what a rule justifies (and which group and rule),
what was granted by hand, who holds access while out of scope, and linked users disabled in Entra."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from ops.cli.reconcile import access_summary
from sandbox.admin_clients import GraphAdmin
from shared.reconcile.access import write_access_report
from shared.settings import load_settings
from tests.shared.reconcile.browser import render
from tests.shared.reconcile.conftest import Setup, make_deps, reconcile, seeded


@pytest.fixture
def sandbox(tmp_path: Path) -> Any:
    """No Salesforce user besides the seeded admins and legacy accounts: every other row comes from this test."""
    server = seeded(tmp_path / "sandbox", users=24, overlap=0.0)
    try:
        yield server
    finally:
        server.stop()


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _of(rows: list[dict[str, str]], upn: str) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["kind"], r["name"]): r for r in rows if r["username"] == upn}


def test_the_access_report_tells_justified_from_hand_granted_and_lists_the_exceptions(sandbox, deps, tmp_path
                                                                                       ) -> None:
    tenant, setup = GraphAdmin(sandbox.env()), Setup(sandbox)
    domain = tenant.verified_domain()
    people: dict[str, tuple[str, str]] = {}
    for name, groups in (("ana", ["Sales Team West"]), ("bo", ["Marketing"]), ("cy", [])):
        upn = f"access.{name}@{domain}"
        user = tenant.create_user(name.title(), "Access", upn, employeeId=f"E55{len(people)}", usageLocation="US")
        for group in ["All Employees", *groups]:
            tenant.add_to_group(user["id"], group)
        people[name] = (user["id"], upn)
    reconcile(deps)  # provisions them with what the rules give
    setup.org.insert("PermissionSetAssignment", {"AssigneeId": setup.user(people["cy"][1])["Id"],
                                                 "PermissionSetId": setup.org.seed_info["permission_sets"]["API_Only"]},
                     actor=setup.admin_id)  # granted by hand in Setup
    tenant.remove_from_group(people["ana"][0], "All Employees")  # out of scope, still holding her access
    tenant.disable(people["bo"][0])  # linked, disabled in Entra

    csv_path, html_path = tmp_path / "access.csv", tmp_path / "access.html"
    write_access_report(deps, csv_path)
    data = write_access_report(deps, html_path)
    rows = _rows(csv_path)

    cy = _of(rows, people["cy"][1])
    assert cy[("profile", "Standard User")]["status"] == "justified"
    assert cy[("profile", "Standard User")]["entra_groups"] == "All Employees"
    assert "group rule 'All Employees'" in cy[("profile", "Standard User")]["rule"]
    assert cy[("permission set", "API_Only")]["status"] == "granted_by_hand"
    assert cy[("permission set", "API_Only")]["rule"] == ""
    ana = _of(rows, people["ana"][1])
    assert {r["status"] for r in ana.values()} == {"out_of_scope"}
    assert ("permission set", "Sales_Cloud_User") in ana and ("public group", "All_Sales") in ana
    bo = _of(rows, people["bo"][1])
    assert {r["status"] for r in bo.values()} == {"entra_disabled"}  # disabled, not "out of scope"
    assert bo[("permission set", "Marketing_User")]["status"] == "entra_disabled"
    integration = _of(rows, "idsync.integration@idsync-sandbox.example.com")
    assert integration[("permission set", "API_Only")]["status"] == "no_entra_user"  # the seed's hand grant

    assert [o["entra_upn"] for o in data.out_of_scope] == [people["ana"][1]]
    assert [d["entra_upn"] for d in data.disabled] == [people["bo"][1]]
    # the lists and their counts are the users of the table's rows with those statuses
    def users_with(status: str) -> set[str]:
        return {r["entra_upn"] for r in rows if r["status"] == status}

    assert {o["entra_upn"] for o in data.out_of_scope} == users_with("out_of_scope")
    assert {d["entra_upn"] for d in data.disabled} == users_with("entra_disabled")
    assert data.by_status == {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}}
    assert data.by_status["out_of_scope"] == len(ana) and data.by_status["entra_disabled"] == len(bo)
    dom, console = render(html_path)
    assert console == []
    totals = {m.group(1): int(m.group(2)) for m in re.finditer(r'data-total="([^"]+)"[^>]*>(\d+)<', dom)}
    assert totals["entitlements"] == len(rows) and totals["justified"] + totals["unjustified"] == len(rows)
    assert totals["justified"] == sum(r["status"] == "justified" for r in rows)
    unjustified = dom[dom.index('id="unjustified"'):dom.index('id="out-of-scope"')]
    assert "API_Only" in unjustified and people["cy"][1] in unjustified
    assert totals["out-of-scope"] == 1 and totals["disabled"] == 1
    out_of_scope = dom[dom.index('id="out-of-scope"'):dom.index('id="disabled"')]
    disabled = dom[dom.index('id="disabled"'):dom.index('id="all"')]
    assert people["ana"][1] in out_of_scope and people["bo"][1] not in out_of_scope and "None." not in out_of_scope
    assert people["bo"][1] in disabled and people["ana"][1] not in disabled


def test_the_demo_s_disabled_leavers_are_counted_in_the_summary_the_sections_and_the_table_alike(
        tmp_path, redis_server, redis_client) -> None:
    """What `make run` seeds (seed 1): tom.meyer and nina.larsen are linked, disabled in Entra, and still hold their
    access in Salesforce. Every place of the report says so with the same numbers."""
    server = seeded(tmp_path / "demo", users=50, groups=13, seed=1, overlap=0.3)
    try:
        values = {k.removeprefix("IDSYNC_").lower(): v for k, v in server.env().items()}
        settings = load_settings(_env_file=None, **values, redis_url=redis_server.url, var_dir=str(tmp_path / "var"))
        data = write_access_report(make_deps(settings, redis_client), tmp_path / "access.html")
    finally:
        server.stop()
    leavers = {"tom.meyer@fabrikam.example.com", "nina.larsen@fabrikam.example.com"}
    disabled_rows = [r for r in data.rows if r["status"] == "entra_disabled"]
    assert {r["entra_upn"] for r in disabled_rows} == leavers and len(disabled_rows) == 10
    assert not [r for r in data.rows if r["status"] == "out_of_scope"]
    assert {d["entra_upn"] for d in data.disabled} == leavers and data.out_of_scope == []
    line = access_summary(data)
    assert "10 Entra account disabled" in line and "0 out of scope," in line
    assert line.endswith("0 users out of scope holding entitlements, 2 linked users disabled in Entra")
    assert f"{data.unjustified} no rule justifies" in line and data.by_status.get("justified") == data.justified
