"""`python -m sandbox.tenant`: act on a running sandbox as its admins would, through the public APIs.

    python -m sandbox.tenant list [--env-file var/sandbox.env]
    python -m sandbox.tenant disable [UPN]     # no UPN: an enabled member who also exists in Salesforce
    python -m sandbox.tenant enable UPN
    python -m sandbox.tenant show UPN          # both sides: Entra accountEnabled, Salesforce IsActive / IsFrozen

It is how a person tries a leaver without writing code; changes go through Graph, so idsync sees them exactly as it
would see a real admin's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from sandbox.admin_clients import GraphAdmin, OrgAdmin, read_env_file


def _both_sides(graph: GraphAdmin, org: OrgAdmin, upn: str) -> str:
    entra = graph.user(upn)
    sf = org.user(entra["userPrincipalName"])
    side = "not in Salesforce" if sf is None else (
        f"Salesforce IsActive={sf['IsActive']} IsFrozen={org.frozen(sf['Id'])}")
    return f"{entra['userPrincipalName']}: Entra accountEnabled={entra['accountEnabled']}; {side}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.tenant", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", default="var/sandbox.env", help="written by the sandbox (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="users on both sides")
    for name in ("disable", "enable", "show"):
        cmd = sub.add_parser(name)
        cmd.add_argument("upn", nargs="?" if name == "disable" else None)
        if name == "disable":
            cmd.add_argument("--wait", type=float, default=5.0, help="seconds to watch Salesforce (default: 5)")
    args = parser.parse_args(argv)
    try:
        env = read_env_file(args.env_file)
    except OSError as err:
        print(f"cannot read {args.env_file}: {err.strerror} (is the sandbox running? `make run` starts it)",
              file=sys.stderr)
        return 2
    graph, org = GraphAdmin(env), OrgAdmin(env)
    if args.command == "list":
        for user in graph.users():
            sf = org.user(user["userPrincipalName"])
            state = "-" if sf is None else ("active" if sf["IsActive"] else "inactive")
            print(f"{user['userPrincipalName']:60} entra={'enabled' if user['accountEnabled'] else 'disabled':8} "
                  f"salesforce={state}")
        return 0
    upn = args.upn
    if args.command == "disable" and not upn:
        members = graph.users("accountEnabled eq true and userType eq 'Member'")
        upn = next((u["userPrincipalName"] for u in members
                    if (sf := org.user(u["userPrincipalName"])) and sf["IsActive"]), None)
        if upn is None:
            print("no enabled member with an active Salesforce user left", file=sys.stderr)
            return 1
    if args.command == "disable":
        graph.disable(upn)
        started = time.monotonic()
        print(f"disabled {upn} in Entra (through Graph); watching Salesforce for up to {args.wait:g} s")
        sf = org.user(upn)
        while sf is not None and sf["IsActive"] and time.monotonic() - started < args.wait:
            time.sleep(0.05)
            sf = org.user(upn)
        if sf is not None and not sf["IsActive"]:
            print(f"Salesforce user deactivated {time.monotonic() - started:.2f} s after the Graph call")
        elif sf is not None:
            print(f"Salesforce user still active after {args.wait:g} s (is idsync running? `make run`)")
    elif args.command == "enable":
        graph.enable(upn)
        print(f"enabled {upn} in Entra (through Graph)")
    print(_both_sides(graph, org, upn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
