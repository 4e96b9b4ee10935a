"""Field values of Contacts and Accounts from a mapping section, checked against the object's describe.

Why the describe: a value longer than a Contact field (givenName holds 64 characters, Contact.FirstName 40) or a
field missing from the org would make Salesforce refuse the whole record; cut to length (unless `truncate: false`)
and a problem per field keeps the rest of the record flowing, exactly like the User attributes of the engine.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from shared.engine.catalog import FieldMeta
from shared.mapping.compiled import CompiledAttribute, compile_attribute
from shared.mapping.model import AttributeSpec, Mapping, OnEmpty

FieldMetas = AbcMapping[str, FieldMeta]


@dataclass(frozen=True)
class DesiredValues:
    """Field -> value (None: empty it) and the problems that kept a field out (field, message, mapping line)."""

    values: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    problems: tuple[tuple[str, str, str], ...] = ()


def compile_fields(mapping: Mapping, section: tuple[str, ...], specs: AbcMapping[str, AttributeSpec]
                   ) -> tuple[CompiledAttribute, ...]:
    """`section` is the mapping path of the field map, e.g. ("guests", "contact"), for the rule texts' lines."""
    return tuple(compile_attribute(name, spec, mapping.where((*section, name))) for name, spec in specs.items())


def desired_values(compiled: tuple[CompiledAttribute, ...], attrs: AbcMapping[str, Any], metas: FieldMetas,
                   object_name: str) -> DesiredValues:
    """The values of `compiled` for one subject; with `metas` empty (describe unknown) nothing is checked."""
    out = DesiredValues()
    problems: list[tuple[str, str, str]] = []
    for attribute in compiled:
        value = attribute.value(attrs)
        if value is None and attribute.on_empty is OnEmpty.KEEP:
            continue
        checked = check_value(attribute.field, value, metas, object_name, truncate=attribute.truncate)
        if isinstance(checked, Problem):
            problems.append((attribute.field, checked.message, attribute.where))
            continue
        out.values[attribute.field] = checked
        out.rules[attribute.field] = attribute.rule
    return DesiredValues(out.values, out.rules, tuple(problems))


@dataclass(frozen=True)
class Problem:
    message: str


def check_value(name: str, value: Any, metas: FieldMetas, object_name: str, *, truncate: bool = True) -> Any:
    """The value to write (cut to length), or a `Problem` saying why it cannot be written."""
    if not metas:
        return value
    meta = metas.get(name)
    if meta is None:
        return Problem(f"the org's {object_name} object has no field {name}")
    if isinstance(value, str):
        if meta.length and len(value) > meta.length:
            if not truncate:
                return Problem(f"{object_name}.{name} value has {len(value)} characters, the field holds "
                               f"{meta.length} (truncate is off)")
            value = value[: meta.length]
        if meta.restricted and meta.picklist_values is not None and value not in meta.picklist_values:
            return Problem(f"{object_name}.{name} value {value!r} is not in the field's restricted picklist")
    return value


def same_value(name: str, current: Any, wanted: Any) -> bool:
    """Salesforce returns what it stored: '' and None are both empty; Email compares without case."""
    if current in (None, "") and wanted in (None, ""):
        return True
    if isinstance(current, str) and isinstance(wanted, str) and name.lower().endswith("email"):
        return current.casefold() == wanted.casefold()
    return bool(current == wanted)


def changed_fields(record: AbcMapping[str, Any], wanted: AbcMapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in wanted.items() if not same_value(name, record.get(name), value)}


def metas_from_describe(describe: AbcMapping[str, Any]) -> dict[str, FieldMeta]:
    return {str(f["name"]): FieldMeta.from_describe(f) for f in describe.get("fields", []) if f.get("name")}
