"""The reverse flow's pure parts: UPNs, request records, the poller's watermark."""

from __future__ import annotations

from datetime import UTC, datetime

import fakeredis

from shared.user_requests.record import ProvisioningRequest
from shared.user_requests.upn import fold, mail_nickname, upn_candidates
from shared.user_requests.watermark import RequestWatermark, parse_stamp, soql_datetime


def test_names_fold_to_what_entra_accepts_before_the_at():
    assert fold("Zoë O'Brien-Müller") == "zoeobrien-muller"
    assert fold("Jürgen Straße") == "jurgenstrasse"
    assert upn_candidates("Zoë", "O'Brien", "{first}.{last}", "contoso.com", 3) == [
        "zoe.obrien@contoso.com", "zoe.obrien2@contoso.com", "zoe.obrien3@contoso.com"]
    assert upn_candidates("Ana", "Lima", "{initial}{last}", "c.com", 1) == ["alima@c.com"]
    assert upn_candidates("李", "", "{first}.{last}", "c.com", 2) == []  # nothing usable: the request fails clearly
    assert mail_nickname("zoe.obrien2@contoso.com") == "zoe.obrien2"


def test_a_request_reads_its_groups_and_says_what_makes_it_unusable():
    record = {"Id": "a0Y1", "Name": "R-1", "Status__c": "Approved", "Request_Type__c": "Create",
              "First_Name__c": " Ana ", "Last_Name__c": "Lima", "Entra_Groups__c": "Marketing; Sales Team West;;",
              "Email__c": "Ana@Example.com"}
    request = ProvisioningRequest.from_record(record)
    assert request.groups == ("Marketing", "Sales Team West") and request.first_name == "Ana"
    assert request.email == "ana@example.com" and request.problems() == []
    assert ProvisioningRequest.from_record({**record, "Last_Name__c": None}).problems() == ["Last_Name__c is empty"]
    invite = ProvisioningRequest.from_record({**record, "Request_Type__c": "Invite", "Email__c": None})
    assert invite.problems() == ["Email__c is empty (an invitation goes to an address)"]
    other = ProvisioningRequest.from_record({**record, "Request_Type__c": "Deactivate"})
    assert "not handled by idsync" in other.problems()[0]


def test_stamps_parse_in_salesforce_form_and_become_soql_literals():
    stamp = parse_stamp("2026-05-01T10:00:00.250+0000")
    assert stamp == datetime(2026, 5, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert soql_datetime(stamp) == "2026-05-01T10:00:00.250Z"


def test_the_watermark_never_moves_back_and_forgets_old_published_entries():
    marks = RequestWatermark(fakeredis.FakeRedis(decode_responses=True))
    assert marks.get() is None
    marks.mark_published("a0Y1", "2026-05-01T10:00:00.000+0000")
    marks.mark_published("a0Y2", "2026-05-01T10:05:00.000+0000")
    marks.save(parse_stamp("2026-05-01T10:05:00.000+0000"), keep_after=parse_stamp("2026-05-01T10:01:00Z"))
    marks.save(parse_stamp("2026-05-01T09:00:00.000+0000"), keep_after=parse_stamp("2026-05-01T10:01:00Z"))
    assert marks.get() == parse_stamp("2026-05-01T10:05:00Z")
    assert set(marks.published()) == {"a0Y2"}
