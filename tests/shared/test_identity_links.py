"""Per-identity state: links survive deletes, tombstones only move forward, reviews and transfers deduplicate."""

from __future__ import annotations

import fakeredis
import pytest

from shared.identity_links import IdentityLinks


@pytest.fixture
def links() -> IdentityLinks:
    return IdentityLinks(fakeredis.FakeRedis(decode_responses=True))


def test_a_link_keeps_the_last_known_upn_when_later_updates_have_none(links) -> None:
    assert links.get_link("u1") is None
    links.set_link("u1", "005A", "alice@contoso.com")
    links.set_link("u1", "005A", None)  # hard-deleted user: Graph no longer has a UPN
    link = links.get_link("u1")
    assert (link.sf_user_id, link.upn) == ("005A", "alice@contoso.com") and link.updated_at > 0
    links.remove_link("u1")
    assert links.get_link("u1") is None


def test_a_tombstone_only_moves_forward_until_cleared(links) -> None:
    assert links.tombstone("u1") is None
    links.set_tombstone("u1", 200.0)
    links.set_tombstone("u1", 100.0)  # a late, older revocation
    assert links.tombstone("u1") == 200.0
    links.set_tombstone("u1", 300.5)
    assert links.tombstone("u1") == 300.5
    links.clear_tombstone("u1")
    assert links.tombstone("u1") is None


def test_a_tombstone_is_cleared_only_if_it_still_holds_the_value_read(links) -> None:
    links.set_tombstone("u1", 200.25)
    read = links.tombstone("u1")
    links.set_tombstone("u1", 300.5)  # a revocation lands after the read
    assert links.clear_tombstone_if("u1", read) is False
    assert links.tombstone("u1") == 300.5
    assert links.clear_tombstone_if("u1", 300.5) is True and links.tombstone("u1") is None
    assert links.clear_tombstone_if("u1", 300.5) is False


def test_forgetting_a_stale_salesforce_id_keeps_the_upn_and_spares_a_newer_link(links) -> None:
    links.set_link("u1", "005OLD", "alice@contoso.com")
    assert links.forget_salesforce_user("u1", "005OLD") is True
    link = links.get_link("u1")
    assert link.sf_user_id is None and link.upn == "alice@contoso.com"
    links.set_link("u1", "005NEW")
    assert links.forget_salesforce_user("u1", "005OLD") is False  # relinked meanwhile by another task
    assert links.get_link("u1").sf_user_id == "005NEW"


def test_review_items_have_a_stable_id_to_find_them_by(links) -> None:
    item = links.add_review("u1", "005A", "deactivation_blocked", "last admin", upn="a@contoso.com",
                            code="CANNOT_DISABLE_LAST_ADMIN", correlation_id="c1")
    again = links.add_review("u1", "005A", "deactivation_blocked", "last admin, still")
    assert item["id"] and again["id"] == item["id"] and again["upn"] == "a@contoso.com"
    assert links.get_review(item["id"]) == links.get_review("u1") == again
    assert links.get_review("nope") is None


def test_a_review_item_stored_before_ids_existed_gets_a_stable_one(links) -> None:
    import json

    links.redis.hset("idsync:reviews", "0a1b2c3d-0000-4000", json.dumps(
        {"entra_id": "0a1b2c3d-0000-4000", "sf_user_id": None, "reason": "r", "detail": "d", "created_at": 1.0,
         "updated_at": 1.0}))
    [item] = links.list_reviews()
    assert item["id"] == "0a1b2c3d00" and links.get_review("0a1b2c3d00")["entra_id"] == "0a1b2c3d-0000-4000"
    assert links.add_review("0a1b2c3d-0000-4000", None, "r", "d2")["id"] == "0a1b2c3d00"


def test_one_review_item_per_identity_updated_on_repeat(links) -> None:
    links.add_review("u1", "005A", "deactivation_blocked", "default lead owner")
    first = links.list_reviews()[0]
    links.add_review("u1", "005A", "deactivation_blocked", "last admin")
    links.add_review("u2", None, "deactivation_blocked", "x")

    assert links.review_count() == 2
    again = links.list_reviews()[0]
    assert again["entra_id"] == "u1" and again["detail"] == "last admin"
    assert again["created_at"] == first["created_at"]
    assert links.resolve_review("u1") is True and links.review_count() == 1


def test_pending_transfers_collapse_duplicates_and_can_be_completed(links) -> None:
    links.add_pending_transfer("u1", "005A", "c1")
    links.add_pending_transfer("u1", "005A", "c2")
    links.add_pending_transfer("u2", None, "c3")
    pending = links.pending_transfers()
    assert [p["entra_id"] for p in pending] == ["u1", "u2"]
    assert pending[0]["sf_user_id"] == "005A"
    assert links.complete_transfer("u1") is True and len(links.pending_transfers()) == 1
