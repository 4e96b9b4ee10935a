"""Rules that span sections of a mapping, checked after the model accepted each section on its own.

Why separate from the model: a pydantic model validator reports one error at the root; here each problem keeps the
path of the key to change, so the loader can print its line. Names against the org (profiles, permission sets,
fields) are checked elsewhere (`shared.engine.names.check_names`), because that needs the org's catalogue.
"""

from __future__ import annotations

from shared.mapping.enrichment import enrichment_problems
from shared.mapping.guests import guest_problems
from shared.mapping.model import RESERVED_FIELDS, Mapping, parse_match_rule
from shared.mapping.offboarding import offboarding_problems
from shared.mapping.source import Path

Problem = tuple[Path, str, str | None]  # (where, message, fix)


def produced_fields(mapping: Mapping) -> set[str]:
    """User fields this mapping gives a value, i.e. the fields a matching rule can compare."""
    fields = set(mapping.attributes) | {"Username"}
    if mapping.link_field:
        fields.add(mapping.link_field)
    return fields


def semantic_problems(mapping: Mapping) -> list[Problem]:
    problems: list[Problem] = []
    for name in mapping.attributes:
        if name in RESERVED_FIELDS:
            problems.append((("attributes", name), f"{name} cannot be mapped here: {RESERVED_FIELDS[name]}",
                             f"remove attributes.{name}"))
    if mapping.manager is not None and mapping.manager.field in mapping.attributes:
        problems.append((("attributes", mapping.manager.field),
                         f"{mapping.manager.field} is set by the manager: section", "remove one of the two"))
    if mapping.link_field is not None:
        if mapping.link_field in mapping.attributes:
            problems.append((("attributes", mapping.link_field), f"{mapping.link_field} is the link_field",
                             "remove the attribute: idsync writes the Entra object id there"))
        if mapping.link_field in RESERVED_FIELDS or (mapping.manager and mapping.link_field == mapping.manager.field):
            problems.append((("link_field",), f"{mapping.link_field} cannot hold the link",
                             "use a custom text field such as Entra_Object_Id__c"))

    produced = produced_fields(mapping)
    for index, text in enumerate(mapping.matching.rules):
        fields = parse_match_rule(text)
        if fields == ("link",):
            if index != 0:
                problems.append((("matching", "rules", index), "'link' must be the first rule",
                                 "move it to the top: a stored link is the strongest evidence"))
            continue
        for name in fields:
            if name not in produced:
                problems.append((("matching", "rules", index),
                                 f"rule '{text}' compares {name}, which this mapping gives no value",
                                 f"add attributes.{name}, or drop it from the rule"))

    problems.extend(crm_problems(mapping))

    for index, rule in enumerate(mapping.group_rules):
        if not (rule.profile or rule.role or rule.permission_sets or rule.permission_set_groups
                or rule.permission_set_licenses or rule.public_groups or rule.queues):
            problems.append((("group_rules", index), f"the rule for '{rule.group}' grants nothing",
                             "add a profile, role, permission_sets, ... or remove the rule"))
    if mapping.offboarding is not None:
        problems.extend(offboarding_problems(mapping.offboarding))
    return problems


def crm_problems(mapping: Mapping) -> list[Problem]:
    """The `guests:`, `enrichment:` and `requests:` sections, each checked by its own module."""
    problems: list[Problem] = []
    guest_fields: set[str] = set()
    guest_link: str | None = None
    if mapping.guests is not None:
        problems.extend(guest_problems(mapping.guests))
        guest_fields = set(mapping.guests.contact)
        guest_link = mapping.guests.link_field
    if mapping.enrichment is not None:
        problems.extend(enrichment_problems(mapping.enrichment, guest_fields, guest_link))
    return problems
