"""Binding and evaluation of a parsed SOQL query against a `RecordSource`.

Design, driven by the 100,000-row `query_all` the product runs through simple-salesforce:
- names are bound once (object, fields, relationship paths via `relationship_name`/`reference_to`), and every
  WHERE node is compiled to a closure with its literal already normalised (lower-cased strings, 15-char ids,
  date ranges), so a row costs a few dict lookups and comparisons: no per-row parsing or regex compilation;
- the WHERE runs once per query; `QueryResult.rows` keeps references to the matched records (no copies) and
  `QueryResult.page()` renders Salesforce JSON for one page at a time, so later pages cost only their own rows;
- parent records for relationship fields are fetched through `source.get` with a per-query cache.

Semantics follow Salesforce where clients can tell: `!=`/`NOT IN` match null fields, `=` on text is
case-insensitive (unless the field is case-sensitive), ids compare on their 15-character case-sensitive prefix,
ASC sorts nulls first and DESC nulls last, LIKE is case-insensitive with `%`/`_` wildcards and `\\%`/`\\_` escapes.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sandbox.salesforce.soql import (
    BoolOp,
    Comparison,
    Condition,
    CountExpr,
    FieldRef,
    Literal,
    Not,
    Pos,
    RecordSource,
    SoqlError,
    SoqlQuery,
    error_at,
)

STRING_TYPES = frozenset({"string", "email", "picklist", "textarea", "phone", "url", "combobox", "multipicklist",
                          "encryptedstring", "address"})
ID_TYPES = frozenset({"id", "reference"})
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})
DATE_TYPES = frozenset({"date", "datetime"})

_NO_COLUMN = ("No such column '{name}' on entity '{entity}'. If you are attempting to use a custom field, be sure to "
              "append the '__c' after the custom field name. Please reference your WSDL or the describe call for the "
              "appropriate names.")
_NO_RELATIONSHIP = ("Didn't understand relationship '{name}' in field path. If you are attempting to use a custom "
                    "relationship, be sure to append the '__r' after the custom relationship name. Please reference "
                    "your WSDL or the describe call for the appropriate names.")
_NO_TYPE = ("sObject type '{name}' is not supported. If you are attempting to use a custom object, be sure to append "
            "the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate "
            "names.")
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_ONE_DAY = dt.timedelta(days=1)
_ONE_TICK = dt.timedelta(microseconds=1)

Row = dict[str, Any]
Getter = Callable[[Row], Any]
Predicate = Callable[[Row], bool]


@dataclass(frozen=True)
class Hop:
    """One step through a lookup: `relationship` is the canonical name used in results, `fk` the id field."""

    relationship: str
    fk: str


@dataclass(frozen=True)
class BoundField:
    ref: FieldRef
    hops: tuple[Hop, ...]
    name: str  # canonical name of the final field
    info: Any  # FieldInfo

    @property
    def type(self) -> str:
        return self.info.type

    @property
    def canonical_path(self) -> str:
        return ".".join([h.relationship for h in self.hops] + [self.name])


# --------------------------------------------------------------------------------------------------------------
# Value normalisation


def to_datetime(value: Any) -> dt.datetime | None:
    """A date/datetime field value (object or Salesforce/ISO string) as an aware UTC datetime; dates at midnight."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    text = str(value)
    if len(text) == 10:
        d = dt.date.fromisoformat(text)
        return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _lower(value: Any) -> Any:
    return None if value is None else str(value).lower()


def _exact(value: Any) -> Any:
    return None if value is None else str(value)


def _id15(value: Any) -> Any:
    return None if value is None or value == "" else str(value)[:15]


def _number(value: Any) -> Any:
    if value is None or isinstance(value, (int, float)):
        return value
    return float(value)


def _boolean(value: Any) -> Any:
    return None if value is None else bool(value)


def normaliser(info: Any) -> Callable[[Any], Any]:
    """How a field's stored value is made comparable with a normalised literal (and sortable)."""
    ftype = info.type
    if ftype in ID_TYPES:
        return _id15
    if ftype == "boolean":
        return _boolean
    if ftype in NUMBER_TYPES:
        return _number
    if ftype in DATE_TYPES:
        return to_datetime
    return _exact if getattr(info, "case_sensitive", False) else _lower


def formatter(info: Any) -> Callable[[Any], Any]:
    """How a stored value is written in query results: JSON booleans/numbers, `YYYY-MM-DD`, `...T..:..:...000+0000`."""
    ftype = info.type
    if ftype == "datetime":
        return format_datetime
    if ftype == "date":
        return format_date
    if ftype == "boolean":
        return _boolean
    if ftype == "int":
        return lambda v: None if v is None else int(v)
    if ftype in NUMBER_TYPES:
        return lambda v: v if v is None or isinstance(v, (int, float)) else float(v)
    return _identity


def _identity(value: Any) -> Any:
    return value


def format_datetime(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and len(value) == 28 and value.endswith("+0000"):
        return value  # already in Salesforce's shape
    d = to_datetime(value)
    assert d is not None
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+0000"


def format_date(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


# --------------------------------------------------------------------------------------------------------------
# Relative date literals


def _add_months(d: dt.date, months: int) -> dt.date:
    index = d.year * 12 + (d.month - 1) + months
    return dt.date(index // 12, index % 12 + 1, 1)


def relative_range(name: str, n: int | None, now: dt.datetime) -> tuple[dt.date, dt.date]:
    """[start, end) dates of a relative date literal, in UTC (the sandbox's one user time zone); weeks start Sunday."""
    today = now.astimezone(dt.UTC).date()
    k = n or 0
    day = dt.timedelta(days=1)
    week_start = today - dt.timedelta(days=(today.weekday() + 1) % 7)
    month_start = today.replace(day=1)
    quarter_start = dt.date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
    year = today.year
    table: dict[str, tuple[dt.date, dt.date]] = {}
    if name in ("TODAY", "YESTERDAY", "TOMORROW"):
        offset = {"TODAY": 0, "YESTERDAY": -1, "TOMORROW": 1}[name]
        return today + offset * day, today + (offset + 1) * day
    table = {
        "THIS_WEEK": (week_start, week_start + 7 * day),
        "LAST_WEEK": (week_start - 7 * day, week_start),
        "NEXT_WEEK": (week_start + 7 * day, week_start + 14 * day),
        "THIS_MONTH": (month_start, _add_months(month_start, 1)),
        "LAST_MONTH": (_add_months(month_start, -1), month_start),
        "NEXT_MONTH": (_add_months(month_start, 1), _add_months(month_start, 2)),
        "THIS_QUARTER": (quarter_start, _add_months(quarter_start, 3)),
        "LAST_QUARTER": (_add_months(quarter_start, -3), quarter_start),
        "NEXT_QUARTER": (_add_months(quarter_start, 3), _add_months(quarter_start, 6)),
        "THIS_YEAR": (dt.date(year, 1, 1), dt.date(year + 1, 1, 1)),
        "LAST_YEAR": (dt.date(year - 1, 1, 1), dt.date(year, 1, 1)),
        "NEXT_YEAR": (dt.date(year + 1, 1, 1), dt.date(year + 2, 1, 1)),
        # "includes the current day": 91 days in all
        "LAST_90_DAYS": (today - 90 * day, today + day),
        "NEXT_90_DAYS": (today + day, today + 91 * day),
        "LAST_N_DAYS": (today - k * day, today + day),
        "NEXT_N_DAYS": (today + day, today + (k + 1) * day),
        "N_DAYS_AGO": (today - k * day, today - (k - 1) * day),
        "LAST_N_WEEKS": (week_start - 7 * k * day, week_start),
        "NEXT_N_WEEKS": (week_start + 7 * day, week_start + 7 * (k + 1) * day),
        "N_WEEKS_AGO": (week_start - 7 * k * day, week_start - 7 * (k - 1) * day),
        "LAST_N_MONTHS": (_add_months(month_start, -k), month_start),
        "NEXT_N_MONTHS": (_add_months(month_start, 1), _add_months(month_start, k + 1)),
        "N_MONTHS_AGO": (_add_months(month_start, -k), _add_months(month_start, -k + 1)),
        "LAST_N_YEARS": (dt.date(year - k, 1, 1), dt.date(year, 1, 1)),
        "NEXT_N_YEARS": (dt.date(year + 1, 1, 1), dt.date(year + k + 1, 1, 1)),
        "N_YEARS_AGO": (dt.date(year - k, 1, 1), dt.date(year - k + 1, 1, 1)),
    }
    return table[name]


def _midnight(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)


# --------------------------------------------------------------------------------------------------------------
# Binding


class Binder:
    """Resolves names case-insensitively against the source's describe, once per query."""

    def __init__(self, source: RecordSource, text: str) -> None:
        self.source = source
        self.text = text
        self._objects = {name.lower(): name for name in source.object_names()}
        self._fields: dict[str, dict[str, Any]] = {}

    def object(self, name: str, pos: Pos) -> str:
        canonical = self._objects.get(name.lower())
        if canonical is None or self.fields(canonical) is None:
            raise SoqlError("INVALID_TYPE", error_at(self.text, pos, _NO_TYPE.format(name=name)))
        return canonical

    def fields(self, sobject: str) -> dict[str, Any] | None:
        if sobject not in self._fields:
            described = self.source.describe_fields(sobject)
            if described is None:
                return None
            self._fields[sobject] = {k.lower(): v for k, v in described.items()}
        return self._fields[sobject]

    def bind(self, sobject: str, ref: FieldRef) -> BoundField:
        targets = [sobject]
        hops: list[Hop] = []
        for segment in ref.path[:-1]:
            rel = self._relationship(targets, segment)
            if rel is None:
                raise SoqlError("INVALID_FIELD", error_at(self.text, ref.pos, _NO_RELATIONSHIP.format(name=segment)))
            hops.append(Hop(rel.relationship_name, rel.name))
            targets = [t for t in rel.reference_to if self.fields(t) is not None]
        last = ref.path[-1]
        for target in targets:
            info = (self.fields(target) or {}).get(last.lower())
            if info is not None:
                return BoundField(ref, tuple(hops), info.name, info)
        # a polymorphic lookup (Owner of a queueable object) resolves to Salesforce's pseudo-entity 'Name'
        entity = targets[0] if len(targets) == 1 else "Name"
        raise SoqlError("INVALID_FIELD", error_at(self.text, ref.pos, _NO_COLUMN.format(name=last, entity=entity)))

    def _relationship(self, targets: list[str], segment: str) -> Any:
        wanted = segment.lower()
        for target in targets:
            for info in (self.fields(target) or {}).values():
                if info.relationship_name and info.relationship_name.lower() == wanted and info.reference_to:
                    return info
        return None


class _ParentCache:
    """`source.get` memoised for one query: thousands of rows share a handful of profiles/permission sets."""

    def __init__(self, source: RecordSource) -> None:
        self.source = source
        self.cache: dict[str, tuple[str, Row] | None] = {}

    def __call__(self, record_id: Any) -> tuple[str, Row] | None:
        if record_id is None or record_id == "":
            return None
        try:
            return self.cache[record_id]
        except KeyError:
            found = self.source.get(record_id)
            self.cache[record_id] = found
            return found


def make_getter(bound: BoundField, parents: _ParentCache) -> Getter:
    name = bound.name
    if not bound.hops:
        return operator.methodcaller("get", name)
    fks = [h.fk for h in bound.hops]

    def get(row: Row) -> Any:
        current = row
        for fk in fks:
            parent = parents(current.get(fk))
            if parent is None:
                return None
            current = parent[1]
        return current.get(name)

    return get


# --------------------------------------------------------------------------------------------------------------
# WHERE compilation


class _Compiler:
    def __init__(self, binder: Binder, sobject: str, parents: _ParentCache, now: dt.datetime) -> None:
        self.binder = binder
        self.sobject = sobject
        self.parents = parents
        self.now = now
        self.text = binder.text

    def compile(self, cond: Condition) -> Predicate:
        if isinstance(cond, BoolOp):
            parts = [self.compile(p) for p in cond.parts]
            if cond.op == "and":
                return lambda row: all(p(row) for p in parts)
            return lambda row: any(p(row) for p in parts)
        if isinstance(cond, Not):
            inner = self.compile(cond.part)
            return lambda row: not inner(row)
        return self.comparison(cond)

    # literal checks ------------------------------------------------------------------------------------------
    def _type_error(self, bound: BoundField, lit: Literal) -> SoqlError:
        ftype = bound.type
        if ftype in ID_TYPES:
            wanted, quoted = "id", True
        elif ftype == "boolean":
            wanted, quoted = "boolean", False
        elif ftype == "int":
            wanted, quoted = "integer", False
        elif ftype in NUMBER_TYPES:
            wanted, quoted = "double", False
        elif ftype == "date":
            wanted, quoted = "date", False
        elif ftype == "datetime":
            wanted, quoted = "dateTime", False
        else:
            wanted, quoted = "string", True
        how = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
        message = f"value of filter criterion for field '{bound.name}' must be of type {wanted} and {how}"
        return SoqlError("INVALID_FIELD", error_at(self.text, lit.pos, message))

    def literal(self, bound: BoundField, lit: Literal) -> Any:
        """Check `lit` fits the field's type and return it normalised like the field's values.

        Date-typed fields get a [lo, hi) datetime range: a date literal is its whole day, a datetime literal a
        one-microsecond range, a relative literal its span; so every comparison operator is a range test.
        """
        if lit.kind == "null":
            return None
        ftype = bound.type
        if ftype in ID_TYPES:
            if lit.kind != "string":
                raise self._type_error(bound, lit)
            if lit.value == "":
                return None
            if not _ID_RE.match(lit.value):
                raise SoqlError("INVALID_QUERY_FILTER_OPERATOR",
                                error_at(self.text, bound.ref.pos, f"invalid ID field: {lit.value}"))
            return lit.value[:15]
        if ftype == "boolean":
            if lit.kind != "boolean":
                raise self._type_error(bound, lit)
            return lit.value
        if ftype in NUMBER_TYPES:
            if lit.kind != "number" or (ftype == "int" and isinstance(lit.value, float)):
                raise self._type_error(bound, lit)
            return lit.value
        if ftype == "date":
            if lit.kind == "date":
                return _midnight(lit.value), _midnight(lit.value) + _ONE_DAY
            if lit.kind == "relative":
                name, n = lit.value
                lo, hi = relative_range(name, n, self.now)
                return _midnight(lo), _midnight(hi)
            raise self._type_error(bound, lit)
        if ftype == "datetime":
            if lit.kind == "datetime":
                return lit.value, lit.value + _ONE_TICK
            if lit.kind == "relative":
                name, n = lit.value
                lo, hi = relative_range(name, n, self.now)
                return _midnight(lo), _midnight(hi)
            raise self._type_error(bound, lit)
        if lit.kind != "string":
            raise self._type_error(bound, lit)
        value = lit.value.replace("\\%", "%").replace("\\_", "_")
        return value if getattr(bound.info, "case_sensitive", False) else value.lower()

    # comparisons ---------------------------------------------------------------------------------------------
    def comparison(self, cmp: Comparison) -> Predicate:
        bound = self.binder.bind(self.sobject, cmp.field)
        get = make_getter(bound, self.parents)
        norm = normaliser(bound.info)
        ftype = bound.type
        op = cmp.op
        if op == "like":
            return self._like(bound, get, cmp.values[0])
        if op in ("<", "<=", ">", ">=") and ftype == "boolean":
            raise SoqlError("INVALID_FIELD", error_at(self.text, cmp.field.pos,
                                                      f"invalid operator on boolean field '{bound.name}'"))
        values = [self.literal(bound, lit) for lit in cmp.values]
        ranged = ftype in DATE_TYPES
        if op in ("in", "notin"):
            include_null = any(v is None for v in values)
            present = [v for v in values if v is not None]
            if ranged:

                def member(row: Row) -> bool:
                    v = norm(get(row))
                    if v is None:
                        return include_null
                    return any(lo <= v < hi for lo, hi in present)

            else:
                wanted = frozenset(present)

                def member(row: Row) -> bool:
                    v = norm(get(row))
                    return include_null if v is None else v in wanted

            if op == "in":
                return member
            return lambda row: not member(row)
        lit = values[0]
        if lit is None:
            if op == "=":
                return lambda row: get(row) in (None, "")
            if op == "!=":
                return lambda row: get(row) not in (None, "")
            return lambda row: False
        if ranged:
            lo, hi = lit
            tests: dict[str, Callable[[Any], bool]] = {
                "=": lambda v: lo <= v < hi,
                "!=": lambda v: not lo <= v < hi,
                "<": lambda v: v < lo,
                "<=": lambda v: v < hi,
                ">": lambda v: v >= hi,
                ">=": lambda v: v >= lo,
            }
            test = tests[op]
            if op == "!=":
                return lambda row: (v := norm(get(row))) is None or test(v)
            return lambda row: (v := norm(get(row))) is not None and test(v)
        if op == "=":
            return lambda row: norm(get(row)) == lit
        if op == "!=":
            return lambda row: norm(get(row)) != lit  # a null field is "not equal": Salesforce includes it
        compare = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]
        return lambda row: (v := norm(get(row))) is not None and compare(v, lit)

    def _like(self, bound: BoundField, get: Getter, lit: Literal) -> Predicate:
        if bound.type not in STRING_TYPES:
            raise SoqlError("INVALID_FIELD", error_at(self.text, bound.ref.pos,
                                                      f"invalid operator on field '{bound.name}': LIKE is only "
                                                      "valid on string fields"))
        if lit.kind == "null":
            return lambda row: False
        if lit.kind != "string":
            raise self._type_error(bound, lit)
        match = like_matcher(lit.value)
        return lambda row: (v := get(row)) is not None and match(str(v).lower())


def like_matcher(pattern: str) -> Callable[[str], bool]:
    """Compile a LIKE pattern (already unescaped except `\\%`/`\\_`) for lower-cased values.

    The common shapes (`abc`, `abc%`, `%abc`, `%abc%`) become str methods; anything else one compiled regex.
    """
    pieces: list[tuple[str, str]] = []  # ("lit", text) | ("any", "") | ("one", "")
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            pieces.append(("lit", pattern[i + 1]))
            i += 2
            continue
        pieces.append(("any", "") if ch == "%" else ("one", "") if ch == "_" else ("lit", ch))
        i += 1
    kinds = [k for k, _ in pieces]
    if "one" not in kinds:
        inner = kinds[1:-1] if len(kinds) > 1 else []
        text = "".join(t for _, t in pieces).lower()
        if "any" not in kinds:
            return text.__eq__
        if "any" not in inner:
            starts, ends = kinds[0] == "any", kinds[-1] == "any"
            if starts and ends:
                return lambda v: text in v
            if ends:
                return lambda v: v.startswith(text)
            if starts:
                return lambda v: v.endswith(text)
    regex = "".join(".*" if k == "any" else "." if k == "one" else re.escape(t.lower()) for k, t in pieces)
    compiled = re.compile(regex, re.DOTALL)
    return lambda v: compiled.fullmatch(v) is not None


# --------------------------------------------------------------------------------------------------------------
# Rendering and results


@dataclass
class _Node:
    """Part of the result shape: fields of one record plus nested parents, in SELECT order."""

    entries: list[tuple[str, str, Any]] = field(default_factory=list)  # ("field", name, fmt) | ("rel", name, Hop)
    children: dict[str, _Node] = field(default_factory=dict)


def _shape(bound_fields: Iterable[BoundField]) -> _Node:
    root = _Node()
    for bound in bound_fields:
        node = root
        for hop in bound.hops:
            child = node.children.get(hop.relationship)
            if child is None:
                child = _Node()
                node.children[hop.relationship] = child
                node.entries.append(("rel", hop.relationship, hop))
            node = child
        node.entries.append(("field", bound.name, formatter(bound.info)))
    return root


@dataclass
class QueryResult:
    """The answer to one query: matched rows (shared references, in order) rendered on demand per page.

    - `count_only`: `SELECT COUNT()`, `total_size` is the count and there are no records;
    - `aggregate`: `SELECT COUNT(field)` rows (AggregateResult records);
    - otherwise `rows` holds the matched records and `page(start, stop, version)` renders them.
    """

    sobject: str
    total_size: int
    rows: list[Row] = field(default_factory=list)
    count_only: bool = False
    aggregate: list[dict[str, Any]] | None = None
    shape: _Node | None = None
    parents: _ParentCache | None = None

    def page(self, start: int, stop: int, version: str) -> list[dict[str, Any]]:
        if self.aggregate is not None:
            return [dict(r) for r in self.aggregate[start:stop]]
        if self.count_only or self.shape is None:
            return []
        shape, sobject = self.shape, self.sobject
        return [self._render(row, sobject, shape, version) for row in self.rows[start:stop]]

    def records(self, version: str = "62.0") -> list[dict[str, Any]]:
        """Every record rendered (tests and small queries; routes page instead)."""
        return self.page(0, len(self.rows) if self.aggregate is None else len(self.aggregate), version)

    def _render(self, row: Row, sobject: str, node: _Node, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {"type": sobject, "url": f"/services/data/v{version}/sobjects/{sobject}/{row.get('Id')}"}
        }
        for kind, name, extra in node.entries:
            if kind == "field":
                out[name] = extra(row.get(name))
            else:
                assert self.parents is not None
                parent = self.parents(row.get(extra.fk))
                out[name] = None if parent is None else self._render(parent[1], parent[0], node.children[name],
                                                                     version)
        return out


def _sort(rows: list[Row], keys: list[tuple[Getter, Callable[[Any], Any], bool, bool]]) -> None:
    """Stable multi-key sort, least significant key first, honouring NULLS FIRST/LAST per key."""
    for get, norm, descending, nulls_last in reversed(keys):
        # with reverse=True the rank order flips, so pick the rank that lands nulls where asked
        null_rank = 1 if nulls_last != descending else 0

        def key(row: Row, get: Getter = get, norm: Callable[[Any], Any] = norm, null_rank: int = null_rank) -> Any:
            v = norm(get(row))
            return (null_rank,) if v is None else (1 - null_rank, v)

        rows.sort(key=key, reverse=descending)


def execute(
    query: SoqlQuery,
    source: RecordSource,
    *,
    include_deleted: bool = False,
    now: dt.datetime | None = None,
) -> QueryResult:
    """Bind, filter once, order and slice. Errors come out in Salesforce's order: object, SELECT, WHERE, ORDER BY."""
    now = now or dt.datetime.now(dt.UTC)
    binder = Binder(source, query.text)
    sobject = binder.object(query.sobject, query.sobject_pos)
    parents = _ParentCache(source)

    counts = [s for s in query.select if isinstance(s, CountExpr)]
    bound_select: list[BoundField] = []
    seen: set[str] = set()
    for item in query.select:
        if isinstance(item, CountExpr):
            if item.field is not None:
                binder.bind(sobject, item.field)
            continue
        bound = binder.bind(sobject, item)
        key = bound.canonical_path.lower()
        if key in seen:
            raise SoqlError("MALFORMED_QUERY", error_at(query.text, item.pos,
                                                        f"duplicate field selected: {bound.canonical_path}"))
        seen.add(key)
        bound_select.append(bound)
    if counts and bound_select:
        first = bound_select[0]
        if any(c.field is None for c in counts):
            raise SoqlError("MALFORMED_QUERY", error_at(query.text, first.ref.pos,
                                                        "COUNT() may only be used by itself in a SELECT list"))
        raise SoqlError("MALFORMED_QUERY", error_at(query.text, first.ref.pos,
                                                    f"Field must be grouped or aggregated: {first.name}"))
    if sum(1 for c in counts if c.field is None) and len(counts) > 1:
        raise SoqlError("MALFORMED_QUERY", error_at(query.text, counts[1].pos,
                                                    "COUNT() may only be used by itself in a SELECT list"))

    predicate = _Compiler(binder, sobject, parents, now).compile(query.where) if query.where is not None else None
    order_keys = []
    for order in query.order_by:
        bound = binder.bind(sobject, order.field)
        order_keys.append((make_getter(bound, parents), normaliser(bound.info), order.descending, order.nulls_last))

    candidates = source.records(sobject, include_deleted)
    rows = [r for r in candidates if predicate(r)] if predicate is not None else list(candidates)
    if order_keys:
        _sort(rows, order_keys)
    if query.offset:
        rows = rows[query.offset :]
    if query.limit is not None:
        rows = rows[: query.limit]

    if counts and counts[0].field is None:
        return QueryResult(sobject, len(rows), count_only=True)
    if counts:
        aggregate: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
        for index, count in enumerate(counts):
            assert count.field is not None
            get = make_getter(binder.bind(sobject, count.field), parents)
            aggregate[f"expr{index}"] = sum(1 for r in rows if get(r) is not None)
        return QueryResult(sobject, 1, aggregate=[aggregate])
    return QueryResult(sobject, len(rows), rows=rows, shape=_shape(bound_select), parents=parents)
