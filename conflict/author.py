"""Making ops, pure: the clock reading, the node and the new op id come in as arguments.

``make_op`` stamps an op after ``last`` (the device's previous stamp) and returns the op
and the stamp to keep. Callers (the field client, the server's sweep, tests) supply the
wall time (already corrected by the server offset) and a fresh random op id.
"""

from __future__ import annotations

from typing import Any

from conflict.hlc import Stamp, tick
from schema.ops import SCHEMA_VERSION, Op


def make_op(
    *,
    last: Stamp | None,
    wall_ms: int,
    device: str,
    author: str,
    op_id: str,
    entity: str,
    entity_id: str,
    case_id: str,
    kind: str,
    values: dict[str, Any],
    occurred_at: str,
    base: dict[str, str | None] | None = None,
) -> tuple[Op, Stamp]:
    """A new op stamped after ``last``; returns (op, its stamp)."""
    stamp = tick(last, wall_ms, device)
    op = Op(
        op_id=op_id,
        stamp=stamp.encode(),
        device=device,
        author=author,
        entity=entity,
        entity_id=entity_id,
        case_id=case_id,
        kind=kind,
        values=values,
        base=base or {},
        occurred_at=occurred_at,
        schema_version=SCHEMA_VERSION,
    )
    return op, stamp
