"""The hybrid logical clock, pure: time and node id come in as arguments.

A stamp (``schema.stamp``) is (wall ms, counter, node). ``tick`` makes the stamp of a
local event; ``receive`` merges a stamp seen from elsewhere. A device adds its known
offset to the server's clock to the wall time it passes in (``wall_ms``), so its stamps
follow the server's time after each sync.

A remote stamp more than ``max_ahead_ms`` ahead of our wall time is *kept* (the op is
not refused) but *flagged*, and it does not drag our clock forward: one laptop with its
clock set a year ahead must not push every stamp in the county into next year.
"""

from __future__ import annotations

from schema.stamp import MAX_COUNTER, Stamp, encode, parse

DEFAULT_MAX_AHEAD_MS = 10 * 60 * 1000  # ten minutes

__all__ = ["Stamp", "tick", "receive", "is_far_ahead", "encode", "parse", "DEFAULT_MAX_AHEAD_MS"]


def _bump(ms: int, counter: int, node: str) -> Stamp:
    if counter > MAX_COUNTER:  # more than 10^5 events in one ms: borrow the next ms
        return Stamp(ms + 1, 0, node)
    return Stamp(ms, counter, node)


def tick(last: Stamp | None, wall_ms: int, node: str) -> Stamp:
    """The stamp of a new local event after ``last`` at wall time ``wall_ms``."""
    if last is None or wall_ms > last.ms:
        return Stamp(wall_ms, 0, node)
    return _bump(last.ms, last.counter + 1, node)


def is_far_ahead(stamp: Stamp, wall_ms: int, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> bool:
    """True when ``stamp`` lies more than ``max_ahead_ms`` ahead of ``wall_ms``."""
    return stamp.ms > wall_ms + max_ahead_ms


def receive(
    last: Stamp | None,
    remote: Stamp,
    wall_ms: int,
    node: str,
    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
) -> tuple[Stamp, bool]:
    """Merge a remote stamp into our clock: (our new stamp, flagged far-ahead)."""
    if is_far_ahead(remote, wall_ms, max_ahead_ms):
        return tick(last, wall_ms, node), True
    last_ms = last.ms if last is not None else -1
    last_c = last.counter if last is not None else -1
    ms = max(last_ms, remote.ms, wall_ms)
    if ms == last_ms and ms == remote.ms:
        counter = max(last_c, remote.counter) + 1
    elif ms == last_ms:
        counter = last_c + 1
    elif ms == remote.ms:
        counter = remote.counter + 1
    else:
        counter = 0
    return _bump(ms, counter, node), False
