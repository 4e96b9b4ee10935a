"""Delta queries for users and groups, including the awkward parts clients must survive
(https://learn.microsoft.com/graph/delta-query-overview).

How it works: every mutation has a tenant-wide sequence number and each object remembers, per property, the
sequence of its last change (`store.Tracked`). A round is "changes in (since, high]", where `high` is the sequence
when the round began; pages walk the resource's append-only change log from `since`, taking an object only at its
latest log entry <= high, so a page costs O(page) and an object appears once per round (unless a duplicate is
injected). Tokens are random keys into a server-side table holding the round's cursor, so they stay opaque and
short even when a page must carry leftovers (duplicates to repeat, the rest of a large group's members).

Injected behaviours, all documented by Microsoft (delta-query-overview; delta links of directory objects expire
after 7 days): duplicates within a round (`graph.delta_duplicate_rate`), replays
of the previous round's changes (`graph.delta_replay_rate`), large groups' `members@delta` split over pages
(`graph.group_members_page_size`), and 410 Gone with a `Location` to restart from once a token is older than
`graph.delta_token_lifetime_s` on the sandbox clock.
"""

from __future__ import annotations

import bisect
import secrets
import zlib
from typing import Any

from sandbox.graph.errors import GraphError, bad_request
from sandbox.graph.odata import link, parse_filter, parse_select
from sandbox.graph.routing import READ_GROUPS, READ_USERS, GraphRequest, GraphResponse, Router
from sandbox.graph.store import GROUP_PROPERTIES, USER_DEFAULT, USER_PROPERTIES, USER_UNSUPPORTED, Directory, Tracked

URL_FORMS = ("delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()")
MAX_FILTER_IDS = 50
MAX_TOKENS = 200_000
_USER_RELATIONS = ("manager",)
_GROUP_RELATIONS = ("members", "owners")


def _chance(salt: str, kind: str, object_id: str) -> float:
    """A stable pseudo-random draw per (round, behaviour, object): the same page fetched twice is the same page."""
    return zlib.crc32(f"{salt}:{kind}:{object_id}".encode()) / 4294967296.0


def _store_token(d: Directory, record: dict[str, Any]) -> str:
    token = secrets.token_urlsafe(33)
    d.tokens[token] = record
    while len(d.tokens) > MAX_TOKENS:
        d.tokens.popitem(last=False)
    return token


class _Round:
    """Renders one page of a round for one resource."""

    def __init__(self, state: Any, resource: str, rec: dict[str, Any], minimal: bool) -> None:
        self.state = state
        self.d: Directory = state.directory
        self.resource = resource
        self.rec = rec
        self.minimal = minimal
        self.select: list[str] | None = rec["select"]
        self.select_set = set(self.select or ())

    # -------------------------------------------------------------------------------------- representation
    def _props(self, obj: dict[str, Any], meta: Tracked, since: int, new: bool, changed: list[str]) -> dict[str, Any]:
        default = USER_DEFAULT if self.resource == "users" else GROUP_PROPERTIES
        relations = _USER_RELATIONS if self.resource == "users" else _GROUP_RELATIONS
        chosen = [p for p in self.select if p not in relations] if self.select is not None else list(default)
        if new:
            names = chosen
        elif self.minimal:
            names = [p for p in changed if p not in relations]
        else:
            # unchanged properties with their old values; never-set ones omitted; nulls sent as null
            names = [p for p in chosen if obj.get(p) is not None or p in meta.prop_seq]
            if self.select is None:
                names += [p for p in changed if p not in names and p not in relations]
        body = {p: obj.get(p) for p in names if p in obj}
        return {"id": obj["id"], **{k: v for k, v in body.items() if k != "id"}}

    def _changed(self, meta: Tracked, since: int) -> list[str]:
        relations = _USER_RELATIONS if self.resource == "users" else ()
        out = []
        for prop, seq in meta.prop_seq.items():
            if seq <= since:
                continue
            if self.select is None:
                if prop not in relations:
                    out.append(prop)
            elif prop in self.select_set:
                out.append(prop)
        return out

    def render(self, object_id: str, since: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(item, members) for an object, or (None, []) when nothing tracked changed since `since`."""
        meta = self.d.tracking[object_id]
        if meta.removed is not None:
            if since == 0 and meta.removed == "deleted":
                return None, []  # created and purged before the first round: never seen
            if meta.removed_seq > since:
                return {"id": object_id, "@removed": {"reason": meta.removed}}, []
            return None, []
        obj = self.d.users.get(object_id) if self.resource == "users" else self.d.groups.get(object_id)
        if obj is None:
            return None, []
        new = meta.born_seq > since
        changed = self._changed(meta, since)
        if not new and not changed:
            return None, []
        item = self._props(obj, meta, since, new, changed)
        members: list[dict[str, Any]] = []
        if self.resource == "users":
            if "manager" in self.select_set and (new or meta.prop_seq.get("manager", 0) > since):
                mgr = self.d.manager_of(object_id)
                if mgr:
                    item["manager@delta"] = [{"@odata.type": "#microsoft.graph.user", "id": mgr}]
                elif meta.removed_manager and not new:
                    item["manager@delta"] = [
                        {
                            "@odata.type": "#microsoft.graph.user",
                            "id": meta.removed_manager,
                            "@removed": {"reason": "deleted"},
                        }
                    ]
        elif self.select is None or "members" in self.select_set:
            if new:
                members = [
                    {"@odata.type": f"#microsoft.graph.{kind}", "id": mid}
                    for mid, kind in self.d.members.get(object_id, {}).items()
                ]
            elif meta.prop_seq.get("members", 0) > since:
                for mid, (seq, present, kind) in meta.member_changes.items():
                    if seq > since:
                        entry: dict[str, Any] = {"@odata.type": f"#microsoft.graph.{kind}", "id": mid}
                        if not present:
                            entry["@removed"] = {"reason": "deleted"}
                        members.append(entry)
        return item, members

    # -------------------------------------------------------------------------------------------- paging
    def page(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Items of this page and the cursor for the next one (None: the round is complete)."""
        rec = self.rec
        page_size = max(1, int(self.state.config.get("graph.delta_page_size", 200)))
        slice_size = max(1, int(self.state.config.get("graph.group_members_page_size", 100)))
        dup_rate = float(self.state.config.get("graph.delta_duplicate_rate", 0.0) or 0.0)
        since, prev, high, salt = rec["since"], rec["prev"], rec["high"], rec["salt"]
        replay_rate = rec["replay_rate"]
        items: list[dict[str, Any]] = list(rec.get("pending", ()))
        next_pending: list[dict[str, Any]] = []
        group_rest = rec.get("group_rest")
        pos = rec["pos"]
        page_no = rec.get("page", 0)

        def emit(item: dict[str, Any]) -> None:
            items.append(item)
            if dup_rate > 0 and _chance(f"{salt}:{page_no}", "dup", item["id"]) < dup_rate:
                next_pending.append(item)

        def emit_group(base: dict[str, Any], members: list[dict[str, Any]], offset: int) -> dict[str, Any] | None:
            """One slice of a group's members@delta per page; returns what is left for later pages."""
            chunk = members[offset : offset + slice_size]
            emit({**base, "members@delta": chunk} if chunk else dict(base))
            if offset + slice_size < len(members):
                return {"base": base, "members": members, "offset": offset + slice_size}
            return None

        if group_rest is not None:
            group_rest = emit_group(group_rest["base"], group_rest["members"], group_rest["offset"])
        log = self.d.logs[self.resource]
        stream: list[tuple[int, str]] | None = rec.get("stream")
        end = len(stream) if stream is not None else len(log.seq)
        while group_rest is None and len(items) < page_size and pos < end:
            if stream is not None:
                entry_seq, oid = stream[pos]
            else:
                entry_seq, oid = log.seq[pos], log.ids[pos]
                if entry_seq > high:
                    pos = end
                    break
            pos += 1
            if stream is None:
                seqs = self.d.tracking[oid].seqs
                if seqs[bisect.bisect_right(seqs, high) - 1] != entry_seq:
                    continue  # a later entry of this object (still within the round) will carry it
            if entry_seq > since:
                eff = since
            elif entry_seq > prev and replay_rate > 0 and _chance(salt, "replay", oid) < replay_rate:
                eff = prev  # a replay: the previous round's change shows up again
            else:
                continue
            item, members = self.render(oid, eff)
            if item is None:
                continue
            if self.resource == "groups" and members:
                group_rest = emit_group(item, members, 0)
            else:
                emit(item)
        done = group_rest is None and pos >= end
        if done:
            items.extend(next_pending)  # duplicates still land within the round
            return items, None
        cursor = {**rec, "pos": pos, "pending": next_pending, "group_rest": group_rest, "page": page_no + 1}
        return items, cursor


def register(router: Router) -> None:
    for resource, roles in (("users", READ_USERS), ("groups", READ_GROUPS)):
        for form in URL_FORMS:
            router.add("GET", f"/{resource}/{form}", roles)(_handler(resource))


def _gone(state: Any, rec: dict[str, Any] | None, req: GraphRequest) -> GraphError:
    """410 with a Location that restarts the round from scratch (a "synchronization reset")."""
    if rec is not None:
        location = rec["initial_url"]
    else:
        location = link(state.base_url, req.path, req.raw_query, ["skiptoken", "deltatoken"], {"$deltatoken": ""})
    return GraphError(
        410,
        str(state.config.get("graph.delta_expired_code", "syncStateNotFound")),
        "The sync state generation is not found; the delta token has expired or is no longer valid. "
        "Resynchronize from the Location URL.",
        headers={"Location": location},
    )


def _initial_params(resource: str, req: GraphRequest) -> tuple[list[str] | None, list[str] | None]:
    """Validate the initial request's $select/$expand/$filter (https://learn.microsoft.com/graph/api/user-delta)."""
    q = req.query
    if resource == "users":
        select = parse_select(
            q.get("$select"),
            type_name="microsoft.graph.user",
            known=USER_PROPERTIES,
            unsupported=USER_UNSUPPORTED,
            extra=_USER_RELATIONS,
        )
    else:
        select = parse_select(
            q.get("$select"), type_name="microsoft.graph.group", known=GROUP_PROPERTIES, extra=_GROUP_RELATIONS
        )
    expand = (q.get("$expand") or "").strip()
    if expand:
        allowed = "manager" if resource == "users" else "members"
        if expand.split("(")[0].strip().lower() != allowed:
            raise bad_request(f"The '$expand' query option is not supported for '{expand}' on delta.", "BadRequest")
        select = select if select is not None else list(USER_DEFAULT if resource == "users" else GROUP_PROPERTIES)
        if allowed not in select:
            select = [*select, allowed]
    if q.get("$orderby"):
        raise bad_request("The '$orderby' query option is not supported on delta.", "BadRequest")
    ids = None
    if q.get("$filter"):
        node = parse_filter(q["$filter"])
        if not node.eq_ids or not node.ids:
            raise bad_request(
                "Unsupported filter on delta: only 'id eq' clauses joined with 'or' are supported.",
                "Request_UnsupportedQuery",
            )
        if len(node.ids) > MAX_FILTER_IDS:
            raise bad_request(f"Too many ids in the filter clause; the maximum is {MAX_FILTER_IDS}.")
        ids = list(dict.fromkeys(node.ids))
    return select, ids


def _filter_stream(d: Directory, ids: list[str], high: int) -> list[tuple[int, str]]:
    stream = []
    for oid in ids:
        meta = d.tracking.get(oid)
        if meta is None:
            continue
        i = bisect.bisect_right(meta.seqs, high) - 1
        if i >= 0:
            stream.append((meta.seqs[i], oid))
    return sorted(stream)


def _handler(resource: str) -> Any:
    def handler(state: Any, req: GraphRequest) -> GraphResponse:
        d: Directory = state.directory
        q = req.query
        minimal = "return=minimal" in str(req.headers.get("prefer", "")).replace(" ", "").lower()
        lifetime = float(state.config.get("graph.delta_token_lifetime_s", 7 * 24 * 3600))
        now = state.clock.time()
        skip, delta = q.get("$skiptoken"), q.get("$deltatoken")
        base_path = f"{state.base_url}/v1.0{req.path}"
        with state.lock:
            first_page = False
            if skip:
                rec = d.tokens.get(skip)
                if rec is None or rec["kind"] != "skip" or rec["resource"] != resource:
                    raise _gone(state, rec, req)
                if now - rec["issued"] > lifetime:
                    raise _gone(state, rec, req)
            elif delta and delta.lower() != "latest":
                prior = d.tokens.get(delta)
                if prior is None or prior["kind"] != "delta" or prior["resource"] != resource:
                    raise _gone(state, prior, req)
                if now - prior["issued"] > lifetime:
                    raise _gone(state, prior, req)
                high = d.seq
                stream = _filter_stream(d, prior["filter"], high) if prior["filter"] else None
                start = (
                    0
                    if stream is not None
                    else d.logs[resource].position_after(prior["prev"] if prior["replay_rate"] > 0 else prior["since"])
                )
                rec = {
                    **prior,
                    "kind": "skip",
                    "high": high,
                    "pos": start,
                    "stream": stream,
                    "pending": [],
                    "group_rest": None,
                    "page": 0,
                    "salt": secrets.token_hex(4),
                }
            else:
                select, ids = _initial_params(resource, req)
                initial_url = link(
                    state.base_url, req.path, req.raw_query, ["skiptoken", "deltatoken", "top"], {"$deltatoken": ""}
                )
                high = d.seq
                if delta and delta.lower() == "latest":
                    token = _store_token(
                        d,
                        {
                            "kind": "delta",
                            "resource": resource,
                            "select": select,
                            "filter": ids,
                            "since": high,
                            "prev": high,
                            "replay_rate": 0.0,
                            "issued": now,
                            "initial_url": initial_url,
                        },
                    )
                    body: dict[str, Any] = {
                        "@odata.context": _context(state, resource, select),
                        "@odata.deltaLink": f"{base_path}?$deltatoken={token}",
                        "value": [],
                    }
                    return GraphResponse(200, body)
                first_page = True
                rec = {
                    "kind": "skip",
                    "resource": resource,
                    "select": select,
                    "filter": ids,
                    "since": 0,
                    "prev": 0,
                    "high": high,
                    "pos": 0,
                    "stream": _filter_stream(d, ids, high) if ids else None,
                    "pending": [],
                    "group_rest": None,
                    "page": 0,
                    "salt": secrets.token_hex(4),
                    "replay_rate": 0.0,
                    "issued": now,
                    "initial_url": initial_url,
                }
            items, cursor = _Round(state, resource, rec, minimal).page()
            body = {"@odata.context": _context(state, resource, rec["select"] if first_page else None)}
            if cursor is not None:
                token = _store_token(d, {**cursor, "issued": now})
                body["@odata.nextLink"] = f"{base_path}?$skiptoken={token}"
            else:
                token = _store_token(
                    d,
                    {
                        "kind": "delta",
                        "resource": resource,
                        "select": rec["select"],
                        "filter": rec["filter"],
                        "since": rec["high"],
                        "prev": rec["since"],
                        "issued": now,
                        "initial_url": rec["initial_url"],
                        "replay_rate": float(state.config.get("graph.delta_replay_rate", 0.0) or 0.0),
                    },
                )
                body["@odata.deltaLink"] = f"{base_path}?$deltatoken={token}"
            body["value"] = items
            return GraphResponse(200, body)

    return handler


def _context(state: Any, resource: str, select: list[str] | None) -> str:
    suffix = f"({','.join(select)})" if select else ""
    return f"{state.base_url}/v1.0/$metadata#{resource}{suffix}"
