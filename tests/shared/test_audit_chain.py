"""The hash chain: `verify` names the sequence number of an edited, deleted, inserted or reordered entry, and a
history rewritten with fresh hashes is caught by the signed checkpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.audit_chain import (
    GENESIS_HASH,
    AuditKeyMissing,
    entry_hash,
    load_key,
    make_checkpoint,
    make_entry,
    parse_lines,
    verify,
)
from shared.audit_events import AuditEvent, canonical_json

KEY = b"test-checkpoint-key"


def build_trail(n_events: int, checkpoint_every: int = 5, key: bytes = KEY) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    prev, seq, since = GENESIS_HASH, 0, 0
    for i in range(n_events):
        seq += 1
        event = AuditEvent.build("revoke", "revoked", entra_id=f"user-{i}", upn=f"u{i}@example.com",
                                 observed_at=1_700_000_000.0 + i).to_dict()
        entry = make_entry(seq, prev, 1_700_000_100.0 + i, event=event)
        entries.append(entry)
        prev, since = entry["hash"], since + 1
        if since == checkpoint_every:
            seq += 1
            cp = make_entry(seq, prev, 1_700_000_100.0 + i, checkpoint=make_checkpoint(key, seq - 1, prev, 1.5 + i))
            entries.append(cp)
            prev, since = cp["hash"], 0
    return entries


def rehash_from(entries: list[dict[str, Any]], index: int) -> None:
    """What a forger without the key does: recompute every hash and link from `index` on."""
    prev = entries[index - 1]["hash"] if index else GENESIS_HASH
    for entry in entries[index:]:
        entry["prev_hash"] = prev
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]


def kinds(verdict: Any) -> list[tuple[int | None, str]]:
    return [(p.seq, p.kind) for p in verdict.problems]


def test_an_untouched_trail_is_intact_with_its_checkpoints_verified() -> None:
    verdict = verify(build_trail(12), [KEY])
    assert verdict.intact and verdict.problems == []
    assert (verdict.first_seq, verdict.last_seq, verdict.checkpoints) == (1, 14, 2)
    assert verdict.unsigned_tail == 2 and "intact" in verdict.summary()


def test_an_edited_entry_is_named_by_its_sequence_number() -> None:
    trail = build_trail(12)
    trail[3]["event"]["outcome"] = "in_sync"
    verdict = verify(trail, [KEY])
    assert kinds(verdict) == [(4, "edited")]
    assert "seq 4: edited" in str(verdict.problems[0])


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    trail = build_trail(12)
    trail[3]["event"]["outcome"] = "in_sync"
    trail[3]["hash"] = entry_hash(trail[3])
    assert kinds(verify(trail, [KEY])) == [(4, "edited")]


def test_a_deleted_entry_is_named_by_its_sequence_number() -> None:
    trail = build_trail(12)
    del trail[6]  # seq 7
    verdict = verify(trail, [KEY])
    assert kinds(verdict) == [(7, "deleted")]
    assert "seq 7: deleted" in str(verdict.problems[0])


def test_deleting_the_first_entries_is_reported() -> None:
    trail = build_trail(12)[2:]
    assert kinds(verify(trail, [KEY])) == [(1, "deleted")]


def test_an_inserted_entry_with_a_valid_hash_and_link_is_found() -> None:
    trail = build_trail(12)
    genuine = trail[4]  # seq 5
    forged_event = AuditEvent.build("reactivate", "done", entra_id="user-x").to_dict()
    forged = make_entry(5, genuine["prev_hash"], genuine["chained_at"], event=forged_event)
    trail.insert(4, forged)
    verdict = verify(trail, [KEY])
    assert kinds(verdict) == [(5, "inserted")]
    assert "seq 5: inserted" in str(verdict.problems[0])


def test_an_inserted_duplicate_and_a_line_that_is_not_an_entry_are_found() -> None:
    trail = build_trail(6)
    lines = [canonical_json(e) for e in trail]
    lines.insert(3, lines[2])  # seq 3 twice
    lines.insert(5, '{"hello": "auditor"}')
    verdict = verify(parse_lines(lines), [KEY])
    assert sorted(kinds(verdict), key=str) == sorted([(3, "inserted"), (None, "inserted")], key=str)


def test_reordered_entries_are_named() -> None:
    trail = build_trail(12)
    trail[7], trail[8] = trail[8], trail[7]  # seq 8 and 9 swapped
    verdict = verify(trail, [KEY])
    assert kinds(verdict) == [(8, "reordered")]
    assert "seq 8: reordered (stored after seq 9)" in str(verdict.problems[0])


def test_a_history_rewritten_with_fresh_hashes_fails_the_signed_checkpoint() -> None:
    trail = build_trail(12)
    trail[1]["event"]["outcome"] = "in_sync"
    rehash_from(trail, 1)  # every hash and link is consistent again
    verdict = verify(trail, [KEY])
    assert (5, "checkpoint_mismatch") in kinds(verdict)


def test_a_forged_or_foreign_checkpoint_signature_is_rejected() -> None:
    trail = build_trail(12)
    assert kinds(verify(trail, [b"another key"])) == [(6, "bad_signature"), (12, "bad_signature")]
    assert verify(trail, [b"old key", KEY]).intact  # several keys: rotation


def test_an_empty_trail_is_not_intact() -> None:
    verdict = verify([], [KEY])
    assert not verdict.intact and verdict.summary() == "the trail is empty"


def test_the_canonical_form_round_trips_through_json() -> None:
    entry = build_trail(1)[0]
    again = json.loads(canonical_json(entry))
    assert entry_hash(again) == entry["hash"] == entry_hash(copy.deepcopy(entry))


def test_the_key_comes_from_settings_or_is_generated_once_private(tmp_path: Path) -> None:
    assert load_key("configured", tmp_path) == b"configured"
    with pytest.raises(AuditKeyMissing):
        load_key(None, tmp_path)
    generated = load_key(None, tmp_path, create=True)
    assert load_key(None, tmp_path) == generated and len(generated) >= 32
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
