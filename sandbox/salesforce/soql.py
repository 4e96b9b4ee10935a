"""SOQL for the sandbox org: a lark grammar (`soql.lark`), a parse tree turned into a small AST, and the public API.

Why a real grammar: the product talks to this org through simple-salesforce, and a faithful org must reject what
Salesforce rejects (mixed AND/OR without parentheses, quoted booleans, unknown fields) with the same errorCodes and
the same caret-annotated messages, and accept everything the worker sends. Regex matching cannot do both.

Public surface:
- `parse(text) -> SoqlQuery` (syntax only; raises `SoqlError("MALFORMED_QUERY", ...)`),
- `execute(query, source, now=...) -> QueryResult` (binding against `RecordSource`, filtering, ordering; lives in
  `soql_eval` and is re-exported here),
- `RecordSource`, the protocol the org implements.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

if TYPE_CHECKING:
    from sandbox.salesforce.schema import FieldInfo
    from sandbox.salesforce.soql_eval import QueryResult

MAX_OFFSET = 2000


class SoqlError(Exception):
    """A query Salesforce refuses; `error_code` is what the REST API puts in `errorCode` (HTTP 400)."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message


class RecordSource(Protocol):
    """What the SOQL engine needs from an org. Names may arrive in any case; results use canonical casing."""

    def object_names(self) -> list[str]: ...

    def describe_fields(self, sobject: str) -> dict[str, FieldInfo] | None: ...

    def records(self, sobject: str, include_deleted: bool = False) -> Iterable[dict[str, Any]]: ...

    def get(self, record_id: str) -> tuple[str, dict[str, Any]] | None: ...


# --------------------------------------------------------------------------------------------------------------
# AST


@dataclass(frozen=True)
class Pos:
    """1-based row/column of a token, for Salesforce's `ERROR at Row:r:Column:c` messages."""

    line: int
    column: int


@dataclass(frozen=True)
class FieldRef:
    path: tuple[str, ...]
    pos: Pos

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Literal:
    """A filter value. kind: string | number | date | datetime | null | boolean | relative.

    `value` holds: the decoded str (string), the raw escaped body (`raw`, LIKE needs it to tell `\\%` from `%`),
    int/float (number), date (date), aware datetime (datetime), bool (boolean), None (null), and for relative
    date literals the pair (NAME upper-cased, n or None).
    """

    kind: str
    value: Any
    text: str
    pos: Pos
    raw: str = ""


@dataclass(frozen=True)
class Comparison:
    """`op` is one of = != < <= > >= in notin like; `values` has one literal except for IN lists."""

    field: FieldRef
    op: str
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    part: Condition


Condition = Comparison | BoolOp | Not


@dataclass(frozen=True)
class CountExpr:
    """`COUNT()` (field None: the row count is totalSize) or `COUNT(field)` (an AggregateResult row)."""

    field: FieldRef | None
    pos: Pos


@dataclass(frozen=True)
class OrderItem:
    field: FieldRef
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class SoqlQuery:
    text: str
    select: tuple[FieldRef | CountExpr, ...]
    sobject: str
    sobject_pos: Pos
    where: Condition | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None
    offset: int | None = None
    lock: str | None = None  # FOR UPDATE / VIEW / REFERENCE: accepted, no effect in the sandbox
    fields: tuple[FieldRef, ...] = field(default=(), repr=False)  # plain select fields, in order

    @property
    def count_only(self) -> bool:
        """`SELECT COUNT() FROM ...`: the answer is totalSize alone, with no records."""
        return any(isinstance(s, CountExpr) and s.field is None for s in self.select)


# --------------------------------------------------------------------------------------------------------------
# Messages


def error_at(text: str, pos: Pos, message: str) -> str:
    """Salesforce's caret message: the offending line (a window of it when long), a caret, row/column, reason.

    e.g. "\\nSELECT Foo FROM User\\n       ^\\nERROR at Row:1:Column:8\\nNo such column 'Foo' ..."
    """
    lines = text.split("\n")
    row = min(max(pos.line, 1), len(lines))
    src = lines[row - 1]
    col = max(pos.column, 1)
    start = 0
    if col > 70:  # long lines: Salesforce shows a window that starts a few tokens before the error
        start = col - 1 - 40
        space = src.rfind(" ", 0, start + 1)
        start = space + 1 if space >= 0 else start
    snippet = src[start : start + 120].rstrip()
    caret = " " * (col - 1 - start) + "^"
    return f"\n{snippet}\n{caret}\nERROR at Row:{pos.line}:Column:{pos.column}\n{message}"


def malformed(text: str, pos: Pos, message: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", error_at(text, pos, message))


# --------------------------------------------------------------------------------------------------------------
# Parsing

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
#: relative date literals without `:n` (SOQL "Date Formats and Date Literals")
FIXED_DATE_LITERALS = frozenset(
    {
        "YESTERDAY", "TODAY", "TOMORROW", "LAST_WEEK", "THIS_WEEK", "NEXT_WEEK", "LAST_MONTH", "THIS_MONTH",
        "NEXT_MONTH", "LAST_90_DAYS", "NEXT_90_DAYS", "THIS_QUARTER", "LAST_QUARTER", "NEXT_QUARTER", "THIS_YEAR",
        "LAST_YEAR", "NEXT_YEAR",
    }
)
#: relative date literals that take `:n`
N_DATE_LITERALS = frozenset(
    {
        "LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO", "LAST_N_WEEKS", "NEXT_N_WEEKS", "N_WEEKS_AGO", "LAST_N_MONTHS",
        "NEXT_N_MONTHS", "N_MONTHS_AGO", "LAST_N_YEARS", "NEXT_N_YEARS", "N_YEARS_AGO",
    }
)


def decode_string(body: str, text: str, pos: Pos) -> str:
    """Undo SOQL escapes (`\\'`, `\\\\`, `\\n`, `\\uXXXX`). `\\%`/`\\_` stay escaped: only LIKE uses them."""
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "%_":
            out.append("\\" + nxt)
            i += 2
        elif nxt == "u" and len(body) >= i + 6:
            try:
                out.append(chr(int(body[i + 2 : i + 6], 16)))
            except ValueError:
                raise malformed(text, pos, f"Invalid string literal '{body}'. Illegal character sequence "
                                           f"'\\{body[i + 1:i + 6]}' in string literal.") from None
            i += 6
        else:
            raise malformed(text, pos, f"Invalid string literal '{body}'. Illegal character sequence '\\{nxt}' in "
                                       "string literal.")
    return "".join(out)


def _pos(tok: Token) -> Pos:
    return Pos(tok.line or 1, tok.column or 1)


def _parse_datetime(s: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(s.upper().replace("Z", "+00:00"))
    return value.astimezone(dt.UTC)


class _ToAst(Transformer):
    """Parse tree -> AST. Holds the text so literal errors can point into it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    # fields -------------------------------------------------------------------------------------------------
    def field_path(self, names: list[Token]) -> FieldRef:
        return FieldRef(tuple(str(n) for n in names), _pos(names[0]))

    def count_expr(self, items: list[Any]) -> CountExpr:
        kw = items[0]
        return CountExpr(items[1] if len(items) > 1 else None, _pos(kw))

    def select_clause(self, items: list[Any]) -> tuple[Any, ...]:
        return tuple(items[1:])

    def from_clause(self, items: list[Token]) -> tuple[str, Pos]:
        return str(items[1]), _pos(items[1])

    # literals -----------------------------------------------------------------------------------------------
    def string(self, items: list[Token]) -> Literal:
        tok = items[0]
        body = str(tok)[1:-1]
        return Literal("string", decode_string(body, self.text, _pos(tok)), str(tok), _pos(tok), raw=body)

    def number(self, items: list[Token]) -> Literal:
        tok = items[0]
        s = str(tok)
        value: int | float = float(s) if ("." in s) else int(s)
        return Literal("number", value, s, _pos(tok))

    def date(self, items: list[Token]) -> Literal:
        tok = items[0]
        try:
            value = dt.date.fromisoformat(str(tok))
        except ValueError:
            pos = _pos(tok)
            raise malformed(self.text, pos, f"line {pos.line}:{pos.column - 1} no viable alternative at "
                                            f"character '{str(tok)}'") from None
        return Literal("date", value, str(tok), _pos(tok))

    def datetime(self, items: list[Token]) -> Literal:
        tok = items[0]
        try:
            value = _parse_datetime(str(tok))
        except ValueError:
            pos = _pos(tok)
            raise malformed(self.text, pos, f"line {pos.line}:{pos.column - 1} no viable alternative at "
                                            f"character '{str(tok)}'") from None
        return Literal("datetime", value, str(tok), _pos(tok))

    def null(self, items: list[Token]) -> Literal:
        return Literal("null", None, str(items[0]), _pos(items[0]))

    def true(self, items: list[Token]) -> Literal:
        return Literal("boolean", True, str(items[0]), _pos(items[0]))

    def false(self, items: list[Token]) -> Literal:
        return Literal("boolean", False, str(items[0]), _pos(items[0]))

    def date_literal(self, items: list[Token]) -> Literal:
        name = items[0]
        upper = str(name).upper()
        n = int(items[1]) if len(items) > 1 else None
        text = str(name) if n is None else f"{name}:{n}"
        if upper in FIXED_DATE_LITERALS and n is None or upper in N_DATE_LITERALS and n is not None:
            return Literal("relative", (upper, n), text, _pos(name))
        if upper in N_DATE_LITERALS:
            raise malformed(self.text, _pos(name), f"unexpected token: '{name}'")
        raise malformed(self.text, _pos(name), f"unexpected token: '{text}'")

    # conditions ---------------------------------------------------------------------------------------------
    def compare(self, items: list[Any]) -> Comparison:
        op = str(items[1])
        return Comparison(items[0], "!=" if op == "<>" else op, (items[2],))

    def in_list(self, items: list[Any]) -> Comparison:
        return Comparison(items[0], "in", tuple(i for i in items[2:] if isinstance(i, Literal)))

    def not_in_list(self, items: list[Any]) -> Comparison:
        return Comparison(items[0], "notin", tuple(i for i in items[3:] if isinstance(i, Literal)))

    def like(self, items: list[Any]) -> Comparison:
        return Comparison(items[0], "like", (items[2],))

    def and_chain(self, items: list[Any]) -> BoolOp:
        return BoolOp("and", tuple(i for i in items if not isinstance(i, Token)))

    def or_chain(self, items: list[Any]) -> BoolOp:
        return BoolOp("or", tuple(i for i in items if not isinstance(i, Token)))

    def not_cond(self, items: list[Any]) -> Not:
        return Not(items[1])

    def where_clause(self, items: list[Any]) -> tuple[str, Condition]:
        return "where", items[1]

    # tail clauses -------------------------------------------------------------------------------------------
    def order_item(self, items: list[Any]) -> OrderItem:
        ref: FieldRef = items[0]
        descending = False
        nulls_last: bool | None = None
        for item in items[1:]:
            if item.data == "direction":
                descending = str(item.children[0]).upper() == "DESC"
            else:
                nulls_last = str(item.children[1]).upper() == "LAST"
        # Salesforce's defaults: ASC puts nulls first, DESC puts them last
        return OrderItem(ref, descending, descending if nulls_last is None else nulls_last)

    def order_clause(self, items: list[Any]) -> tuple[str, tuple[OrderItem, ...]]:
        return "order", tuple(i for i in items if isinstance(i, OrderItem))

    def limit_clause(self, items: list[Token]) -> tuple[str, int]:
        return "limit", int(items[1])

    def offset_clause(self, items: list[Token]) -> tuple[str, Any]:
        return "offset", (int(items[1]), _pos(items[1]))

    def for_clause(self, items: list[Token]) -> tuple[str, str]:
        return "for", str(items[1]).upper()

    def start(self, items: list[Any]) -> SoqlQuery:
        select, (sobject, sobject_pos) = items[0], items[1]
        clauses = dict(items[2:])
        offset = None
        if "offset" in clauses:
            offset, opos = clauses["offset"]
            if offset > MAX_OFFSET:
                raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", error_at(
                    self.text, opos, f"Maximum SOQL offset allowed is {MAX_OFFSET}"))
        return SoqlQuery(
            text=self.text,
            select=select,
            sobject=sobject,
            sobject_pos=sobject_pos,
            where=clauses.get("where"),
            order_by=clauses.get("order", ()),
            limit=clauses.get("limit"),
            offset=offset,
            lock=clauses.get("for"),
            fields=tuple(s for s in select if isinstance(s, FieldRef)),
        )


_parse_lock = threading.Lock()


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = Path(__file__).with_name("soql.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=False, cache=False)


def _end_pos(text: str) -> Pos:
    lines = text.split("\n")
    return Pos(len(lines), len(lines[-1]) + 1)


def _syntax_error(text: str, exc: UnexpectedInput) -> SoqlError:
    """Lark's error -> Salesforce's `unexpected token: 'X'` at the token's row/column (`<EOF>` at the end)."""
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            return malformed(text, _end_pos(text), "unexpected token: <EOF>")
        return malformed(text, _pos(tok), f"unexpected token: '{tok}'")
    if isinstance(exc, UnexpectedCharacters):
        pos = Pos(exc.line, exc.column)
        rest = text.split("\n")[exc.line - 1][exc.column - 1 :]
        word = rest.split()[0] if rest.split() else rest
        if word.startswith('"'):
            # a double-quoted string: Salesforce only accepts single quotes
            return malformed(text, pos, f"unexpected token: '{word}'")
        return malformed(text, pos, f"unexpected token: '{word[:40]}'")
    if isinstance(exc, UnexpectedEOF):
        return malformed(text, _end_pos(text), "unexpected token: <EOF>")
    return malformed(text, Pos(1, 1), "unexpected token")


@lru_cache(maxsize=512)
def parse(text: str) -> SoqlQuery:
    """Parse one SOQL statement; syntax errors raise `SoqlError` (MALFORMED_QUERY) like Salesforce's parser.

    Cached: the worker repeats the same handful of query shapes, and SoqlQuery is immutable.
    """
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "A query string has to be specified")
    try:
        with _parse_lock:  # routes run in a threadpool; one shared LALR parser, parsing takes microseconds
            tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    try:
        return _ToAst(text).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, SoqlError):
            raise exc.orig_exc from None
        raise


def execute(
    query: SoqlQuery | str,
    source: RecordSource,
    *,
    include_deleted: bool = False,
    now: dt.datetime | None = None,
) -> QueryResult:
    """Run a parsed (or raw) query against `source`: bind names, filter once, order, slice (see `soql_eval`).

    `now` anchors relative date literals (TODAY, LAST_N_DAYS:n); pass the sandbox clock so advancing it moves them.
    """
    from sandbox.salesforce import soql_eval

    if isinstance(query, str):
        query = parse(query)
    return soql_eval.execute(query, source, include_deleted=include_deleted, now=now)


def __getattr__(name: str) -> Any:
    """`QueryResult` lives in soql_eval (which imports this module); re-exported lazily to avoid an import cycle."""
    if name == "QueryResult":
        from sandbox.salesforce.soql_eval import QueryResult

        return QueryResult
    raise AttributeError(name)
