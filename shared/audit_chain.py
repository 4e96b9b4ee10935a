"""The hash chain: how entries are linked and signed, and how a copy of the trail is checked.

Each chain entry is `{"seq", "type", "prev_hash", "chained_at", "event" | "checkpoint", "hash"}` where `hash` is
SHA-256 over the canonical JSON of every other field. `prev_hash` is the previous entry's hash (64 zeros for seq 1),
so editing, removing, inserting or moving any entry breaks a link that names its sequence number.

A plain hash chain can be rebuilt by anyone who edits an entry and recomputes every later hash. Checkpoints stop
that: every so often the writer appends an entry of type "checkpoint" carrying the head it covers (`covers_seq`,
`head_hash`) and an HMAC-SHA256 of them under a key only idsync holds (`IDSYNC_AUDIT_HMAC_KEY`). Rewriting history
before a checkpoint then needs the key. Entries after the last checkpoint are protected by the chain alone until the
next checkpoint (at most `IDSYNC_AUDIT_CHECKPOINT_INTERVAL_S` later); `verify` says how many there are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.audit_events import canonical_json

GENESIS_HASH = "0" * 64
TYPE_EVENT = "event"
TYPE_CHECKPOINT = "checkpoint"
KEY_FILE = "audit.key"


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of the entry without its own `hash` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def make_entry(seq: int, prev_hash: str, chained_at: float, *, event: dict[str, Any] | None = None,
               checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"seq": seq, "prev_hash": prev_hash, "chained_at": chained_at}
    if checkpoint is not None:
        entry["type"] = TYPE_CHECKPOINT
        entry["checkpoint"] = checkpoint
    else:
        entry["type"] = TYPE_EVENT
        entry["event"] = event or {}
    entry["hash"] = entry_hash(entry)
    return entry


def checkpoint_mac(key: bytes, covers_seq: int, head_hash: str, signed_at: float) -> str:
    message = canonical_json({"covers_seq": covers_seq, "head_hash": head_hash, "signed_at": signed_at})
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def make_checkpoint(key: bytes, covers_seq: int, head_hash: str, signed_at: float) -> dict[str, Any]:
    return {
        "covers_seq": covers_seq,
        "head_hash": head_hash,
        "signed_at": signed_at,
        "alg": "HMAC-SHA256",
        "key_id": key_id(key),
        "mac": checkpoint_mac(key, covers_seq, head_hash, signed_at),
    }


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key, so a verifier holding several keys (rotation) can tell which."""
    return hashlib.sha256(b"idsync-audit-key-id:" + key).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------------ key
class AuditKeyMissing(Exception):
    """No checkpoint key configured and none generated yet; the message is one line for the operator."""


def load_key(configured: str | None, var_dir: Path, *, create: bool = False) -> bytes:
    """The checkpoint key: the setting when given, else `{var_dir}/audit.key`, generated (0600) when `create`.

    Generating it is for `make run` only (like the Flower password): in production set IDSYNC_AUDIT_HMAC_KEY from a
    secret store, so the writer and whoever verifies share it and a lost var/ does not lose the key.
    """
    if configured:
        return configured.encode("utf-8")
    path = Path(var_dir) / KEY_FILE
    if path.exists():
        return path.read_text().strip().encode("utf-8")
    if not create:
        raise AuditKeyMissing(f"IDSYNC_AUDIT_HMAC_KEY is not set and {path} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value.encode("utf-8")


# ------------------------------------------------------------------------------------------------------- verify
@dataclass(frozen=True)
class Problem:
    seq: int | None
    kind: str  # edited, deleted, inserted, reordered, broken_link, bad_signature, checkpoint_mismatch, unreadable
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Verdict:
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    last_checkpoint_seq: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems and self.entries > 0

    @property
    def unsigned_tail(self) -> int:
        """Entries after the last signed checkpoint: protected by the chain alone until the next checkpoint."""
        if self.last_seq is None:
            return 0
        return self.last_seq - (self.last_checkpoint_seq or 0)

    def summary(self) -> str:
        if not self.entries:
            return "the trail is empty"
        if self.problems:
            return f"the chain is BROKEN: {len(self.problems)} problem(s) in {self.entries} entries"
        tail = f"; {self.unsigned_tail} newest entries not yet covered by a checkpoint" if self.unsigned_tail else ""
        return (f"the chain is intact: {self.entries} entries (seq {self.first_seq}..{self.last_seq}), "
                f"{self.checkpoints} signed checkpoint(s) valid{tail}")


def parse_lines(lines: Iterable[str]) -> list[dict[str, Any] | Problem]:
    """JSONL lines -> entries; an unparseable line becomes a Problem in its place (it was inserted or damaged)."""
    out: list[dict[str, Any] | Problem] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
                raise ValueError("not a chain entry")
        except ValueError:
            out.append(Problem(None, "inserted", f"line {number}: not a chain entry (inserted or damaged)"))
            continue
        out.append(entry)
    return out


def verify(items: Iterable[dict[str, Any] | Problem], keys: Iterable[bytes]) -> Verdict:
    """Check a copy of the trail, in the order the sink holds it; every problem names the sequence number.

    - edited: an entry's content no longer matches its own hash (or was re-hashed: its successor's link breaks);
    - deleted: a sequence number between the first and the last is missing;
    - inserted: an entry that is not part of the chain (a second entry claiming a taken number, an exact duplicate,
      or a line that is not an entry);
    - reordered: an entry stands after one with a higher sequence number;
    - checkpoints: the HMAC must verify under one of `keys`, and the signed head hash must be the chain's.
    """
    key_list = list(keys)
    verdict = Verdict()
    entries: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Problem):
            verdict.problems.append(item)
        else:
            entries.append(item)
    if not entries:
        return verdict

    # 1. each entry against its own hash
    edited: set[int] = set()
    for entry in entries:
        if entry.get("hash") != entry_hash(entry):
            edited.add(id(entry))
            verdict.problems.append(Problem(entry["seq"], "edited",
                                            f"seq {entry['seq']}: edited (its content does not match its hash)"))

    # 2. one genuine entry per sequence number; the others were inserted
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for entry in entries:
        by_seq.setdefault(entry["seq"], []).append(entry)
    successors_prev = {e.get("prev_hash") for e in entries}
    genuine: dict[int, dict[str, Any]] = {}
    for seq, claims in by_seq.items():
        if len(claims) == 1:
            genuine[seq] = claims[0]
            continue
        linked = [c for c in claims if c.get("hash") in successors_prev and id(c) not in edited]
        keep = linked[0] if linked else next((c for c in claims if id(c) not in edited), claims[0])
        genuine[seq] = keep
        for other in claims:
            if other is keep:
                continue
            same = other.get("hash") == keep.get("hash")
            what = "an exact duplicate" if same else "a second entry claiming this number"
            verdict.problems.append(Problem(seq, "inserted", f"seq {seq}: inserted ({what}; not part of the chain)"))

    # 3. order as held by the sink
    highest = None
    for entry in entries:
        seq = entry["seq"]
        if genuine.get(seq) is not entry:
            continue
        if highest is not None and seq < highest:
            verdict.problems.append(Problem(seq, "reordered", f"seq {seq}: reordered (stored after seq {highest})"))
        highest = seq if highest is None else max(highest, seq)

    # 4. gaps and links
    seqs = sorted(genuine)
    first, last = seqs[0], seqs[-1]
    if first != 1:
        verdict.problems.append(Problem(1, "deleted", f"seq 1..{first - 1}: missing (deleted, or this sink was "
                                                      f"added after they were trimmed)"))
    elif genuine[1].get("prev_hash") != GENESIS_HASH:
        verdict.problems.append(Problem(1, "broken_link", "seq 1: does not start the chain (prev_hash is not zero)"))
    missing_from = None
    for seq in range(first, last + 1):
        if seq not in genuine:
            missing_from = seq if missing_from is None else missing_from
            continue
        if missing_from is not None:
            span = f"seq {missing_from}" if missing_from == seq - 1 else f"seq {missing_from}..{seq - 1}"
            verdict.problems.append(Problem(missing_from, "deleted", f"{span}: deleted (missing from the trail)"))
            missing_from = None
        elif seq > first:
            before, this = genuine[seq - 1], genuine[seq]
            if this.get("prev_hash") != before.get("hash") and id(before) not in edited and id(this) not in edited:
                verdict.problems.append(Problem(seq - 1, "edited", f"seq {seq - 1}: edited and re-hashed (seq {seq} "
                                                                   f"links to a different seq {seq - 1})"))

    # 5. signed checkpoints
    for seq in seqs:
        entry = genuine[seq]
        if entry.get("type") != TYPE_CHECKPOINT:
            continue
        verdict.checkpoints += 1
        cp = entry.get("checkpoint") or {}
        covers, head = cp.get("covers_seq"), cp.get("head_hash")
        try:
            signed = (int(cp["covers_seq"]), str(head), float(cp["signed_at"]))
            good = any(hmac.compare_digest(checkpoint_mac(k, *signed), str(cp.get("mac"))) for k in key_list)
        except (TypeError, ValueError, KeyError):
            good = False
        if not good:
            verdict.problems.append(Problem(seq, "bad_signature",
                                            f"seq {seq}: checkpoint signature does not verify (forged, edited, or "
                                            f"signed with another key)"))
            continue
        covered = genuine.get(covers) if isinstance(covers, int) else None
        if covered is not None and covered.get("hash") != head:
            message = (f"seq {covers}: differs from the head signed by the checkpoint at seq {seq} "
                       f"(history up to seq {covers} was rewritten)")
            verdict.problems.append(Problem(covers, "checkpoint_mismatch", message))
        verdict.last_checkpoint_seq = seq

    verdict.entries = len(entries)
    verdict.first_seq, verdict.last_seq = first, last
    verdict.problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    return verdict
