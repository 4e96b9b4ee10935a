"""Attribute transforms: each a small pure function on a string, plus the registry the mapping file names them by.

Why a registry of plain functions: the mapping is read once and compiled into a list of ready callables per
attribute (regexes compiled, lookup tables case-folded), so planning 10,000 users never parses or compiles anything
again; and a new transform is one function and one registry line here, with its YAML shape next to it.

YAML shapes (a transform list is applied in order):
    transforms:
      - lower                      # bare name: no argument
      - strip_ext
      - {truncate: 20}
      - {regex_replace: {pattern: '^\\+1 ', replacement: ''}}
      - {lookup: {table: {US: United States}, default: Other}}

Templates, defaults and constants are not list steps but belong to the same family; they live here as well
(`Template`, `read_path`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator
from pydantic_core import PydanticCustomError

TransformFn = Callable[[str], str]

# ------------------------------------------------------------------------------------------------ the functions


def lower(value: str) -> str:
    return value.lower()


def upper(value: str) -> str:
    return value.upper()


def trim(value: str) -> str:
    """Graph keeps whatever an HR system typed, trailing blanks included; Salesforce would store them too."""
    return value.strip()


_EXT = re.compile("#EXT#", re.IGNORECASE)


def strip_ext(value: str) -> str:
    """A B2B guest's UPN back to their address: `jane_contoso.com#EXT#@tenant.onmicrosoft.com` -> `jane@contoso.com`.

    Entra builds a guest UPN from the invited address with its `@` replaced by `_`, then `#EXT#@` and the inviting
    tenant's domain, so the last `_` before `#EXT#` is the original `@`. Values without `#EXT#` pass unchanged.
    """
    match = _EXT.search(value)
    if match is None:
        return value
    head = value[: match.start()]
    local, underscore, domain = head.rpartition("_")
    return f"{local}@{domain}" if underscore and local and domain else head


def truncate(value: str, length: int) -> str:
    return value[:length]


def regex_replace(value: str, pattern: re.Pattern[str], replacement: str) -> str:
    return pattern.sub(replacement, value)


def lookup(value: str, table: Mapping[str, str], default: str | None, case_sensitive: bool) -> str:
    """A value found in `table` becomes its entry; any other becomes `default`, or stays as it is without one."""
    found = table.get(value if case_sensitive else value.casefold())
    if found is not None:
        return found
    return value if default is None else default


# ------------------------------------------------------------------------------------------------ YAML shapes


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegexReplaceArgs(_Step):
    pattern: str = Field(description="Python regular expression (re module syntax)")
    replacement: str = Field(default="", description="replacement; \\1 or \\g<name> refer to groups")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        return pattern


class LookupArgs(_Step):
    table: dict[str, str] = Field(description="Entra value -> Salesforce value")
    default: str | None = Field(default=None, description="for values not in the table; absent: keep the value")
    case_sensitive: bool = False


class TruncateStep(_Step):
    truncate: int = Field(gt=0, description="keep at most this many characters")


class RegexReplaceStep(_Step):
    regex_replace: RegexReplaceArgs


class LookupStep(_Step):
    lookup: LookupArgs


SimpleName = Literal["lower", "upper", "trim", "strip_ext"]

#: Transforms written as a bare name -> their function.
SIMPLE: dict[str, TransformFn] = {"lower": lower, "upper": upper, "trim": trim, "strip_ext": strip_ext}


def _build_truncate(step: TruncateStep) -> TransformFn:
    return partial(truncate, length=step.truncate)


def _build_regex_replace(step: RegexReplaceStep) -> TransformFn:
    return partial(regex_replace, pattern=re.compile(step.regex_replace.pattern),
                   replacement=step.regex_replace.replacement)


def _build_lookup(step: LookupStep) -> TransformFn:
    args = step.lookup
    table = dict(args.table) if args.case_sensitive else {k.casefold(): v for k, v in args.table.items()}
    return partial(lookup, table=table, default=args.default, case_sensitive=args.case_sensitive)


#: Transforms written as `{name: argument}` -> (their YAML model, the builder of their function).
WITH_ARGUMENT: dict[str, tuple[type[_Step], Callable[[Any], TransformFn]]] = {
    "truncate": (TruncateStep, _build_truncate),
    "regex_replace": (RegexReplaceStep, _build_regex_replace),
    "lookup": (LookupStep, _build_lookup),
}

KNOWN = sorted([*SIMPLE, *WITH_ARGUMENT])


def _step_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    if isinstance(value, _Step):
        return next(iter(type(value).model_fields))
    return None


def _known_step(value: Any) -> Any:
    """Reject an unknown transform with the closest known name, before the union reports one error per member."""
    name = _step_name(value)
    if name is None:
        raise PydanticCustomError(
            "transform_shape",
            "a transform is a name (like lower) or a one-key mapping (like truncate: 20), got a {got}",
            {"got": type(value).__name__},
        )
    if name not in SIMPLE and name not in WITH_ARGUMENT:
        close = difflib.get_close_matches(name, KNOWN, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known transforms: {', '.join(KNOWN)}"
        raise PydanticCustomError("unknown_transform", "unknown transform '{name}' ({hint})",
                                  {"name": name, "hint": hint})
    if isinstance(value, str) and name in WITH_ARGUMENT:
        raise PydanticCustomError("transform_argument", "transform '{name}' needs an argument, e.g. {example}",
                                  {"name": name, "example": _EXAMPLES[name]})
    return value


_EXAMPLES = {
    "truncate": "{truncate: 20}",
    "regex_replace": "{regex_replace: {pattern: '^x', replacement: ''}}",
    "lookup": "{lookup: {table: {US: United States}}}",
}


def _tag(value: Any) -> str | None:
    name = _step_name(value)
    return "simple" if isinstance(value, str) else name


TransformStep = Annotated[
    Annotated[SimpleName, Tag("simple")]
    | Annotated[TruncateStep, Tag("truncate")]
    | Annotated[RegexReplaceStep, Tag("regex_replace")]
    | Annotated[LookupStep, Tag("lookup")],
    Discriminator(_tag),
    BeforeValidator(_known_step),
]


def compile_step(step: str | _Step) -> TransformFn:
    if isinstance(step, str):
        return SIMPLE[step]
    name = next(iter(type(step).model_fields))
    return WITH_ARGUMENT[name][1](step)


def compile_pipeline(steps: Sequence[str | _Step]) -> TransformFn | None:
    """One callable for a list of steps (None for none), built once when the mapping loads."""
    fns = tuple(compile_step(s) for s in steps)
    if not fns:
        return None
    if len(fns) == 1:
        return fns[0]

    def run(value: str) -> str:
        for fn in fns:
            value = fn(value)
        return value

    return run


# ------------------------------------------------------------------------------------------------ values and paths

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def parse_path(path: str) -> tuple[str, ...]:
    """`employeeOrgData.costCenter` -> ('employeeOrgData', 'costCenter'); a list index is a number segment."""
    if not _PATH.match(path) or ".." in path or path.endswith("."):
        raise ValueError(f"'{path}' is not an attribute path like jobTitle or employeeOrgData.costCenter")
    return tuple(path.split("."))


def as_text(value: Any) -> str | None:
    """A Graph value as Salesforce text: lists give their first element (businessPhones), objects give nothing."""
    while isinstance(value, list):
        if not value:
            return None
        value = value[0]
    if value is None or isinstance(value, dict):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def read_path(attrs: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    """The text at `path` in a Graph user, or None when any step is missing or empty."""
    value: Any = attrs
    for segment in path:
        if isinstance(value, list):
            if segment.isdigit():
                index = int(segment)
                value = value[index] if index < len(value) else None
                continue
            value = value[0] if value else None
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
        if value is None:
            return None
    return as_text(value)


_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class Template:
    """`{givenName} {surname}`: placeholders are attribute paths; `{{` and `}}` are literal braces.

    A template whose placeholders are all empty renders as empty (not as its bare literals), so
    `{employeeOrgData.costCenter}-EU` for a user without a cost centre gives nothing rather than `-EU`, and the
    attribute's `default` and `on_empty` rules apply as for a plain source.
    """

    __slots__ = ("text", "parts", "paths")

    def __init__(self, text: str) -> None:
        parts: list[str | tuple[str, ...]] = []
        pos = 0
        for match in _TOKEN.finditer(text):
            if match.start() > pos:
                parts.append(text[pos : match.start()])
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            elif token in ("{", "}"):
                raise ValueError(f"unbalanced '{token}' in template '{text}' (write {token}{token} for a literal)")
            else:
                inner = (match.group(1) or "").strip()
                if not inner:
                    raise ValueError(f"empty placeholder {{}} in template '{text}'")
                parts.append(parse_path(inner))
            pos = match.end()
        if pos < len(text):
            parts.append(text[pos:])
        self.text = text
        self.parts = tuple(parts)
        self.paths = tuple(p for p in parts if isinstance(p, tuple))

    def render(self, attrs: Mapping[str, Any]) -> str | None:
        out: list[str] = []
        filled = False
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = read_path(attrs, part)
            if value:
                filled = True
                out.append(value)
        if self.paths and not filled:
            return None
        return "".join(out).strip() or None

    def __repr__(self) -> str:
        return f"Template({self.text!r})"
