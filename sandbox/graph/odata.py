"""OData query options as Graph's directory implements them: $select, $filter, $top, $count, $orderby.

$filter is parsed with a real grammar (`filter.lark`) because clients build nested and/or/in/startswith
expressions that regexes would half-understand, and a half-understood filter silently returns the wrong users.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from lark import Lark, Token, Transformer, UnexpectedInput

from sandbox.graph.errors import GraphError, bad_request

Predicate = Callable[[dict[str, Any]], bool]

#: option names Graph accepts with or without "$", in any case; normalised to the lower-case "$name" form
_OPTIONS = {"select", "filter", "top", "count", "orderby", "expand", "search", "skiptoken", "deltatoken", "skip"}


def parse_query(raw: str) -> dict[str, str]:
    """Query string -> {"$select": ..., ...}; `$deltaToken`/`deltatoken` and friends all map to one key."""
    out: dict[str, str] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        bare = key.lstrip("$").lower()
        out[f"${bare}" if bare in _OPTIONS else key] = value
    return out


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("filter.lark")).read_text()
    return Lark(grammar, parser="lalr")


class _Node:
    """A parsed filter: a predicate plus facts the caller validates (properties used, advanced-only operators)."""

    def __init__(
        self, fn: Predicate, props: set[str], advanced: set[str], ids: list[str] | None = None, eq_ids: bool = False
    ) -> None:
        self.fn, self.props, self.advanced, self.ids = fn, props, advanced, ids
        #: the whole filter is `id eq '..' or id eq '..'` - the only form delta queries accept
        self.eq_ids = eq_ids


def _get(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = obj
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _norm(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _cmp(op: str, left: Any, right: Any) -> bool:
    left, right = _norm(left), _norm(right)
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op]
    except TypeError:
        return False


class _Build(Transformer[Token, _Node]):
    def path(self, items: list[Token]) -> tuple[str, ...]:
        return tuple(str(t) for t in items)

    def string(self, items: list[Token]) -> str:
        return str(items[0])[1:-1].replace("''", "'")

    def true(self, _: list[Token]) -> bool:
        return True

    def false(self, _: list[Token]) -> bool:
        return False

    def null(self, _: list[Token]) -> None:
        return None

    def datetime(self, items: list[Token]) -> str:
        return str(items[0])

    def guid(self, items: list[Token]) -> str:
        return str(items[0])

    def number(self, items: list[Token]) -> float | int:
        text = str(items[0])
        return float(text) if "." in text else int(text)

    def compare(self, items: list[Any]) -> _Node:
        path, op, value = items[0], str(items[1]).lower(), items[2]
        advanced = {op} if op == "ne" else set()
        if value is None:
            advanced.add("null")
        ids = [value] if path == ("id",) and op == "eq" and isinstance(value, str) else None
        return _Node(lambda o: _cmp(op, _get(o, path), value), {"/".join(path)}, advanced, ids, ids is not None)

    def in_(self, items: list[Any]) -> _Node:
        path, values = items[0], {_norm(v) for v in items[1:]}
        ids = [str(v) for v in items[1:]] if path == ("id",) else None
        return _Node(lambda o: _norm(_get(o, path)) in values, {"/".join(path)}, set(), ids)

    def func(self, items: list[Any]) -> _Node:
        name, path, value = str(items[0]).lower(), items[1], _norm(items[2])
        if not isinstance(value, str):
            raise bad_request(f"Invalid {name} argument.", "BadRequest")

        def fn(o: dict[str, Any]) -> bool:
            got = _norm(_get(o, path))
            if not isinstance(got, str):
                return False
            return got.startswith(value) if name == "startswith" else got.endswith(value)

        return _Node(fn, {"/".join(path)}, {"endswith"} if name == "endswith" else set())

    def lambda_(self, items: list[Any]) -> _Node:
        path, var, var2, op, value = items[0], items[2], items[3], items[4], items[5]
        kind = str(items[1]).lower().lstrip("/")
        if str(var) != str(var2):
            raise bad_request(f"Could not find a property named '{var2}' on type 'Edm.String'.", "BadRequest")
        op = str(op).lower()

        def fn(o: dict[str, Any]) -> bool:
            seq = _get(o, path) or []
            test = (_cmp(op, item, value) for item in seq)
            return any(test) if kind == "any" else all(test)

        return _Node(fn, {"/".join(path)}, {"ne"} if op == "ne" else set())

    def and_(self, items: list[_Node]) -> _Node:
        a, b = items
        return _Node(lambda o: a.fn(o) and b.fn(o), a.props | b.props, a.advanced | b.advanced)

    def or_(self, items: list[_Node]) -> _Node:
        a, b = items
        ids = a.ids + b.ids if a.ids is not None and b.ids is not None else None
        eq_ids = a.eq_ids and b.eq_ids
        return _Node(lambda o: a.fn(o) or b.fn(o), a.props | b.props, a.advanced | b.advanced, ids, eq_ids)

    def not_(self, items: list[_Node]) -> _Node:
        a = items[0]
        return _Node(lambda o: not a.fn(o), a.props, a.advanced | {"not"})

    def start(self, items: list[_Node]) -> _Node:
        return items[0]


def parse_filter(text: str) -> _Node:
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        message = f"Invalid filter clause: Syntax error at position {exc.column} in '{text}'."
        raise bad_request(message, "BadRequest") from exc
    try:
        return _Build().transform(tree)
    except GraphError:
        raise
    except Exception as exc:  # lark wraps transformer errors in VisitError
        inner = getattr(exc, "orig_exc", exc)
        if isinstance(inner, GraphError):
            raise inner from None
        raise bad_request(f"Invalid filter clause: '{text}'.", "BadRequest") from exc


def compile_filter(
    text: str, *, type_name: str, resource_label: str, filterable: Iterable[str], known: Iterable[str], advanced: bool
) -> _Node:
    """Parse and validate a $filter against what the resource supports.

    Operators Graph only allows as "advanced queries" (ne, not, endsWith, null comparisons) need `ConsistencyLevel:
    eventual` + `$count=true` (https://learn.microsoft.com/graph/aad-advanced-queries); without them Graph says the
    clause is unsupported.
    """
    node = parse_filter(text)
    filterable, known = set(filterable), set(known)
    for prop in sorted(node.props):
        root = prop.split("/")[0]
        if root not in known:
            raise bad_request(f"Could not find a property named '{root}' on type '{type_name}'.", "BadRequest")
        if prop not in filterable and root not in filterable:
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                f"Unsupported or invalid query filter clause specified for property '{prop}' of resource "
                f"'{resource_label}'.",
            )
    if node.advanced and not advanced:
        prop = sorted(node.props)[0] if node.props else "unknown"
        raise GraphError(
            400,
            "Request_UnsupportedQuery",
            f"Unsupported or invalid query filter clause specified for property '{prop}' of resource "
            f"'{resource_label}'.",
        )
    return node


def parse_select(
    text: str | None,
    *,
    type_name: str,
    known: Iterable[str],
    unsupported: Iterable[str] = (),
    extra: Iterable[str] = (),
) -> list[str] | None:
    """`$select` -> property list (id first-class), None when absent; unknown names are 400, store-less ones 501."""
    if text is None or not text.strip():
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    known_set, extra_set, unsupported_set = set(known), set(extra), set(unsupported)
    lowered = {k.lower(): k for k in known_set | extra_set}
    out: list[str] = []
    for name in names:
        if name in unsupported_set:
            raise GraphError(501, "NotImplemented", "This operation target is not yet supported.")
        canonical = lowered.get(name.lower())
        if canonical is None:
            raise bad_request(
                f"Parsing OData Select and Expand failed: Could not find a property named '{name}' on type "
                f"'{type_name}'.",
                "BadRequest",
            )
        if canonical not in out:
            out.append(canonical)
    return out


def parse_top(query: dict[str, str], *, default: int = 100, maximum: int = 999) -> int:
    raw = query.get("$top")
    if raw is None:
        return default
    try:
        top = int(raw)
    except ValueError:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and {maximum} inclusive.") from None
    if not 1 <= top <= maximum:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and {maximum} inclusive.")
    return top


def is_advanced(query: dict[str, str], headers: Any) -> bool:
    """Advanced query capabilities: `ConsistencyLevel: eventual` header and `$count=true`."""
    return str(headers.get("consistencylevel", "")).lower() == "eventual" and query.get("$count", "").lower() == "true"


def wants_count(query: dict[str, str], headers: Any) -> bool:
    """`$count=true` is honoured only with `ConsistencyLevel: eventual` (an "advanced query")."""
    if query.get("$count", "").lower() != "true":
        return False
    if str(headers.get("consistencylevel", "")).lower() != "eventual":
        raise bad_request("$count is not currently supported.")
    return True


def order_key(orderby: str | None, known: Iterable[str]) -> tuple[str, bool] | None:
    if not orderby:
        return None
    parts = orderby.strip().split()
    prop, direction = parts[0], (parts[1].lower() if len(parts) > 1 else "asc")
    if prop not in set(known) or direction not in ("asc", "desc") or len(parts) > 2:
        raise bad_request(f"Invalid $orderby clause: '{orderby}'.", "BadRequest")
    return prop, direction == "desc"


def _skip_encode(offset: int) -> str:
    return base64.urlsafe_b64encode(f"RFNwdAI:{offset}".encode()).rstrip(b"=").decode()


def _skip_decode(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, offset = raw.partition(":")
        if prefix != "RFNwdAI":
            raise ValueError(raw)
        return int(offset)
    except ValueError:
        raise bad_request(
            "The specified page token value has expired and can no longer be included in your request."
        ) from None


#: what a link's path keeps as it is (RFC 3986 pchar minus `&`); everything else is percent-encoded
_PATH_SAFE = "/@$:()',=!*+;"


def link(base: str, path: str, raw_query: str, drop: Iterable[str], add: dict[str, str]) -> str:
    """Rebuild a request URL keeping the caller's own parameters (minus `drop`) and adding `add`."""
    dropped = {d.lower() for d in drop}
    pairs = [(k, v) for k, v in parse_qsl(raw_query, keep_blank_values=True) if k.lstrip("$").lower() not in dropped]
    pairs += list(add.items())
    query = urlencode(pairs, quote_via=quote, safe="$,'()/:@")
    # `path` is decoded: encode it again, or a guest's `#EXT#` would end the link's path
    return f"{base}/v1.0{quote(path, safe=_PATH_SAFE)}" + (f"?{query}" if query else "")


def paginate(
    items: list[Any], query: dict[str, str], *, base: str, path: str, raw_query: str, top: int
) -> tuple[list[Any], str | None]:
    """Offset paging behind an opaque `$skiptoken`; the nextLink repeats the original query options (like Graph)."""
    offset = _skip_decode(query["$skiptoken"]) if query.get("$skiptoken") else 0
    page = items[offset : offset + top]
    nxt = None
    if offset + top < len(items):
        nxt = link(base, path, raw_query, ["skiptoken"], {"$skiptoken": _skip_encode(offset + top)})
    return page, nxt
