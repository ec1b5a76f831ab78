"""Digests of an op set, so two replicas can tell cheaply whether they hold the same ops.

A digest is computed over (op id, stamp) pairs only, never over values: a laptop that
stores personal fields encrypted and the server that stores them plain agree on it.
It is order-independent (XOR of SHA-256 of each pair) and carries the count::

    "1234:5f0c...e1"   count, then 64 hex

``bucket_digests`` splits the same by stamp hour so two replicas that differ can find
where without sending their op lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

BUCKET_MS = 3_600_000  # one hour of stamp time


def _pair_hash(op_id: str, stamp: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{op_id}@{stamp}".encode()).digest(), "big")


def op_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """The digest of a set of (op_id, stamp) pairs."""
    acc = 0
    n = 0
    for op_id, stamp in pairs:
        acc ^= _pair_hash(op_id, stamp)
        n += 1
    return f"{n}:{acc:064x}"


def bucket_digests(
    pairs: Iterable[tuple[str, str]], bucket_ms: int = BUCKET_MS
) -> dict[int, str]:
    """Digest per stamp bucket: {bucket start ms: digest}."""
    groups: dict[int, list[tuple[str, str]]] = {}
    for op_id, stamp in pairs:
        start = int(stamp[:18]) // bucket_ms * bucket_ms
        groups.setdefault(start, []).append((op_id, stamp))
    return {k: op_digest(v) for k, v in sorted(groups.items())}


def diff_buckets(mine: dict[int, str], theirs: dict[int, str]) -> list[int]:
    """The buckets whose digests differ (present on one side only, or unequal)."""
    return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
