"""The ledger: every accepted envelope, as received, in a hash chain.

``hash = sha256(prev_hash | kind | device | device_seq | sha256(envelope))`` with the
genesis ``prev_hash`` 64 zeros. Appending happens inside the merge transaction, before
the ops are applied (docs/sync.md). ``verify_chain`` walks it and names the first entry
whose stored digest or link does not hold.

Kinds: ``device`` (a device's change set), ``server`` (the server's own ops, sealed by
the server to itself), ``release`` (ops released from quarantine by an administrator).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

GENESIS = "0" * 64


def link(prev_hash: str, kind: str, device: str, device_seq: int, digest: str) -> str:
    return hashlib.sha256(f"{prev_hash}|{kind}|{device}|{device_seq}|{digest}".encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    ledger_seq: int
    received_ms: int
    kind: str
    device: str
    device_seq: int
    sha256: str
    prev_hash: str
    hash: str
    envelope: bytes


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    row = conn.execute("SELECT ledger_seq, hash FROM ledger ORDER BY ledger_seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def append(conn: sqlite3.Connection, *, kind: str, device: str, device_seq: int, envelope: bytes, received_ms: int) -> int:
    """Append one envelope (inside the caller's transaction); returns its ledger_seq."""
    last_seq, prev = head(conn)
    digest = hashlib.sha256(envelope).hexdigest()
    h = link(prev, kind, device, device_seq, digest)
    conn.execute(
        "INSERT INTO ledger(ledger_seq, received_ms, kind, device, device_seq, sha256, prev_hash, hash, envelope) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (last_seq + 1, received_ms, kind, device, device_seq, digest, prev, h, envelope),
    )
    return last_seq + 1


def find(conn: sqlite3.Connection, device: str, device_seq: int) -> Entry | None:
    row = conn.execute(
        "SELECT * FROM ledger WHERE kind='device' AND device=? AND device_seq=?", (device, device_seq)
    ).fetchone()
    return Entry(*row) if row else None


def entries(conn: sqlite3.Connection, after: int = 0) -> Iterator[Entry]:
    cur = conn.execute(
        "SELECT ledger_seq, received_ms, kind, device, device_seq, sha256, prev_hash, hash, envelope "
        "FROM ledger WHERE ledger_seq > ? ORDER BY ledger_seq",
        (after,),
    )
    for row in cur:
        yield Entry(*row)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    first_bad: int | None = None
    reason: str | None = None


def verify_chain(conn: sqlite3.Connection, *, progress: Callable[[str, int, int], None] | None = None) -> ChainReport:
    """Walk the chain; the first entry whose digest, link or numbering fails, and why."""
    prev = GENESIS
    expected_seq = 1
    n = 0
    total = head(conn)[0] if progress is not None else 0
    for e in entries(conn):
        n += 1
        if progress is not None and n % 1000 == 0:
            progress("chain", n, total)
        if e.ledger_seq != expected_seq:
            return ChainReport(False, n, e.ledger_seq, f"entry numbering jumps to {e.ledger_seq}")
        if hashlib.sha256(e.envelope).hexdigest() != e.sha256:
            return ChainReport(False, n, e.ledger_seq, "the envelope's bytes do not match its recorded digest")
        if e.prev_hash != prev:
            return ChainReport(False, n, e.ledger_seq, "prev_hash does not match the previous entry's hash")
        if link(prev, e.kind, e.device, e.device_seq, e.sha256) != e.hash:
            return ChainReport(False, n, e.ledger_seq, "the entry's hash does not match its contents")
        prev = e.hash
        expected_seq += 1
    if progress is not None:
        progress("chain", n, total)
    return ChainReport(True, n)
