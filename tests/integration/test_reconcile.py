"""Reconciliation as an operator runs it: `idsync reconcile` on the sandbox `make run` starts: the seeded drift is
shown by a dry run, then repaired until every linked user's mapped fields equal Entra's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.admin_clients import GraphAdmin
from sandbox.server import SandboxServer
from shared.identity_links import LINKS_BY_SF_KEY

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """What `make run` starts: `python -m sandbox --groups 14` with its defaults (50 users, seed 1, overlap 0.3)."""
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=50, groups=14, seed=1, overlap=0.3)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def idsync(stack: Any, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=stack.tmp, env={**_env(stack), **env},
                          capture_output=True, text=True, timeout=600)


def _env(stack: Any) -> dict[str, str]:
    import os

    return {**{k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}, **stack.env}


def _mapped_values(entra: dict[str, Any]) -> dict[str, Any]:
    """What examples/mapping.yaml gives the User fields it maps from plain attributes."""
    upn = entra["userPrincipalName"]
    return {"Title": entra.get("jobTitle"), "Department": entra.get("department"),
            "MobilePhone": entra.get("mobilePhone"), "EmployeeNumber": entra.get("employeeId"),
            "FederationIdentifier": upn, "Username": upn.lower(), "Email": (entra.get("mail") or upn).lower(),
            "FirstName": entra.get("givenName") or None}


def test_the_demo_dry_run_shows_the_seeded_drift_and_a_run_repairs_every_linked_user(stack) -> None:
    dry = idsync(stack, "reconcile", "--dry-run", "--report", "plan.json")
    assert dry.returncode == 0, dry.stderr[-2000:]
    plan = json.loads((stack.tmp / "plan.json").read_text())
    assert plan["dry_run"] is True
    assert plan["drift_by_field"].get("Title") and plan["drift_by_field"].get("Department")
    assert plan["counts"]["create"] > 0  # users missing in Salesforce
    assert any(r["code"] == "INACTIVE_IN_SALESFORCE" for r in plan["reviews"])  # switched off by hand
    assert plan["counts"]["salesforce_only"] > 0  # users missing in Entra: reported only
    assert any(c["direct_edit"] for c in plan["changes"])
    assert "Title" in dry.stdout  # every change is printed

    done = idsync(stack, "reconcile", "--report", "done.json", "--report", "done.html")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((stack.tmp / "done.json").read_text())
    own = stack.tmp / "var" / "reconcile" / f"{result['run_id']}.json"
    assert json.loads(own.read_text())["counts"] == result["counts"]  # the run's own copy, written first
    # the terminal shows the summary, not log lines: no JSON, no information-level event (warnings only, readable)
    assert not [line for line in (done.stdout + done.stderr).splitlines() if line.lstrip().startswith("{")]
    assert "reconcile_deprovisions_allowed" not in done.stdout + done.stderr
    assert "review items" in done.stdout and "users by plan" in done.stdout

    tenant = GraphAdmin(stack.env)
    entra = {u["id"]: u for u in tenant.users(
        "userType eq 'Member'", select="id,userPrincipalName,jobTitle,department,mobilePhone,employeeId,mail,"
                                       "givenName,accountEnabled")}
    linked = {str(sf): str(e) for sf, e in stack.redis.hgetall(LINKS_BY_SF_KEY).items()}
    assert len(linked) >= plan["counts"]["create"]
    fields = ", ".join(["Id", "IsActive", *_mapped_values(next(iter(entra.values())))])
    records = {r["Id"]: r for r in stack.org.sf.query_all(f"SELECT {fields} FROM User")["records"]}
    compared = 0
    for sf_id, entra_id in linked.items():
        user = entra.get(entra_id)
        if user is None or not user["accountEnabled"]:
            continue  # a leaver: handed to the revocation lane, not field-synced
        record = records[sf_id]
        got = {k: (record.get(k).lower() if k in ("Username", "Email") and record.get(k) else record.get(k))
               for k in _mapped_values(user)}
        assert got == _mapped_values(user), user["userPrincipalName"]
        compared += 1
    assert compared >= 30

    again = idsync(stack, "reconcile", "--dry-run", "--quiet", "--report", "again.json")
    assert again.returncode == 0, again.stderr[-2000:]
    counts = json.loads((stack.tmp / "again.json").read_text())["counts"]
    assert counts["create"] == 0 and counts["update"] == 0


def test_a_report_with_an_unknown_extension_is_refused_before_anything_runs(stack) -> None:
    done = idsync(stack, "reconcile", "--dry-run", "--report", "plan.pdf")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("idsync: --report plan.pdf") and "Traceback" not in done.stderr
    assert not Path(stack.tmp / "plan.pdf").exists()


def test_a_report_path_that_cannot_be_written_stops_a_real_run_before_anything_is_applied(stack) -> None:
    (stack.tmp / "plan.json").write_text("{}")
    refused = idsync(stack, "reconcile", "--report", "plan.json/x.html")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == "idsync: --report plan.json/x.html: plan.json is a file, not a directory\n"
    assert not (stack.tmp / "var" / "reconcile").exists()
    assert not stack.redis.hlen(LINKS_BY_SF_KEY)  # nothing created or linked: the run never started
