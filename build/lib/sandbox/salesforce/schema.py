"""Object and field definitions of the sandbox org, loaded from `schema/*.json`.

Why JSON: the objects the org knows (standard setup objects, CRM objects and the idsync custom objects) are data,
not code; an operator can add a custom object by dropping a file next to the shipped ones. Each JSON file holds
`{"objects": [{"name", "keyPrefix", "label", "setup", "custom", "createable", "updateable", "deletable",
"queueable", "ownable", "fields": {Name: {type, length, nillable, createable, updateable, referenceTo,
relationshipName, unique, externalId, idLookup, default, picklistValues, restricted, label, computed}}}]}`.
Omitted attributes take Salesforce-like defaults (nillable/createable/updateable true). System fields (Id,
IsDeleted, CreatedDate, CreatedById, LastModifiedDate, LastModifiedById, SystemModstamp, and OwnerId for ownable
objects) are added by the loader so every object carries them exactly like a real org.

`FieldInfo` is the contract with the SOQL engine (`sandbox.salesforce.soql`): it reads `name`, `type`, `length`,
`nillable`, `reference_to`, `relationship_name`; the rest serves describe and the write rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).with_name("schema")

FIELD_TYPES = frozenset(
    {
        "id",
        "string",
        "email",
        "picklist",
        "textarea",
        "phone",
        "url",
        "boolean",
        "int",
        "double",
        "currency",
        "percent",
        "date",
        "datetime",
        "reference",
    }
)


@dataclass(frozen=True)
class FieldInfo:
    """One field as describe shows it; `computed` marks values the org derives (User.Name, IsClosed...)."""

    name: str
    type: str
    length: int | None = None
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    unique: bool = False
    external_id: bool = False
    default: Any = None
    id_lookup: bool = False
    label: str = ""
    picklist_values: list[str] = field(default_factory=list)
    restricted_picklist: bool = False
    computed: bool = False
    case_sensitive: bool = False

    @property
    def required_on_create(self) -> bool:
        """Salesforce demands a value on insert when the field is createable, not nillable and has no default."""
        return self.createable and not self.nillable and self.default is None and self.type != "boolean"

    def describe(self) -> dict[str, Any]:
        """The field entry of `sobjects/{Obj}/describe` (the subset of real attributes clients look at)."""
        soap = {
            "id": "tns:ID",
            "reference": "tns:ID",
            "boolean": "xsd:boolean",
            "int": "xsd:int",
            "double": "xsd:double",
            "currency": "xsd:double",
            "percent": "xsd:double",
            "date": "xsd:date",
            "datetime": "xsd:dateTime",
        }.get(self.type, "xsd:string")
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "soapType": soap,
            "length": self.length or 0,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "unique": self.unique,
            "externalId": self.external_id,
            "idLookup": self.id_lookup or self.name == "Id",
            "caseSensitive": self.case_sensitive,
            "calculated": self.computed,
            "custom": self.name.endswith("__c"),
            "defaultedOnCreate": self.default is not None or self.type == "boolean",
            "defaultValue": None if isinstance(self.default, str) and self.default.startswith("$") else self.default,
            "filterable": self.type != "textarea" or (self.length or 0) <= 255,
            "sortable": self.type != "textarea",
            "restrictedPicklist": self.restricted_picklist,
            "picklistValues": [
                {"active": True, "defaultValue": v == self.default, "label": v, "validFor": None, "value": v}
                for v in self.picklist_values
            ],
        }


@dataclass
class ObjectDef:
    """One sObject type: its key prefix, whether it is a setup object (MIXED_DML), what the API may do with it."""

    name: str
    key_prefix: str
    label: str
    fields: dict[str, FieldInfo]
    setup: bool = False
    custom: bool = False
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    queueable: bool = False  # a queue (Group Type=Queue) may own its records, given a QueueSobject row
    ownable: bool = False
    _lower: dict[str, FieldInfo] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lower = {k.lower(): v for k, v in self.fields.items()}

    def field(self, name: str) -> FieldInfo | None:
        """Case-insensitive lookup, as SOQL and the REST API treat field names."""
        return self._lower.get(name.lower())

    def describe(self, base: str) -> dict[str, Any]:
        urls = self.urls(base)
        return {
            **self.summary(base),
            "fields": [f.describe() for f in self.fields.values()],
            "childRelationships": [],
            "recordTypeInfos": [],
            "urls": urls,
        }

    def urls(self, base: str) -> dict[str, str]:
        return {
            "sobject": f"{base}/sobjects/{self.name}",
            "describe": f"{base}/sobjects/{self.name}/describe",
            "rowTemplate": f"{base}/sobjects/{self.name}/{{ID}}",
        }

    def summary(self, base: str) -> dict[str, Any]:
        """The entry of `GET sobjects` for this object."""
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "queryable": True,
            "retrieveable": True,
            "searchable": not self.setup,
            "layoutable": not self.setup,
            "triggerable": not self.setup,
            "undeletable": self.deletable,
            "mergeable": False,
            "replicateable": True,
            "urls": self.urls(base),
        }


def _system_fields(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ro = {"createable": False, "updateable": False}
    out: dict[str, dict[str, Any]] = {
        "Id": {"type": "id", "length": 18, "nillable": False, **ro, "label": f"{obj['label']} ID"},
        "IsDeleted": {"type": "boolean", "nillable": False, **ro, "label": "Deleted"},
        "CreatedDate": {"type": "datetime", "nillable": False, **ro},
        "CreatedById": {"type": "reference", "nillable": False, **ro, "referenceTo": ["User"],
                        "relationshipName": "CreatedBy"},
        "LastModifiedDate": {"type": "datetime", "nillable": False, **ro},
        "LastModifiedById": {"type": "reference", "nillable": False, **ro, "referenceTo": ["User"],
                             "relationshipName": "LastModifiedBy"},
        "SystemModstamp": {"type": "datetime", "nillable": False, **ro},
    }
    if obj.get("ownable"):
        targets = ["Group", "User"] if obj.get("queueable") else ["User"]
        out["OwnerId"] = {"type": "reference", "nillable": False, "referenceTo": targets,
                          "relationshipName": "Owner", "label": "Owner ID", "default": "$CURRENT_USER"}
    return out


def _field(name: str, spec: dict[str, Any]) -> FieldInfo:
    ftype = spec.get("type", "string")
    if ftype not in FIELD_TYPES:
        raise ValueError(f"field {name}: unknown type {ftype!r}")
    length = spec.get("length")
    if length is None and ftype in ("id", "reference"):
        length = 18
    if length is None and ftype in ("string", "email", "phone", "url", "picklist"):
        length = {"email": 80, "phone": 40, "url": 255, "picklist": 255}.get(ftype, 255)
    return FieldInfo(
        name=name,
        type=ftype,
        length=length,
        nillable=spec.get("nillable", True),
        createable=spec.get("createable", not spec.get("computed", False)),
        updateable=spec.get("updateable", not spec.get("computed", False)),
        reference_to=list(spec.get("referenceTo", [])),
        relationship_name=spec.get("relationshipName"),
        unique=spec.get("unique", False),
        external_id=spec.get("externalId", False),
        default=spec.get("default"),
        id_lookup=spec.get("idLookup", spec.get("externalId", False)),
        label=spec.get("label", name.removesuffix("__c").replace("_", " ")),
        picklist_values=list(spec.get("picklistValues", [])),
        restricted_picklist=spec.get("restricted", False),
        computed=spec.get("computed", False),
        case_sensitive=spec.get("caseSensitive", False),
    )


def build_object(obj: dict[str, Any]) -> ObjectDef:
    """Turn one JSON object definition into an ObjectDef, system fields first (as describe lists them)."""
    specs = {**_system_fields(obj), **obj.get("fields", {})}
    fields = {name: _field(name, spec) for name, spec in specs.items()}
    return ObjectDef(
        name=obj["name"],
        key_prefix=obj["keyPrefix"],
        label=obj.get("label", obj["name"].removesuffix("__c").replace("_", " ")),
        fields=fields,
        setup=obj.get("setup", False),
        custom=obj["name"].endswith("__c"),
        createable=obj.get("createable", True),
        updateable=obj.get("updateable", True),
        deletable=obj.get("deletable", True),
        queueable=obj.get("queueable", False),
        ownable=obj.get("ownable", False),
    )


def load_schema(directory: Path = SCHEMA_DIR) -> dict[str, ObjectDef]:
    """All object definitions in `directory`, keyed by exact API name; files load in name order."""
    objects: dict[str, ObjectDef] = {}
    prefixes: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        for obj in json.loads(path.read_text())["objects"]:
            od = build_object(obj)
            if od.key_prefix in prefixes:
                raise ValueError(f"{path.name}: key prefix {od.key_prefix} of {od.name} already used by "
                                 f"{prefixes[od.key_prefix]}")
            prefixes[od.key_prefix] = od.name
            objects[od.name] = od
    return objects


@lru_cache(maxsize=1)
def default_schema() -> dict[str, ObjectDef]:
    """The shipped schema, parsed once per process (ObjectDefs are treated as immutable)."""
    return load_schema()
