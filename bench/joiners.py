"""Joiners at scale: how long, and how many Salesforce API calls, next to the minimum with sObject Collections.

Issue 7's goals, on 2 cores: (a) 10,000 joiners, each with a profile and 3 permission sets (one of which needs a
permission set licence), converged in <= 60 s with Salesforce API calls <= 1.1 x the minimum; (b) 5,000 existing
users added to one group at once, same two figures. Microsoft's provisioning service takes 0.6-4.8 s per object in
its initial cycle, i.e. hours for (a).

Through the real sync lane: the sandbox (in this process, over HTTPS) holds the tenant; `python -m ops poll --once`
(the real delta poller) reads it and puts every user in the sync backlog; real Celery sync workers
(`python -m ops worker --lane sync`) drain it in batches of 200. For (b) the users are added to the group in the
sandbox directly and one group notification is published through the dispatch table, as the webhook would.

The minimum (what no implementation can go below with collections of 200 records):
  one catalogue read (2 composite calls + 1 describe) per worker process
  + per 200 users: one state read (composite), one User create, one licence assignment, and ceil(3 x 200 / 200)
    permission set assignments (licences must exist before the sets that need them: two phases).
It prints figures next to the goals and asserts nothing (timings on a shared machine are not test material).

    .venv/bin/python bench/joiners.py [--users 10000] [--group-users 5000] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.embedded_redis import EmbeddedRedis  # noqa: E402
from sandbox.server import SandboxServer  # noqa: E402

MAPPING = """\
version: 1
scope: {groups: [All Employees]}
attributes:
  FirstName: givenName
  LastName: {source: surname, default: "{displayName}"}
  Email: {source: mail, default: "{userPrincipalName}"}
  Title: jobTitle
  Department: department
  EmployeeNumber: employeeId
  FederationIdentifier: userPrincipalName
link_field: Entra_Object_Id__c
group_rules:
  - group: All Employees
    profile: Standard User
    permission_sets: [Sales_Cloud_User, Marketing_User, Service_Cloud_User]
  - group: Bench Rollout
    public_groups: [All_Sales]
matching:
  rules: [link, FederationIdentifier, Username]
"""
GOAL_S = 60.0


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"bench: timed out after {timeout:.0f} s waiting for {what}")


def sf_calls(sandbox: SandboxServer) -> int:
    org: Any = sandbox.state.org
    return int(org.api_usage(sandbox.state.clock.time()))


def count(sandbox: SandboxServer, sobject: str, predicate: Callable[[dict[str, Any]], bool]) -> int:
    with sandbox.state.lock:
        return sum(1 for rec in sandbox.state.org.live[sobject].values() if predicate(rec))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000, help="joiners (Entra members, none in Salesforce)")
    parser.add_argument("--group-users", type=int, default=5_000, help="users added to one group in part (b)")
    parser.add_argument("--workers", type=int, default=2, help="sync worker processes (one per core)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="idsync-bench-joiners-"))
    redis_server = EmbeddedRedis(tmp / "redis").start()
    # ~3% of seeded users are guests: seed a few more so that `--users` members exist
    sandbox = SandboxServer(tmp / "sandbox", users=int(args.users / 0.965) + 10, groups=13, seed=5, overlap=0.0)
    started_seed = time.monotonic()
    sandbox.start()
    with sandbox.state.lock:
        members = [u for u in sandbox.state.directory.users.values()
                   if u.get("userType") == "Member" and u.get("accountEnabled")]
        org = sandbox.state.org
    org.set_total_licenses("Salesforce", 100_000)
    org.set_total_licenses("SalesCloudUserPsl", 100_000)
    # part (b)'s group: empty during part (a), so (a) is exactly a profile and three permission sets per user
    rollout = sandbox.state.directory.create_group({"displayName": "Bench Rollout", "mailEnabled": False,
                                                    "mailNickname": "bench-rollout", "securityEnabled": True},
                                                   notify=False)
    print(f"sandbox: {len(members)} enabled members, none in Salesforce (seeded in "
          f"{time.monotonic() - started_seed:.1f} s)", flush=True)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    mapping = tmp / "mapping.yaml"
    mapping.write_text(MAPPING)

    env = {**os.environ, **sandbox.env(), "IDSYNC_REDIS_URL": redis_server.url, "IDSYNC_MAPPING_FILE": str(mapping),
           "IDSYNC_LOG_JSON": "true", "IDSYNC_LOG_LEVEL": "INFO", "IDSYNC_VAR_DIR": str(tmp / "var"),
           # a large tenant's Graph budget (8,000 resource units per 10 s) and Salesforce smoothing, both raised
           # from the conservative defaults: the sandbox meters Graph like the real service does
           "IDSYNC_GRAPH_REQUESTS_PER_S": "600", "IDSYNC_SF_REQUESTS_PER_S": "500",
           "IDSYNC_WEBHOOK_CLIENT_STATE": "bench-joiners-state",
           "IDSYNC_DELTA_START_FROM_NOW": "false",  # the poller's first round is what feeds the joiners here
           **{f"IDSYNC_METRICS_PORT_{c}": "0" for c in ("WORKER_REVOCATION", "WORKER_SYNC", "BEAT", "POLLER",
                                                          "AUDIT_WRITER")}}
    procs: list[subprocess.Popen[bytes]] = []
    log = open(tmp / "workers.log", "ab")  # noqa: SIM115 - closed at exit
    try:
        for _worker in range(args.workers):
            procs.append(subprocess.Popen([sys.executable, "-m", "ops", "worker", "--lane", "sync",
                                           "--concurrency", "1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        wait_until(lambda: (tmp / "workers.log").read_bytes().count(b"ready.") >= args.workers, 60, "workers ready")

        # ---- (a) joiners: the first delta round puts every user in the backlog; the workers create them
        calls_before = sf_calls(sandbox)
        started = time.monotonic()
        poll = subprocess.run([sys.executable, "-m", "ops", "poll", "--once"], env=env, capture_output=True,
                              text=True, timeout=600)
        if poll.returncode != 0:
            raise SystemExit(f"bench: the delta poller failed: {poll.stderr[-2000:]}")
        polled = time.monotonic() - started
        n = len(members)
        done = wait_until(lambda: count(sandbox, "User", lambda r: bool(r.get("Entra_Object_Id__c"))) >= n
                          and count(sandbox, "PermissionSetAssignment", lambda r: True) >= 4 * n, 1800,
                          f"{n} users created with 3 permission sets each", interval=0.5)
        elapsed = time.monotonic() - started
        calls = sf_calls(sandbox) - calls_before
        batches = math.ceil(n / 200)
        minimum = 3 * args.workers + 3 * batches + math.ceil(3 * n / 200)
        assert done
        print(f"\n(a) {n} joiners, profile + 3 permission sets (+ the licence one needs)")
        print(f"    wall time  {elapsed:7.1f} s   (delta round {polled:.1f} s)   goal <= {GOAL_S:.0f} s")
        print(f"    SF calls   {calls:7d}     minimum {minimum}   ratio {calls / minimum:.3f}   goal <= 1.10")

        # ---- (b) one group gains thousands of members at once
        linked = [u["id"] for u in members[: args.group_users]]
        with sandbox.state.lock:
            directory = sandbox.state.directory
            group_id = rollout["id"]
            have = {m for m, _kind in directory.transitive_members(group_id)}
            added = [u for u in linked if u not in have]
            directory.seed_members(group_id, [(u, "user") for u in added])
        # the users the mapping provisions among the group's members (guests and disabled users are not)
        wanted_ids = set(linked) | have
        want = count(sandbox, "User", lambda r: r.get("Entra_Object_Id__c") in wanted_ids)
        from shared.dispatch import publish
        from shared.events import EventKind, EventSource, IdentityEvent
        from shared.settings import load_settings
        from workers.app import create_app

        settings = load_settings(_env_file=None, **{k.removeprefix("IDSYNC_").lower(): v for k, v in env.items()
                                                    if k.startswith("IDSYNC_") and not k.startswith("IDSYNC_RUN_")})
        with sandbox.state.lock:
            all_sales = next(g["Id"] for g in org.live["Group"].values() if g.get("DeveloperName") == "All_Sales")
        calls_before = sf_calls(sandbox)
        started = time.monotonic()
        publish(create_app(settings), IdentityEvent(kind=EventKind.GROUP_CHANGED, source=EventSource.WEBHOOK,
                                                    tenant=settings.graph_tenant_id or "", object_id=group_id))
        wait_until(lambda: count(sandbox, "GroupMember", lambda r: r.get("GroupId") == all_sales) >= want, 1800,
                   f"{want} members of All_Sales", interval=0.5)
        elapsed = time.monotonic() - started
        calls = sf_calls(sandbox) - calls_before
        batches = math.ceil(len(added) / 200)
        minimum = 2 * batches  # a state read and a membership write per 200 users (the catalogue is cached)
        print(f"\n(b) {len(added)} users added to one group at once (-> the public group All_Sales each)")
        print(f"    wall time  {elapsed:7.1f} s   goal <= {GOAL_S:.0f} s")
        print(f"    SF calls   {calls:7d}     minimum {minimum}   ratio {calls / max(1, minimum):.3f}   goal <= 1.10")
        return 0
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        log.close()
        sandbox.stop()
        redis_server.stop()


if __name__ == "__main__":
    sys.exit(main())
