"""Sandbox at enterprise scale: seed 100,000 users, then read them all back the way idsync does.

Why: the sandbox stands in for tenants with 100k+ users, so a full users/delta round and a full SOQL read must stay
fast enough that tests and demos at that size are practical. This prints figures against the goals (seeding < 60 s,
each full read < 60 s); it asserts nothing, because timings on a shared machine are not test material.

    .venv/bin/python bench/sandbox_scale.py [--users 100000] [--overlap 1.0]

Both reads go through the real clients over real HTTPS: MSAL for the token and httpx following `@odata.nextLink`
to the `@odata.deltaLink`; simple-salesforce `query_all` for SOQL. The Graph resource-unit budget is raised through
the control API first, so the figure measures the sandbox rather than its (faithful) throttling.
"""

from __future__ import annotations

import argparse
import os
import platform
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msal
import requests
from simple_salesforce import Salesforce

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.server import SandboxServer  # noqa: E402

GOAL_S = 60.0


def _graph_round(server: SandboxServer, ca: str) -> dict[str, Any]:
    env = server.env()
    session = requests.Session()
    session.trust_env = False  # the machines export REQUESTS_CA_BUNDLE, which would override verify
    session.verify = ca
    app = msal.ConfidentialClientApplication(
        env["IDSYNC_GRAPH_CLIENT_ID"],
        client_credential=env["IDSYNC_GRAPH_CLIENT_SECRET"],
        authority=env["IDSYNC_GRAPH_AUTHORITY"],
        http_client=session,
        instance_discovery=False,
    )
    token = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    if "access_token" not in token:
        raise RuntimeError(f"no Graph token: {token}")
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    rows = pages = throttled = 0
    started = time.perf_counter()
    with httpx.Client(verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=60) as http:
        url: str | None = f"{env['IDSYNC_GRAPH_URL']}/users/delta?$select=id,userPrincipalName,accountEnabled"
        while url:
            response = http.get(url, headers=headers)
            if response.status_code == 429:
                throttled += 1
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            response.raise_for_status()
            body = response.json()
            pages += 1
            rows += len(body["value"])
            url = body.get("@odata.nextLink")
            if url is None and "@odata.deltaLink" not in body:
                raise RuntimeError("the last page has neither a nextLink nor a deltaLink")
    return {"seconds": time.perf_counter() - started, "rows": rows, "pages": pages, "throttled": throttled}


def _soql_round(server: SandboxServer, ca: str) -> dict[str, Any]:
    env = server.env()
    session = requests.Session()
    session.trust_env = False
    session.verify = ca
    grant = session.post(
        f"{env['IDSYNC_SF_URL']}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": env["IDSYNC_SF_CLIENT_ID"],
            "client_secret": env["IDSYNC_SF_CLIENT_SECRET"],
        },
        timeout=30,
    )
    grant.raise_for_status()
    body = grant.json()
    version = str(server.state.config.get("salesforce.default_api_version", "62.0"))
    sf = Salesforce(
        instance_url=body["instance_url"], session_id=body["access_token"], session=session, version=version
    )
    started = time.perf_counter()
    result = sf.query_all("SELECT Id, Username, IsActive FROM User")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(result["records"]), "total_size": result["totalSize"]}


def _top_up_salesforce_users(server: SandboxServer, target: int) -> int:
    """The org mirrors the tenant's *members* only (guests are not pre-created), so 100,000 Entra users give ~97,000
    Salesforce users. Real orgs also hold users Entra does not know (contractors, integration users): add enough of
    those that the SOQL read returns `target` rows."""
    org = server.state.org
    with server.state.lock:
        existing = list(org.records("User"))
        missing = target - len(existing)
        if missing <= 0:
            return 0
        template = existing[-1]
        rows = []
        for i in range(missing):
            row = dict(template)
            row.update(Id=org.new_id("User"), Username=f"sfonly{i}@scale.example.com", FederationIdentifier=None,
                       CommunityNickname=f"sfonly{i}", Alias=f"sfo{i}"[:8], Email=f"sfonly{i}@scale.example.com")
            rows.append(row)
        org.bulk_load("User", rows)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--overlap", type=float, default=1.0, help="1.0: every Entra user also exists in Salesforce")
    args = parser.parse_args(argv)

    print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} cpu(s), "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        server = SandboxServer(Path(tmp), users=args.users, groups=args.groups, seed=1, overlap=args.overlap)
        started = time.perf_counter()
        server.start(timeout=600)
        try:
            start_s = time.perf_counter() - started
            ca = str(server.state.ca_path)
            seed_s = server.seed_seconds or start_s
            entra = len(server.state.directory.users)
            print(f"seeding: {entra} Entra users, {args.groups} groups, overlap {args.overlap}: "
                  f"{seed_s:.1f} s ({entra / seed_s:,.0f} users/s; start incl. seeding {start_s:.1f} s)"
                  f"  goal < {GOAL_S:.0f} s: {'met' if seed_s < GOAL_S else 'MISSED'}")

            server.state.config.patch({"graph": {"ru_per_10s": 10_000_000}})
            graph = _graph_round(server, ca)
            rate = graph["rows"] / graph["seconds"]
            print(f"users/delta full round: {graph['rows']} users in {graph['pages']} pages, {graph['seconds']:.1f} s "
                  f"({rate:,.0f} rows/s, {graph['throttled']} throttled)"
                  f"  goal < {GOAL_S:.0f} s: {'met' if graph['seconds'] < GOAL_S else 'MISSED'}")

            topped = _top_up_salesforce_users(server, args.users)
            if topped:
                print(f"salesforce: added {topped} Salesforce-only users (not in Entra) so the org holds "
                      f"{args.users:,} User rows for the SOQL read")
            soql = _soql_round(server, ca)
            rate = soql["rows"] / soql["seconds"]
            print(f"SOQL query_all User: {soql['rows']} rows (totalSize {soql['total_size']}), {soql['seconds']:.1f} s "
                  f"({rate:,.0f} rows/s)  goal < {GOAL_S:.0f} s: {'met' if soql['seconds'] < GOAL_S else 'MISSED'}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
