"""The op and the change set: the units of the op log and of sync.

An op is one change a person (or the server) made, made offline, never edited after.
Its fields (``docs/oplog.md`` is the contract)::

    op_id           32 lowercase hex, made by the author (random)
    stamp           HLC stamp, ``conflict.hlc`` encoding; its node is the author device
    device          author device id (16 chars [0-9a-z]); equals the stamp's node
    author          the person who acted (login name)
    entity          entity type (``schema.entities.ENTITIES``)
    entity_id       32 lowercase hex
    case_id         the case the entity belongs to (a case's own id for a case)
    kind            ``schema.enums.OpKind``
    values          what the op writes (by kind, see ``schema.validation``)
    base            for ``set``/``resolve``: field -> the stamp the author saw, or null
    occurred_at     the author device's wall time, ISO 8601 with offset (for deadlines)
    schema_version  the schema version the author wrote with

A change set is what a device sends in one envelope: its id, a per-device sequence
number, the ops and the schema version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1

OP_FIELDS: tuple[str, ...] = (
    "op_id",
    "stamp",
    "device",
    "author",
    "entity",
    "entity_id",
    "case_id",
    "kind",
    "values",
    "base",
    "occurred_at",
    "schema_version",
)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no spaces, UTF-8 characters kept: equal data, equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Op:
    """One change, immutable. Build it with ``schema.validation.parse_op`` from outside data."""

    op_id: str
    stamp: str
    device: str
    author: str
    entity: str
    entity_id: str
    case_id: str
    kind: str
    values: dict[str, Any] = field(default_factory=dict)
    base: dict[str, str | None] = field(default_factory=dict)
    occurred_at: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OP_FIELDS}

    def content_key(self) -> str:
        """Canonical text of the whole op; two ops with one id must have the same key."""
        return canonical_json(self.to_dict())

    @property
    def entity_key(self) -> tuple[str, str]:
        return (self.entity, self.entity_id)


@dataclass(frozen=True)
class ChangeSet:
    """What one envelope carries: a device's ops under its per-device sequence number."""

    device: str
    seq: int
    ops: tuple[Op, ...]
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "seq": self.seq,
            "schema_version": self.schema_version,
            "ops": [op.to_dict() for op in self.ops],
        }
