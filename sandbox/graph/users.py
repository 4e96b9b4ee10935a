"""`/users` and the user's relationships (manager, directReports, memberOf), plus `/directory/deletedItems`.

Shapes follow https://learn.microsoft.com/graph/api/resources/user: the reduced default property set unless `$select`,
`$top` 1-999 with opaque `$skiptoken` nextLinks (at most 100 per page when the request carries `$expand`),
`$count`/advanced queries only with `ConsistencyLevel: eventual`, soft delete into the recycle bin, 404 for
"no manager".
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.graph.errors import GraphError, bad_request, not_found
from sandbox.graph.odata import (
    compile_filter,
    is_advanced,
    order_key,
    paginate,
    parse_select,
    parse_top,
    wants_count,
)
from sandbox.graph.routing import READ_GROUPS, READ_USERS, WRITE_USERS, GraphRequest, GraphResponse, Router
from sandbox.graph.store import GROUP_PROPERTIES, USER_DEFAULT, USER_PROPERTIES, USER_UNSUPPORTED

USER_TYPE = "microsoft.graph.user"
USER_FILTERABLE = {
    "id",
    "userPrincipalName",
    "mail",
    "mailNickname",
    "displayName",
    "givenName",
    "surname",
    "accountEnabled",
    "userType",
    "employeeId",
    "employeeType",
    "employeeHireDate",
    "department",
    "jobTitle",
    "companyName",
    "officeLocation",
    "city",
    "country",
    "state",
    "usageLocation",
    "preferredLanguage",
    "createdDateTime",
    "creationType",
    "externalUserState",
    "onPremisesImmutableId",
    "onPremisesSyncEnabled",
    "onPremisesSamAccountName",
    "employeeOrgData/costCenter",
    "employeeOrgData/division",
    "proxyAddresses",
    "otherMails",
    "businessPhones",
    "mobilePhone",
    "imAddresses",
}
USER_SORTABLE = {"displayName", "userPrincipalName", "createdDateTime", "employeeId", "employeeHireDate"}

#: Objects per page of a directory-object collection read with `$expand`, whatever `$top` asks. Why: real Graph pages
#: `/users?$expand=manager&$top=999` (and `/groups?$expand=owners&$top=999`) 100 at a time, the rest behind
#: `@odata.nextLink`. Reported by users, with Graph known issue 13635 given as the cause
#: (https://developer.microsoft.com/en-us/graph/known-issues/?search=13635); see docs/sandbox.md, "`$expand` limits".
#: A client trusting `$top=999` would make 10x fewer calls here than against a real tenant.
EXPAND_PAGE_MAX = 100

#: Items of one expanded collection-valued relationship (`memberOf`, `directReports`) on one object, with no nextLink
#: for the rest. Why: the `$expand` section of https://learn.microsoft.com/graph/query-parameters documents this
#: limit of 20 for directory objects (users, groups), and so does known issue 13635.
EXPANDED_RELATIONSHIP_MAX = 20


def context(state: Any, fragment: str) -> str:
    return f"{state.base_url}/v1.0/$metadata#{fragment}"


def project(obj: dict[str, Any], select: list[str] | None, default: tuple[str, ...] = USER_DEFAULT) -> dict[str, Any]:
    """The properties a read returns: the default set, or exactly the selected ones (id always)."""
    names = default if select is None else select
    out = {name: obj.get(name) for name in names if name in obj}
    out.setdefault("id", obj["id"])
    return out


def as_directory_object(state: Any, kind: str, obj: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """A member/manager/memberOf entry: `@odata.type` tells users and groups apart."""
    if kind == "group":
        body = project(obj, [s for s in select if s in GROUP_PROPERTIES] if select else None, GROUP_PROPERTIES)
        return {"@odata.type": "#microsoft.graph.group", **body}
    return {"@odata.type": "#microsoft.graph.user", **project(obj, select)}


def user_select(req: GraphRequest) -> list[str] | None:
    return parse_select(
        req.query.get("$select"), type_name=USER_TYPE, known=USER_PROPERTIES, unsupported=USER_UNSUPPORTED
    )


_EXPAND = re.compile(r"^\s*(manager|memberOf|directReports)\s*(?:\((.*)\))?\s*$", re.IGNORECASE)


def _expansions(req: GraphRequest) -> list[tuple[str, list[str] | None]]:
    raw = req.query.get("$expand")
    if not raw:
        return []
    out = []
    for part in re.split(r",(?![^()]*\))", raw):
        m = _EXPAND.match(part)
        if not m:
            raise bad_request(
                f"Parsing OData Select and Expand failed: Could not find a property named '{part.strip()}' on type "
                f"'{USER_TYPE}'.",
                "BadRequest",
            )
        select = None
        if m.group(2):
            sel = re.search(r"\$select=([^;]*)", m.group(2))
            select = parse_select(sel.group(1), type_name=USER_TYPE, known=USER_PROPERTIES) if sel else None
        out.append(
            (
                {"manager": "manager", "memberof": "memberOf", "directreports": "directReports"}[m.group(1).lower()],
                select,
            )
        )
    if len(out) > 1:
        raise bad_request("Query option 'Expand' is only supported for one navigation property at a time.")
    return out


def _expand(
    state: Any, user: dict[str, Any], body: dict[str, Any], expansions: list[tuple[str, list[str] | None]]
) -> None:
    d = state.directory
    for name, select in expansions:
        if name == "manager":
            mgr = d.manager_of(user["id"])
            if mgr:
                body["manager"] = as_directory_object(state, "user", d.users[mgr], select)
        elif name == "memberOf":
            gids = [g for g in sorted(d.member_of.get(user["id"], ())) if g in d.groups][:EXPANDED_RELATIONSHIP_MAX]
            body["memberOf"] = [as_directory_object(state, "group", d.groups[g], None) for g in gids]
        else:
            rids = [r for r in sorted(d.reports.get(user["id"], ())) if r in d.users][:EXPANDED_RELATIONSHIP_MAX]
            body["directReports"] = [as_directory_object(state, "user", d.users[r], select) for r in rids]


def _search(req: GraphRequest) -> Any:
    """`$search="displayName:ada" OR "mail:ada"`: tokenised prefix match; needs ConsistencyLevel eventual."""
    raw = req.query.get("$search")
    if raw is None:
        return None
    if str(req.headers.get("consistencylevel", "")).lower() != "eventual":
        raise bad_request(
            "Request with $search query parameter only works through MSGraph with a special request header: "
            "'ConsistencyLevel: eventual'"
        )
    clauses = re.findall(r'"([^":]+):([^"]*)"', raw)
    if not clauses:
        raise bad_request("Invalid search query.", "BadRequest")
    joiner = "and" if re.search(r'"\s+AND\s+"', raw) else "or"

    def hit(obj: dict[str, Any], prop: str, term: str) -> bool:
        value = obj.get(prop)
        words = re.split(r"[\s@._-]+", str(value).casefold()) if value else []
        return any(w.startswith(term.casefold()) for w in words)

    def fn(obj: dict[str, Any]) -> bool:
        results = (hit(obj, p, t) for p, t in clauses)
        return all(results) if joiner == "and" else any(results)

    return fn


def list_collection(
    state: Any,
    req: GraphRequest,
    items: list[dict[str, Any]],
    *,
    type_name: str,
    label: str,
    known: Any,
    filterable: Any,
    sortable: Any,
    ctx: str,
    render: Any,
    default_top: int = 100,
) -> GraphResponse:
    """Filter, search, sort, count and page a collection the way Graph's directory does.

    A request carrying `$expand` gets pages of at most `EXPAND_PAGE_MAX` objects even when `$top` asks for more (as
    real Graph answers): every route here serves directory objects, so the cap is applied once, for all of them. The
    nextLink keeps the caller's `$top`, and each page recomputes the same capped size, so paging stays consistent.
    """
    advanced = is_advanced(req.query, req.headers)
    count = wants_count(req.query, req.headers)
    top = parse_top(req.query, default=default_top)
    if req.query.get("$expand"):
        top = min(top, EXPAND_PAGE_MAX)
    if req.query.get("$filter"):
        node = compile_filter(
            req.query["$filter"],
            type_name=type_name,
            resource_label=label,
            filterable=filterable,
            known=known,
            advanced=advanced,
        )
        items = [o for o in items if node.fn(o)]
    searcher = _search(req)
    if searcher is not None:
        items = [o for o in items if searcher(o)]
    order = order_key(req.query.get("$orderby"), sortable)
    if order:
        if req.query.get("$filter") and not advanced:
            raise bad_request("Sorting not supported for current query.", "Request_UnsupportedQuery")
        prop, desc = order
        items = sorted(items, key=lambda o: (o.get(prop) is None, str(o.get(prop) or "").casefold()), reverse=desc)
    page, nxt = paginate(items, req.query, base=state.base_url, path=req.path, raw_query=req.raw_query, top=top)
    body: dict[str, Any] = {"@odata.context": ctx}
    if count:
        body["@odata.count"] = len(items)
    if nxt:
        body["@odata.nextLink"] = nxt
    body["value"] = [render(o) for o in page]
    return GraphResponse(200, body)


def _ref_id(body: Any) -> str:
    """`{"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/{id}"}` -> id."""
    ref = body.get("@odata.id") if isinstance(body, dict) else None
    if not isinstance(ref, str) or not ref.strip():
        raise bad_request("Invalid OData reference: '@odata.id' is missing.", "BadRequest")
    m = re.search(r"(?:/|\(')([^/(')]+)'?\)?/?$", ref.strip())
    if not m:
        raise bad_request(f"Invalid object identifier '{ref}'.", "BadRequest")
    return m.group(1)


def member_of(kind: str, param: str, transitive: bool) -> Any:
    """A handler for the groups a user or group (`kind`, found by the path parameter `param`) belongs to: directly,
    or with `transitive` also through the groups those belong to (Graph's memberOf / transitiveMemberOf)."""

    def handler(state: Any, req: GraphRequest) -> GraphResponse:
        with state.lock:
            d = state.directory
            obj = d.user(req.params[param]) if kind == "user" else d.group(req.params[param])
            gids = d.transitive_member_of(obj["id"]) if transitive else sorted(d.member_of.get(obj["id"], ()))
            items = [d.groups[g] for g in gids if g in d.groups]
            return list_collection(
                state,
                req,
                items,
                type_name="microsoft.graph.group",
                label="Group",
                known=GROUP_PROPERTIES,
                filterable=set(GROUP_PROPERTIES),
                sortable={"displayName"},
                ctx=context(state, "directoryObjects"),
                render=lambda g: as_directory_object(state, "group", g, None),
            )

    return handler


def register(router: Router) -> None:
    @router.add("GET", "/users", READ_USERS, cost=2)
    def list_users(state: Any, req: GraphRequest) -> GraphResponse:
        select = user_select(req)
        expansions = _expansions(req)
        d = state.directory
        with state.lock:
            items = list(d.users.values())
            ctx_sel = f"users({','.join(select)})" if select else "users"

            def render(u: dict[str, Any]) -> dict[str, Any]:
                body = project(u, select)
                _expand(state, u, body, expansions)
                return body

            return list_collection(
                state,
                req,
                items,
                type_name=USER_TYPE,
                label="User",
                known=USER_PROPERTIES,
                filterable=USER_FILTERABLE,
                sortable=USER_SORTABLE,
                ctx=context(state, ctx_sel),
                render=render,
            )

    @router.add("GET", "/users/$count", READ_USERS)
    def count_users(state: Any, req: GraphRequest) -> GraphResponse:
        if str(req.headers.get("consistencylevel", "")).lower() != "eventual":
            raise bad_request("$count is not currently supported.")
        with state.lock:
            items = list(state.directory.users.values())
            if req.query.get("$filter"):
                node = compile_filter(
                    req.query["$filter"],
                    type_name=USER_TYPE,
                    resource_label="User",
                    filterable=USER_FILTERABLE,
                    known=USER_PROPERTIES,
                    advanced=True,
                )
                items = [u for u in items if node.fn(u)]
            return GraphResponse(200, str(len(items)))

    @router.add("POST", "/users", WRITE_USERS)
    def create_user(state: Any, req: GraphRequest) -> GraphResponse:
        if not isinstance(req.body, dict):
            raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
        if "id" in req.body:
            raise bad_request("Property 'id' is read-only and cannot be set.")
        user = state.directory.create_user(req.body)
        body = {"@odata.context": context(state, "users/$entity"), **project(user, None)}
        return GraphResponse(201, body, {"Location": f"{state.base_url}/v1.0/users/{user['id']}"})

    @router.add("GET", "/users/{key}", READ_USERS)
    def get_user(state: Any, req: GraphRequest) -> GraphResponse:
        select = user_select(req)
        expansions = _expansions(req)
        with state.lock:
            user = state.directory.user(req.params["key"])
            ctx_sel = f"users({','.join(select)})/$entity" if select else "users/$entity"
            body = {"@odata.context": context(state, ctx_sel), **project(user, select)}
            _expand(state, user, body, expansions)
            return GraphResponse(200, body)

    @router.add("PATCH", "/users/{key}", WRITE_USERS)
    def patch_user(state: Any, req: GraphRequest) -> GraphResponse:
        if not isinstance(req.body, dict):
            raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
        state.directory.update_user(req.params["key"], req.body)
        return GraphResponse(204)

    @router.add("DELETE", "/users/{key}", WRITE_USERS)
    def delete_user(state: Any, req: GraphRequest) -> GraphResponse:
        state.directory.soft_delete_user(req.params["key"])
        return GraphResponse(204)

    @router.add("GET", "/users/{key}/manager", READ_USERS)
    def get_manager(state: Any, req: GraphRequest) -> GraphResponse:
        with state.lock:
            user = state.directory.user(req.params["key"])
            mgr = state.directory.manager_of(user["id"])
            if mgr is None:
                raise not_found("manager")
            body = {
                "@odata.context": context(state, "directoryObjects/$entity"),
                **as_directory_object(state, "user", state.directory.users[mgr], user_select(req)),
            }
            return GraphResponse(200, body)

    @router.add("PUT", "/users/{key}/manager/$ref", WRITE_USERS)
    def put_manager(state: Any, req: GraphRequest) -> GraphResponse:
        state.directory.set_manager(req.params["key"], _ref_id(req.body))
        return GraphResponse(204)

    @router.add("DELETE", "/users/{key}/manager/$ref", WRITE_USERS)
    def delete_manager(state: Any, req: GraphRequest) -> GraphResponse:
        state.directory.remove_manager(req.params["key"])
        return GraphResponse(204)

    @router.add("GET", "/users/{key}/directReports", READ_USERS)
    def direct_reports(state: Any, req: GraphRequest) -> GraphResponse:
        select = user_select(req)
        with state.lock:
            d = state.directory
            user = d.user(req.params["key"])
            items = [d.users[r] for r in sorted(d.reports.get(user["id"], ())) if r in d.users]
            return list_collection(
                state,
                req,
                items,
                type_name=USER_TYPE,
                label="User",
                known=USER_PROPERTIES,
                filterable=USER_FILTERABLE,
                sortable=USER_SORTABLE,
                ctx=context(state, "directoryObjects"),
                render=lambda u: as_directory_object(state, "user", u, select),
            )

    router.add("GET", "/users/{key}/memberOf", READ_USERS, cost=2)(member_of("user", "key", False))
    router.add("GET", "/users/{key}/transitiveMemberOf", READ_USERS, cost=2)(member_of("user", "key", True))

    # ------------------------------------------------------------------------------------ recycle bin
    def deleted_list(kind: str) -> Any:
        def handler(state: Any, req: GraphRequest) -> GraphResponse:
            with state.lock:
                d = state.directory
                if kind == "user":
                    select = user_select(req)
                    items = list(d.deleted_users.values())

                    def render(o: dict[str, Any]) -> dict[str, Any]:
                        names = select or [*USER_DEFAULT, "deletedDateTime"]
                        return {"@odata.type": "#microsoft.graph.user", **project(o, names)}

                    known, filterable, label = USER_PROPERTIES, USER_FILTERABLE | {"deletedDateTime"}, "User"
                else:
                    items = list(d.deleted_groups.values())

                    def render(o: dict[str, Any]) -> dict[str, Any]:
                        return {"@odata.type": "#microsoft.graph.group", **project(o, None, GROUP_PROPERTIES)}

                    known, filterable, label = GROUP_PROPERTIES, set(GROUP_PROPERTIES), "Group"
                return list_collection(
                    state,
                    req,
                    items,
                    type_name=f"microsoft.graph.{kind}",
                    label=label,
                    known=known,
                    filterable=filterable,
                    sortable={"displayName", "deletedDateTime"},
                    ctx=context(state, f"directory/deletedItems/microsoft.graph.{kind}"),
                    render=render,
                )

        return handler

    router.add("GET", "/directory/deletedItems/microsoft.graph.user", READ_USERS)(deleted_list("user"))
    router.add("GET", "/directory/deletedItems/microsoft.graph.group", READ_USERS)(deleted_list("group"))

    def _deleted(state: Any, object_id: str) -> tuple[str, dict[str, Any]]:
        d = state.directory
        if object_id in d.deleted_users:
            return "user", d.deleted_users[object_id]
        if object_id in d.deleted_groups:
            return "group", d.deleted_groups[object_id]
        raise not_found(object_id)

    @router.add("GET", "/directory/deletedItems/{oid}", READ_USERS)
    def get_deleted(state: Any, req: GraphRequest) -> GraphResponse:
        with state.lock:
            kind, obj = _deleted(state, req.params["oid"])
            names = user_select(req) if kind == "user" else None
            body = as_directory_object(
                state, kind, obj, names or ([*USER_DEFAULT, "deletedDateTime"] if kind == "user" else None)
            )
            return GraphResponse(200, {"@odata.context": context(state, "directoryObjects/$entity"), **body})

    @router.add("POST", "/directory/deletedItems/{oid}/restore", WRITE_USERS)
    def restore(state: Any, req: GraphRequest) -> GraphResponse:
        with state.lock:
            kind, obj = state.directory.restore(req.params["oid"])
            body = as_directory_object(state, kind, obj, None)
            return GraphResponse(200, {"@odata.context": context(state, "directoryObjects/$entity"), **body})

    @router.add("DELETE", "/directory/deletedItems/{oid}", WRITE_USERS)
    def purge(state: Any, req: GraphRequest) -> GraphResponse:
        state.directory.hard_delete(req.params["oid"])
        return GraphResponse(204)

    # ------------------------------------------------------------------------------------ misc directory
    @router.add("GET", "/organization", READ_USERS + READ_GROUPS)
    def organization(state: Any, req: GraphRequest) -> GraphResponse:
        d = state.directory
        org = {
            "id": state.creds.tenant_id,
            "displayName": d.tenant_name.title(),
            "tenantType": "AAD",
            "verifiedDomains": [
                {
                    "capabilities": "Email, OfficeCommunicationsOnline",
                    "isDefault": dom == d.verified_domains[-1],
                    "isInitial": dom == d.tenant_domain,
                    "name": dom,
                    "type": "Managed",
                }
                for dom in d.verified_domains
            ],
        }
        return GraphResponse(200, {"@odata.context": context(state, "organization"), "value": [org]})

    @router.add("POST", "/directoryObjects/getByIds", READ_USERS + READ_GROUPS, cost=3)
    def get_by_ids(state: Any, req: GraphRequest) -> GraphResponse:
        body = req.body if isinstance(req.body, dict) else {}
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or len(ids) > 1000:
            raise bad_request("Invalid value specified for property 'ids'.")
        types = {str(t).lower().removeprefix("microsoft.graph.") for t in body.get("types") or ["user", "group"]}
        out = []
        with state.lock:
            d = state.directory
            for oid in ids:
                if oid in d.users and "user" in types:
                    out.append(as_directory_object(state, "user", d.users[oid], list(USER_PROPERTIES)))
                elif oid in d.groups and "group" in types:
                    out.append(as_directory_object(state, "group", d.groups[oid], None))
        return GraphResponse(200, {"@odata.context": context(state, "directoryObjects"), "value": out})

    @router.add("GET", "/directoryObjects/{oid}", READ_USERS + READ_GROUPS)
    def get_directory_object(state: Any, req: GraphRequest) -> GraphResponse:
        with state.lock:
            kind, obj = state.directory.object(req.params["oid"])
            body = as_directory_object(state, kind, obj, None)
            return GraphResponse(200, {"@odata.context": context(state, "directoryObjects/$entity"), **body})


__all__ = ["register", "project", "as_directory_object", "list_collection", "context", "GraphError"]
