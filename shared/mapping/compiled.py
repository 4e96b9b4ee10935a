"""The mapping compiled once into what planning runs: templates parsed, regexes compiled, tables case-folded,
group names folded for set lookups, and every rule's human text (with its file line) written out.

Why: the engine plans 10,000 users in a benchmark and every sync event in production; none of that may parse a
template, compile a regex or format a rule description again. A `CompiledMapping` is immutable and shared.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.mapping.locales import BUILT_IN, COUNTRY_NAMES
from shared.mapping.model import AttributeSpec, LocaleValues, OnEmpty, ScopeFilter, parse_match_rule
from shared.mapping.transforms import Template, TransformFn, compile_pipeline, parse_path, read_path

if TYPE_CHECKING:
    from shared.mapping.model import Mapping


@dataclass(frozen=True, slots=True)
class CompiledAttribute:
    field: str
    source: tuple[str, ...] | None
    template: Template | None
    constant: Any
    has_constant: bool
    default: Template | None
    pipeline: TransformFn | None
    truncate: bool
    on_empty: OnEmpty
    rule: str
    where: str

    def value(self, attrs: AbcMapping[str, Any]) -> Any:
        """The value Entra gives this field now, or None when empty (the caller applies `on_empty`)."""
        if self.has_constant:
            return self.constant
        value = read_path(attrs, self.source) if self.source is not None else \
            self.template.render(attrs) if self.template is not None else None
        if not value and self.default is not None:
            value = self.default.render(attrs)
        if value and self.pipeline is not None:
            value = self.pipeline(value)
        return value or None


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    path: tuple[str, ...]
    test: Callable[[str | None], bool]
    text: str


@dataclass(frozen=True, slots=True)
class CompiledGroupRule:
    index: int
    group: str
    key: str
    precedence: int
    profile: str | None
    role: str | None
    permission_sets: tuple[str, ...]
    permission_set_groups: tuple[str, ...]
    permission_set_licenses: tuple[str, ...]
    public_groups: tuple[str, ...]
    queues: tuple[str, ...]
    text: str
    where: str


@dataclass(frozen=True, slots=True)
class CompiledMatchRule:
    fields: tuple[str, ...]
    text: str  # "Email AND EmployeeNumber"
    where: str


@dataclass(frozen=True, slots=True)
class LocaleChoice:
    time_zone: str
    locale: str
    language: str
    email_encoding: str
    origin: str


class CompiledMapping:
    """Read-only; built by `Mapping.compiled`."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        where = mapping.where
        self.attributes: tuple[CompiledAttribute, ...] = tuple(
            _compile_attribute(field, spec, where(("attributes", field))) for field, spec in mapping.attributes.items()
        )
        self.attribute_by_field = {a.field: a for a in self.attributes}

        # --- scope
        scope = mapping.scope
        self.scope_groups: tuple[tuple[str, str], ...] = tuple((g.casefold(), g) for g in scope.groups)
        self.scope_groups_where = where(("scope", "groups"))
        self.user_types = frozenset(t.casefold() for t in scope.user_types)
        self.user_types_where = where(("scope", "user_types"))
        self.filters = tuple(_compile_filter(f, where(("scope", "filters", i))) for i, f in enumerate(scope.filters))
        self.scope_text = _scope_text(mapping, where(("scope",)))

        # --- username
        username = mapping.username
        self.username_source = parse_path(username.source)
        self.username_pipeline = compile_pipeline(username.transforms)
        self.username_where = where(("username",))
        self.username_rule = f"username <- {username.source}{f' + {username.suffix!r}' if username.suffix else ''} " \
                             f"({self.username_where})"
        self.username_suffix = username.suffix
        self.username_format = username.duplicate_format if username.on_duplicate == "suffix" else None
        self.username_attempts = username.max_attempts

        # --- locale
        self.locale_sources = tuple(parse_path(s) for s in mapping.locale.sources)
        self.locale_table = _locale_table(mapping.locale.countries, mapping.locale.default)
        self.locale_default = _default_choice(mapping.locale.default)
        self.locale_always = mapping.locale.apply == "always"
        self.locale_where = where(("locale",))
        self.locale_rule = f"locale from {' or '.join(mapping.locale.sources)} ({self.locale_where})"

        # --- manager, link
        self.manager_where = where(("manager",))
        self.manager_rule = f"manager -> {mapping.manager.field} ({self.manager_where})" if mapping.manager else ""
        self.link_where = where(("link_field",))
        self.link_rule = f"link_field {mapping.link_field} ({self.link_where})" if mapping.link_field else ""
        self.group_rules_where = where(("group_rules",))

        # --- group rules
        self.group_rules = tuple(
            CompiledGroupRule(
                index=i, group=r.group, key=r.group.casefold(), precedence=r.precedence, profile=r.profile,
                role=r.role, permission_sets=tuple(dict.fromkeys(r.permission_sets)),
                permission_set_groups=tuple(dict.fromkeys(r.permission_set_groups)),
                permission_set_licenses=tuple(dict.fromkeys(r.permission_set_licenses)),
                public_groups=tuple(dict.fromkeys(r.public_groups)), queues=tuple(dict.fromkeys(r.queues)),
                text=f"group rule '{r.group}' ({where(('group_rules', i))})", where=where(("group_rules", i)),
            )
            for i, r in enumerate(mapping.group_rules)
        )

        # --- matching
        parsed = [(i, parse_match_rule(text)) for i, text in enumerate(mapping.matching.rules)]
        self.match_by_link = any(fields == ("link",) for _i, fields in parsed)
        self.match_link_where = where(("matching", "rules", 0))
        self.match_rules: tuple[CompiledMatchRule, ...] = tuple(
            CompiledMatchRule(fields, " AND ".join(fields), where(("matching", "rules", i)))
            for i, fields in parsed if fields != ("link",)
        )
        self.match_fields: tuple[str, ...] = tuple(dict.fromkeys(f for r in self.match_rules for f in r.fields))

    # --- scope ------------------------------------------------------------------------------------------------
    def in_scope(self, user_types: str, group_keys: frozenset[str], attrs: AbcMapping[str, Any]) -> tuple[bool, str]:
        """(in scope?, why) for an enabled, existing user; the reason names the mapping line."""
        if self.user_types and user_types.casefold() not in self.user_types:
            return False, f"not in scope: userType {user_types} is not in scope.user_types ({self.user_types_where})"
        if self.scope_groups and not any(key in group_keys for key, _name in self.scope_groups):
            names = " or ".join(name for _key, name in self.scope_groups)
            return False, f"not in scope: not a member of {names} ({self.scope_groups_where})"
        for f in self.filters:
            if not f.test(read_path(attrs, f.path)):
                return False, f"not in scope: fails filter {f.text}"
        return True, f"in scope: {self.scope_text}"

    # --- username ---------------------------------------------------------------------------------------------
    def username_candidates(self, attrs: AbcMapping[str, Any]) -> list[str]:
        raw = read_path(attrs, self.username_source)
        if not raw:
            return []
        base = (self.username_pipeline(raw) if self.username_pipeline else raw) + self.username_suffix
        if self.username_format is None:
            return [base]
        local, _at, domain = base.rpartition("@")
        return [base] + [self.username_format.format(local=local, domain=domain, n=n, username=base)
                         for n in range(2, 2 + self.username_attempts)]

    # --- locale -----------------------------------------------------------------------------------------------
    def locale_for(self, attrs: AbcMapping[str, Any]) -> LocaleChoice:
        for path in self.locale_sources:
            value = read_path(attrs, path)
            if not value:
                continue
            key = value.strip().casefold()
            choice = self.locale_table.get(key) or self.locale_table.get(COUNTRY_NAMES.get(key, "").casefold())
            if choice is not None:
                return choice
        return self.locale_default


def _compile_attribute(field: str, spec: AttributeSpec, where: str) -> CompiledAttribute:
    has_constant = "constant" in spec.model_fields_set and spec.constant is not None
    return CompiledAttribute(
        field=field,
        source=parse_path(spec.source) if spec.source is not None else None,
        template=Template(spec.template) if spec.template is not None else None,
        constant=spec.constant,
        has_constant=has_constant,
        default=Template(spec.default) if spec.default is not None else None,
        pipeline=compile_pipeline(spec.transforms),
        truncate=spec.truncate,
        on_empty=spec.on_empty,
        rule=f"attribute {field} {spec.describe()} ({where})",
        where=where,
    )


def _compile_filter(spec: ScopeFilter, where: str) -> CompiledFilter:
    path = parse_path(spec.attribute)
    if spec.equals is not None:
        wanted = spec.equals.casefold()
        return CompiledFilter(path, lambda v: v is not None and v.casefold() == wanted,
                              f"{spec.attribute} equals {spec.equals!r} ({where})")
    if spec.in_ is not None:
        allowed = frozenset(v.casefold() for v in spec.in_)
        return CompiledFilter(path, lambda v: v is not None and v.casefold() in allowed,
                              f"{spec.attribute} in {spec.in_} ({where})")
    if spec.not_in is not None:
        banned = frozenset(v.casefold() for v in spec.not_in)
        return CompiledFilter(path, lambda v: v is None or v.casefold() not in banned,
                              f"{spec.attribute} not_in {spec.not_in} ({where})")
    if spec.exists is not None:
        want = spec.exists
        return CompiledFilter(path, lambda v: bool(v) is want, f"{spec.attribute} exists {str(want).lower()} ({where})")
    pattern = re.compile(spec.matches or "")
    return CompiledFilter(path, lambda v: v is not None and pattern.search(v) is not None,
                          f"{spec.attribute} matches {spec.matches!r} ({where})")


def _scope_text(mapping: Mapping, where: str) -> str:
    scope = mapping.scope
    parts = []
    if scope.groups:
        parts.append(f"member of {' or '.join(scope.groups)}")
    if scope.user_types:
        parts.append(f"userType {'/'.join(scope.user_types)}")
    if scope.filters:
        parts.append(f"{len(scope.filters)} filter(s)")
    return f"{', '.join(parts) or 'every user'} ({where})"


def _complete(values: LocaleValues, base: tuple[str, str, str, str], origin: str) -> LocaleChoice:
    tz, locale, language, encoding = base
    return LocaleChoice(
        time_zone=values.time_zone or tz,
        locale=values.locale or locale,
        language=values.language or language,
        email_encoding=values.email_encoding or encoding,
        origin=origin,
    )


_FALLBACK = ("GMT", "en_US", "en_US", "UTF-8")


def _default_choice(default: LocaleValues) -> LocaleChoice:
    return _complete(default, _FALLBACK, "locale.default")


def _locale_table(overrides: dict[str, LocaleValues], default: LocaleValues) -> dict[str, LocaleChoice]:
    """Built-in entries, then the mapping's: a partial override keeps the built-in (or default) for the rest."""
    fallback = _default_choice(default)
    fallback_tuple = (fallback.time_zone, fallback.locale, fallback.language, fallback.email_encoding)
    table = {code.casefold(): _complete(LocaleValues(), values, f"country {code}") for code, values in BUILT_IN.items()}
    for key, values in overrides.items():
        code = COUNTRY_NAMES.get(key.casefold(), key).upper()
        table[code.casefold()] = _complete(values, BUILT_IN.get(code, fallback_tuple), f"locale.countries.{key}")
        table[key.casefold()] = table[code.casefold()]
    return table


#: The same compilation for the other sections that map fields like `attributes:` (guests, enrichment).
compile_attribute = _compile_attribute
