from __future__ import annotations

import pytest

from producers.notification_schema import (
    ChangeNotificationBatch,
    LifecycleNotificationBatch,
    ValidationError,
    describe_error,
)
from producers.webhook import Rejection, map_notification
from shared.events import IdentityEvent

ITEM = {
    "id": "lsgTZMr9KwAAA",
    "subscriptionId": "sub",
    "subscriptionExpirationDateTime": "2016-03-19T22:11:09.952Z",
    "clientState": "secretClientValue",
    "changeType": "updated",
    "resource": "Users/u1",
    "tenantId": "t1",
    "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": "Users/u1", "id": "u1"},
    "sequenceNumber": 7,  # a field Graph may add later
}


def test_a_graph_change_notification_parses_and_ignores_unknown_fields():
    batch = ChangeNotificationBatch.model_validate({"value": [ITEM]})
    item = batch.value[0]
    assert item.resource_data is not None
    assert (item.change_type, item.resource, item.tenant_id, item.resource_data.id) == ("updated", "Users/u1", "t1",
                                                                                        "u1")


def test_a_notification_without_its_required_fields_fails_naming_them_without_echoing_values():
    broken = {k: v for k, v in ITEM.items() if k not in ("tenantId", "changeType")}
    with pytest.raises(ValidationError) as info:
        ChangeNotificationBatch.model_validate({"value": [broken]})
    text = describe_error(info.value)
    assert "tenantId" in text and "changeType" in text
    assert "secretClientValue" not in text


def test_a_lifecycle_notification_parses():
    batch = LifecycleNotificationBatch.model_validate({"value": [{
        "subscriptionId": "s", "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z", "tenantId": "t",
        "clientState": "c", "lifecycleEvent": "reauthorizationRequired"}]})
    assert batch.value[0].lifecycle_event == "reauthorizationRequired"


def test_a_body_without_value_is_invalid():
    with pytest.raises(ValidationError):
        ChangeNotificationBatch.model_validate({"values": []})


@pytest.mark.parametrize(
    ("resource", "change", "kind", "object_id"),
    [
        ("Users/u1", "updated", "user.changed", "u1"),
        ("users/u1", "created", "user.changed", "u1"),
        ("/Users/u1", "deleted", "user.hard_deleted", "u1"),
        ("Users('u1')", "updated", "user.changed", "u1"),
        ("Groups/g1", "updated", "group.changed", "g1"),
        ("Groups/g1/members", "deleted", "group.changed", "g1"),
    ],
)
def test_resources_and_change_types_map_to_event_kinds(resource, change, kind, object_id):
    item = ChangeNotificationBatch.model_validate({"value": [{**ITEM, "resource": resource, "changeType": change}]})
    event = map_notification(item.value[0])
    assert isinstance(event, IdentityEvent), event
    assert (event.kind.value, event.object_id, event.tenant) == (kind, object_id, "t1")


@pytest.mark.parametrize(("resource", "change"), [("Me/Messages/1", "updated"), ("Users/u1", "renamed"),
                                                  ("Users/../../etc", "updated")])
def test_unknown_resources_and_change_types_are_rejections_not_crashes(resource, change):
    item = ChangeNotificationBatch.model_validate({"value": [{**ITEM, "resource": resource, "changeType": change}]})
    assert isinstance(map_notification(item.value[0]), Rejection)
