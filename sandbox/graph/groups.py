"""`/groups`: list/get/create/update/delete, direct `members` (with `$ref` add/remove) and `transitiveMembers`.

Members are directoryObjects whose `@odata.type` tells users and groups apart
(https://learn.microsoft.com/graph/api/group-list-members); member reads cost more resource units than plain reads
(https://learn.microsoft.com/graph/throttling-limits), which the route table declares.
"""

from __future__ import annotations

from typing import Any

from sandbox.graph.errors import bad_request
from sandbox.graph.odata import parse_select
from sandbox.graph.routing import READ_GROUPS, WRITE_GROUPS, WRITE_MEMBERS, GraphRequest, GraphResponse, Router
from sandbox.graph.store import GROUP_PROPERTIES, USER_PROPERTIES
from sandbox.graph.users import (
    USER_FILTERABLE,
    _ref_id,
    as_directory_object,
    context,
    list_collection,
    member_of,
    project,
)

GROUP_TYPE = "microsoft.graph.group"
GROUP_FILTERABLE = {
    "id",
    "displayName",
    "description",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "groupTypes",
    "createdDateTime",
    "onPremisesSyncEnabled",
    "proxyAddresses",
    "isAssignableToRole",
    "visibility",
}


def group_select(req: GraphRequest) -> list[str] | None:
    return parse_select(req.query.get("$select"), type_name=GROUP_TYPE, known=GROUP_PROPERTIES)


def register(router: Router) -> None:
    @router.add("GET", "/groups", READ_GROUPS)
    def list_groups(state: Any, req: GraphRequest) -> GraphResponse:
        select = group_select(req)
        with state.lock:
            items = list(state.directory.groups.values())
            ctx = f"groups({','.join(select)})" if select else "groups"
            return list_collection(
                state,
                req,
                items,
                type_name=GROUP_TYPE,
                label="Group",
                known=GROUP_PROPERTIES,
                filterable=GROUP_FILTERABLE,
                sortable={"displayName", "createdDateTime"},
                ctx=context(state, ctx),
                render=lambda g: project(g, select, GROUP_PROPERTIES),
            )

    @router.add("GET", "/groups/$count", READ_GROUPS)
    def count_groups(state: Any, req: GraphRequest) -> GraphResponse:
        if str(req.headers.get("consistencylevel", "")).lower() != "eventual":
            raise bad_request("$count is not currently supported.")
        with state.lock:
            return GraphResponse(200, str(len(state.directory.groups)))

    @router.add("POST", "/groups", WRITE_GROUPS)
    def create_group(state: Any, req: GraphRequest) -> GraphResponse:
        if not isinstance(req.body, dict):
            raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
        if "id" in req.body:
            raise bad_request("Property 'id' is read-only and cannot be set.")
        group = state.directory.create_group(req.body)
        body = {"@odata.context": context(state, "groups/$entity"), **project(group, None, GROUP_PROPERTIES)}
        return GraphResponse(201, body, {"Location": f"{state.base_url}/v1.0/groups/{group['id']}"})

    @router.add("GET", "/groups/{gid}", READ_GROUPS)
    def get_group(state: Any, req: GraphRequest) -> GraphResponse:
        select = group_select(req)
        with state.lock:
            group = state.directory.group(req.params["gid"])
            body = {"@odata.context": context(state, "groups/$entity"), **project(group, select, GROUP_PROPERTIES)}
            return GraphResponse(200, body)

    @router.add("PATCH", "/groups/{gid}", WRITE_GROUPS)
    def patch_group(state: Any, req: GraphRequest) -> GraphResponse:
        if not isinstance(req.body, dict):
            raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
        state.directory.update_group(req.params["gid"], req.body)
        return GraphResponse(204)

    @router.add("DELETE", "/groups/{gid}", WRITE_GROUPS)
    def delete_group(state: Any, req: GraphRequest) -> GraphResponse:
        state.directory.delete_group(req.params["gid"])
        return GraphResponse(204)

    def members(transitive: bool) -> Any:
        def handler(state: Any, req: GraphRequest) -> GraphResponse:
            select = parse_select(
                req.query.get("$select"),
                type_name="microsoft.graph.directoryObject",
                known=set(USER_PROPERTIES) | set(GROUP_PROPERTIES),
            )
            with state.lock:
                d = state.directory
                group = d.group(req.params["gid"])
                pairs = d.transitive_members(group["id"]) if transitive else list(d.members[group["id"]].items())
                kinds = dict(pairs)
                items = [d.users[m] if k == "user" else d.groups[m] for m, k in pairs if m in d.users or m in d.groups]
                return list_collection(
                    state,
                    req,
                    items,
                    type_name="microsoft.graph.directoryObject",
                    label="DirectoryObject",
                    known=set(USER_PROPERTIES) | set(GROUP_PROPERTIES),
                    filterable=USER_FILTERABLE | GROUP_FILTERABLE,
                    sortable={"displayName"},
                    ctx=context(state, "directoryObjects"),
                    render=lambda o: as_directory_object(state, kinds[o["id"]], o, select),
                )

        return handler

    router.add("GET", "/groups/{gid}/members", READ_GROUPS, cost=3)(members(False))
    router.add("GET", "/groups/{gid}/transitiveMembers", READ_GROUPS, cost=5)(members(True))

    router.add("GET", "/groups/{gid}/memberOf", READ_GROUPS, cost=2)(member_of("group", "gid", False))
    router.add("GET", "/groups/{gid}/transitiveMemberOf", READ_GROUPS, cost=2)(member_of("group", "gid", True))

    @router.add("POST", "/groups/{gid}/members/$ref", WRITE_MEMBERS)
    def add_member(state: Any, req: GraphRequest) -> GraphResponse:
        state.directory.add_member(req.params["gid"], _ref_id(req.body))
        return GraphResponse(204)

    @router.add("DELETE", "/groups/{gid}/members/{mid}/$ref", WRITE_MEMBERS)
    def remove_member(state: Any, req: GraphRequest) -> GraphResponse:
        state.directory.remove_member(req.params["gid"], req.params["mid"])
        return GraphResponse(204)
