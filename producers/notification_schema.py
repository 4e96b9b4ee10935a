"""Pydantic models of what Graph POSTs to the webhook: change notifications and lifecycle notifications.

Why strict models: the webhook is an internet-facing endpoint. Everything it accepts is parsed here, so a body with a
missing field fails as one 400 with a message instead of a KeyError deep inside the handler. Unknown fields are
ignored because Graph adds fields over time, and a new field must never break delivery.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ChangeNotification",
    "ChangeNotificationBatch",
    "LifecycleNotification",
    "LifecycleNotificationBatch",
    "ResourceData",
    "ValidationError",
    "describe_error",
]

#: Graph documents clientState as at most 128 or 255 characters (docs/decisions.md#change-notifications);
#: anything longer is not ours.
MAX_CLIENT_STATE = 255


class _GraphModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ResourceData(_GraphModel):
    odata_type: str | None = Field(default=None, alias="@odata.type")
    odata_id: str | None = Field(default=None, alias="@odata.id")
    id: str | None = None


class ChangeNotification(_GraphModel):
    id: str | None = None
    subscription_id: str = Field(alias="subscriptionId", min_length=1)
    subscription_expiration: str = Field(alias="subscriptionExpirationDateTime")
    client_state: str | None = Field(default=None, alias="clientState", max_length=MAX_CLIENT_STATE)
    change_type: str = Field(alias="changeType", min_length=1)
    resource: str = Field(min_length=1)
    tenant_id: str = Field(alias="tenantId", min_length=1)
    resource_data: ResourceData | None = Field(default=None, alias="resourceData")


class ChangeNotificationBatch(_GraphModel):
    value: list[ChangeNotification]


class LifecycleNotification(_GraphModel):
    subscription_id: str = Field(alias="subscriptionId", min_length=1)
    subscription_expiration: str = Field(alias="subscriptionExpirationDateTime")
    tenant_id: str = Field(alias="tenantId", min_length=1)
    client_state: str | None = Field(default=None, alias="clientState", max_length=MAX_CLIENT_STATE)
    lifecycle_event: str = Field(alias="lifecycleEvent", min_length=1)


class LifecycleNotificationBatch(_GraphModel):
    value: list[LifecycleNotification]


def describe_error(err: ValidationError, limit: int = 3) -> str:
    """A short, operator-readable summary ('value.0.subscriptionId: Field required'), never echoing input values.

    Why no input values: the body may carry a forged or real clientState, which must not land in logs or responses.
    """
    parts = []
    for item in err.errors()[:limit]:
        loc = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{loc}: {item.get('msg', 'invalid')}" if loc else str(item.get("msg", "invalid")))
    more = err.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
