"""Joiners and movers through the real pipeline: the sandbox's Graph sends change notifications to the real webhook,
real Celery workers (revocation and sync lanes) and beat (subscriptions, backlog keeper) apply the demo mapping.

The admin side is what a person does: Graph calls as an Entra admin, simple-salesforce as a Salesforce admin.
Timings are printed (the demo promises seconds), never asserted tightly: waits are generous.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.admin_clients import GraphAdmin, OrgAdmin
from sandbox.server import SandboxServer

pytestmark = pytest.mark.integration

_names = (f"mover{n:03d}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """Every group the demo mapping names (13 seeded groups), notifications retried quickly."""
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=80, groups=13, seed=31, overlap=0.5)
    server.state.config.patch({"graph": {"notification_retry_base_s": 0.5}})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _start(stack: Any, wait_for: Any) -> Any:
    stack.start_worker("revocation")
    stack.start_worker("sync")
    stack.start_webhook()
    stack.start("beat", "beat")
    from producers.subscriptions import subscription_status

    def subscribed() -> bool:
        return len(subscription_status(stack.redis, stack.settings())) == 2

    wait_for(subscribed, timeout=60, interval=0.2, what="both Graph subscriptions created by beat")
    return stack


@pytest.fixture
def running(stack: Any, wait_for: Any) -> Any:
    """Webhook, both workers and beat; beat creates the Graph subscriptions once the webhook answers."""
    return _start(stack, wait_for)


def _admins(stack: Any) -> tuple[GraphAdmin, OrgAdmin]:
    return GraphAdmin(stack.env), OrgAdmin(stack.env)


def _view(org: OrgAdmin, upn: str) -> dict[str, Any]:
    view = org.view(upn)
    assert view is not None, f"no Salesforce user {upn}"
    return view


def _until(wait_for: Any, org: OrgAdmin, upn: str, check: Any, what: str, timeout: float = 30) -> float:
    """Seconds until Salesforce shows `check(view)` for the user."""
    started = time.monotonic()
    wait_for(lambda: (v := org.view(upn)) is not None and check(v), timeout=timeout, interval=0.1, what=what)
    return time.monotonic() - started


def test_the_demo_joiner_mover_and_leaver_through_notifications(running: Any, wait_for: Any) -> None:
    tenant, org = _admins(running)
    upn = f"{next(_names)}@{tenant.verified_domain()}"
    manager = next(u for u in tenant.users("accountEnabled eq true and userType eq 'Member'")
                   if (sf := org.user(u["userPrincipalName"])) and sf["IsActive"])

    # --- joiner: Sales Team West
    created = tenant.create_user("Dana", "Joiner", upn, jobTitle="Account Executive", department="Sales",
                                 mobilePhone="+1 206 555 0100", employeeId="E990001", usageLocation="US")
    tenant.add_to_group(created["id"], "All Employees")
    tenant.add_to_group(created["id"], "Sales Team West")
    joined = _until(wait_for, org, upn, lambda v: v["Role"] == "Account Executive West"
                    and v["PermissionSets"] == ["Sales_Cloud_User"] and v["Groups"] == ["All_Sales"],
                    "the joiner with the Sales Team West entitlements")
    view = _view(org, upn)
    assert (view["Profile"], view["Title"], view["Department"]) == ("Sales User", "Account Executive", "Sales")
    assert (view["MobilePhone"], view["EmployeeNumber"], view["FederationIdentifier"]) == (
        "+1 206 555 0100", "E990001", upn)

    # --- mover: Customer Support; a permission set assigned by hand stays
    org.assign_permission_set(upn, "API_Only")
    tenant.remove_from_group(created["id"], "Sales Team West")
    tenant.add_to_group(created["id"], "Customer Support")
    moved = _until(wait_for, org, upn, lambda v: v["Role"] == "Support Agent"
                   and v["Groups"] == ["Support_Queue", "Support_Team"]
                   and v["PermissionSets"] == ["API_Only", "Service_Cloud_User"], "the mover's new entitlements")
    assert _view(org, upn)["Profile"] == "Standard User"

    # --- attributes and manager; an emptied attribute is cleared
    tenant.update(created["id"], {"jobTitle": "Support Team Lead", "department": "Customer Support",
                                  "mobilePhone": None})
    tenant.set_manager(created["id"], manager["id"])
    changed = _until(wait_for, org, upn, lambda v: v["Title"] == "Support Team Lead" and v["MobilePhone"] is None
                     and v["Department"] == "Customer Support" and v["Manager"] == manager["userPrincipalName"],
                     "title, department, cleared mobile and the manager")

    # --- leaving scope: removed from All Employees -> frozen and deactivated
    tenant.remove_from_group(created["id"], "All Employees")
    left = _until(wait_for, org, upn, lambda v: v["IsActive"] is False and v["IsFrozen"] is True,
                  "frozen and deactivated after leaving All Employees")
    print(f"\njoiner {joined:.2f} s, mover {moved:.2f} s, fields+manager {changed:.2f} s, leaver {left:.2f} s")

    # --- and back: idsync reactivates what it deactivated
    tenant.add_to_group(created["id"], "All Employees")
    _until(wait_for, org, upn, lambda v: v["IsActive"] is True and v["IsFrozen"] is False, "reactivated")


def test_a_broken_mapping_edit_keeps_the_last_good_mapping(stack: Any, wait_for: Any, tmp_path: Path) -> None:
    """Hot reload: the workers watch the file; a broken save is refused (logged, in status), the old one stays."""
    from shared.provisioning.mapping_store import EXAMPLE_MAPPING, mapping_status

    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(EXAMPLE_MAPPING.read_text())
    stack.env["IDSYNC_MAPPING_FILE"] = str(mapping_file)
    running = _start(stack, wait_for)
    tenant, org = _admins(running)
    upn = f"{next(_names)}@{tenant.verified_domain()}"
    created = tenant.create_user("Hot", "Reload", upn, jobTitle="Analyst", usageLocation="US")
    tenant.add_to_group(created["id"], "All Employees")
    _until(wait_for, org, upn, lambda v: v["Title"] == "Analyst", "provisioned with the file's mapping", 60)

    mapping_file.write_text(EXAMPLE_MAPPING.read_text().replace("  Title: jobTitle", "  Title: {source: jobTitle"))
    tenant.update(created["id"], {"jobTitle": "Senior Analyst"})  # still applied, with the last good mapping
    _until(wait_for, org, upn, lambda v: v["Title"] == "Senior Analyst", "applied under the kept mapping")
    status = wait_for(lambda: (s := mapping_status(running.redis)) and s.get("last_error") and s, timeout=30,
                      what="the refused edit recorded for idsync status")
    assert "mapping.yaml:" in status["last_error"]
    assert b"mapping_reload_failed" in running.log("beat")  # beat watches the file and reports at once

    fixed = EXAMPLE_MAPPING.read_text().replace("  Title: jobTitle", "  Title: {source: jobTitle, transforms: [upper]}")
    mapping_file.write_text(fixed)
    tenant.update(created["id"], {"jobTitle": "Lead Analyst"})
    _until(wait_for, org, upn, lambda v: v["Title"] == "LEAD ANALYST", "the fixed mapping in force", 60)
    assert wait_for(lambda: (mapping_status(running.redis) or {}).get("last_error", "") is None, timeout=30,
                    what="the refused edit cleared from status once a good one loaded")
