"""The encoding of a hybrid logical clock stamp (what an op's ``stamp`` is).

A stamp is wall milliseconds, a counter and a node id, encoded with fixed widths so
that comparing the text compares the clock::

    000001763787000123.00000.a1b2c3d4e5f60718
    └ 18-digit ms ──────┘ └5┘ └ node: 16 [0-9a-z]┘

The clock's behaviour (tick, receive, drift) is in ``conflict.hlc``; this module only
says what a stamp looks like, so that ``schema`` can validate ops without ``conflict``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from schema.errors import StampInvalid

MS_DIGITS = 18
COUNTER_DIGITS = 5
MAX_COUNTER = 10**COUNTER_DIGITS - 1
NODE_RE = re.compile(r"[0-9a-z]{16}")
STAMP_RE = re.compile(r"([0-9]{18})\.([0-9]{5})\.([0-9a-z]{16})")


class Stamp(NamedTuple):
    """A decoded stamp; tuples compare as the clock does."""

    ms: int
    counter: int
    node: str

    def encode(self) -> str:
        return f"{self.ms:0{MS_DIGITS}d}.{self.counter:0{COUNTER_DIGITS}d}.{self.node}"


def encode(ms: int, counter: int, node: str) -> str:
    if not (0 <= ms < 10**MS_DIGITS) or not (0 <= counter <= MAX_COUNTER):
        raise StampInvalid(f"stamp out of range: ms={ms} counter={counter}")
    if not NODE_RE.fullmatch(node):
        raise StampInvalid(f"node id must be 16 characters of [0-9a-z], got {node!r}")
    return Stamp(ms, counter, node).encode()


def parse(text: object) -> Stamp:
    """Decode a stamp, or raise StampInvalid (code ``op.bad_stamp``)."""
    if not isinstance(text, str):
        raise StampInvalid(f"stamp must be text, got {type(text).__name__}")
    m = STAMP_RE.fullmatch(text)
    if m is None:
        raise StampInvalid(f"unparseable stamp {text[:60]!r}", details={"stamp": text[:60]})
    return Stamp(int(m.group(1)), int(m.group(2)), m.group(3))


def is_stamp(text: object) -> bool:
    return isinstance(text, str) and STAMP_RE.fullmatch(text) is not None
