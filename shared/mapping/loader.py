"""Reading a mapping file: YAML -> `Mapping`, or every problem as `file:line:col: message (fix: ...)`.

Why all problems at once and line-precise: an admin editing the file wants the full list in one run, each pointing
at the place to change, the way a compiler does; a running service reloading a bad edit keeps its last good mapping
and logs these same lines. Three passes, each reported with positions from the YAML node tree:
1. YAML syntax (indentation, quoting) and duplicate keys;
2. the pydantic model (unknown keys with the closest valid one, wrong types, unknown transforms);
3. rules across sections (`checks.semantic_problems`).
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from shared.mapping.checks import semantic_problems
from shared.mapping.model import Mapping
from shared.mapping.source import Path, SourceMap, build_source_map

try:  # the C loader is ~10x faster; positions are the same
    _Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

_UNION_TAGS = {"simple", "truncate", "regex_replace", "lookup"}


@dataclass(frozen=True)
class MappingProblem:
    """One problem in a mapping file; `str()` is the line `idsync mapping check` prints."""

    filename: str
    line: int
    column: int
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        text = f"{self.filename}:{self.line}:{self.column}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


class MappingError(Exception):
    """A mapping file that cannot be used; `problems` holds every problem found, in file order."""

    def __init__(self, problems: list[MappingProblem]) -> None:
        self.problems = problems
        first = str(problems[0]) if problems else "invalid mapping"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)


def load_mapping(path: str | FsPath) -> Mapping:
    """The mapping in `path`, or `MappingError` listing every problem (an unreadable file is one problem)."""
    fs_path = FsPath(path)
    try:
        text = fs_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise MappingError([MappingProblem(fs_path.name, 1, 1, f"cannot read the file: {reason}")]) from None
    return parse_mapping_text(text, fs_path.name)


def parse_mapping_text(text: str, filename: str) -> Mapping:
    mapping, problems = _parse(text, filename)
    if problems or mapping is None:
        raise MappingError(problems)
    return mapping


def check_mapping_text(text: str, filename: str) -> list[MappingProblem]:
    """Every problem in `text` (empty when the mapping is usable)."""
    return _parse(text, filename)[1]


def _parse(text: str, filename: str) -> tuple[Mapping | None, list[MappingProblem]]:
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        return None, [_syntax_problem(err, filename)]
    except yaml.YAMLError as err:  # pragma: no cover - every PyYAML parse error carries a mark
        return None, [MappingProblem(filename, 1, 1, f"not valid YAML: {err}")]
    source, duplicates = build_source_map(root, filename)
    problems = [
        MappingProblem(filename, d.line, d.column, f"{_dotted(d.path)}: duplicate key (first at line {d.first_line})",
                       "keep one of them: YAML would silently use the last")
        for d in duplicates
    ]
    if data is None:
        problems.append(MappingProblem(filename, 1, 1, "the mapping file is empty",
                                       "start from examples/mapping.yaml"))
        return None, problems
    if not isinstance(data, dict):
        line, column = source.locate(())
        problems.append(MappingProblem(filename, line, column, "the mapping must be a set of keys (scope:, "
                                       "attributes:, group_rules:, ...)", "start from examples/mapping.yaml"))
        return None, problems
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as err:
        problems.extend(_validation_problem(e, source) for e in err.errors())
        return None, _sorted(problems)
    for path, message, fix in semantic_problems(mapping):
        line, column = source.locate(path, prefer_key=True)
        problems.append(MappingProblem(filename, line, column, f"{_dotted(path)}: {message}", fix))
    if problems:
        return None, _sorted(problems)
    mapping.attach_source(source)
    return mapping, []


def _sorted(problems: list[MappingProblem]) -> list[MappingProblem]:
    return sorted(problems, key=lambda p: (p.line, p.column))


def _syntax_problem(err: yaml.MarkedYAMLError, filename: str) -> MappingProblem:
    mark = err.problem_mark or err.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = err.problem or "invalid YAML"
    context = f" {err.context}" if err.context else ""
    if any(hint in problem for hint in ("indent", "mapping values are not allowed", "expected <block end>",
                                        "could not find expected ':'", "did not find expected key")):
        fix = "check this line's indentation against the lines above (spaces only, same depth for siblings)"
    elif "tab" in problem:
        fix = "indent with spaces, not tabs"
    elif "quote" in problem or "scalar" in problem:
        fix = "close the quote, or quote values containing ': ' or '#'"
    else:
        fix = "check the YAML syntax around this line"
    return MappingProblem(filename, line, column, f"YAML syntax: {problem}{context}", fix)


# ------------------------------------------------------------------------------------------------ pydantic errors

_TYPE_WORDS = {
    "string_type": "text", "int_type": "a whole number", "int_parsing": "a whole number", "bool_type": "true or false",
    "bool_parsing": "true or false", "list_type": "a list", "dict_type": "a set of keys", "model_type": "a set of keys",
    "model_attributes_type": "a set of keys", "float_type": "a number", "float_parsing": "a number",
}


def _validation_problem(error: ErrorDetails, source: SourceMap) -> MappingProblem:
    loc = _clean_loc(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    fix: str | None = None
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(Mapping, loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1) if allowed else []
        message = f"unknown key '{key}'"
        if close:
            fix = f"did you mean '{close[0]}'?"
        elif allowed:
            fix = f"valid keys here: {', '.join(allowed)}"
        line, column = source.locate(loc, prefer_key=True)
        return MappingProblem(source.filename, line, column, f"{_dotted(loc[:-1]) or 'top level'}: {message}", fix)
    if kind == "missing":
        message = f"missing required key '{loc[-1]}'"
        fix = f"add {loc[-1]}:"
        line, column = source.locate(loc[:-1])
        return MappingProblem(source.filename, line, column, f"{_dotted(loc[:-1]) or 'top level'}: {message}", fix)
    if kind in _TYPE_WORDS:
        message = f"expected {_TYPE_WORDS[kind]}, got {_describe(error.get('input'))}"
        fix = f"write {_TYPE_WORDS[kind]} here"
    elif kind in ("literal_error", "enum"):
        message = f"'{error.get('input')}' is not allowed here"
        fix = f"use {ctx.get('expected', 'one of the listed values')}"
    elif kind == "unknown_transform":
        message = f"unknown transform '{ctx.get('name')}'"
        fix = str(ctx.get("hint"))
    elif kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
    else:
        message = str(error["msg"])
    line, column = source.locate(loc)
    return MappingProblem(source.filename, line, column, f"{_dotted(loc)}: {message}", fix)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"text '{value}'"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a set of keys"
    return repr(value)


def _clean_loc(loc: tuple[str | int, ...]) -> Path:
    """Drops the tags pydantic inserts for the transform union (`transforms.0.truncate.truncate`)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part in _UNION_TAGS and i > 0 and isinstance(loc[i - 1], int):
            continue
        out.append(part)
    return tuple(out)


def _dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _allowed_keys(tp: Any, loc: Path) -> list[str]:
    """The keys valid at `loc` in the model, for "did you mean" (walks models, lists, dicts and unions)."""
    found = _walk(tp, loc)
    return sorted(found) if found else []


def _walk(tp: Any, loc: Path) -> set[str] | None:
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _walk(get_args(tp)[0], loc)
    if origin is typing.Union or origin is types.UnionType:
        for arm in get_args(tp):  # union tags are already gone from `loc` (see _clean_loc)
            found = _walk(arm, loc)
            if found:
                return found
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        fields = {f.alias or name: f for name, f in tp.model_fields.items()}
        if not loc:
            return set(fields)
        head = loc[0]
        if not isinstance(head, str) or head not in fields:
            return None
        return _walk(fields[head].annotation, loc[1:])
    if not loc:
        return None
    if origin in (list, tuple) and isinstance(loc[0], int):
        return _walk(get_args(tp)[0], loc[1:])
    if origin is dict:
        return _walk(get_args(tp)[1], loc[1:])
    return None
