"""Build valid ops for tests, the way a device would: one HLC, deterministic op ids.

A ``Device`` is one laptop (or the server): a node id, the last HLC stamp it issued, a
wall clock that advances ``step_ms`` per op unless a test passes ``wall_ms``, and what it
has seen of each entity (the stamp of each field's winner, the add tags of each set
item), so that ``set`` writes the ``base`` its author saw and ``remove`` observes the
tags its author saw. Ops are built with ``conflict.author.make_op``; nothing here
validates them, so tests can also take a valid op apart (``altered``) to make bad input.

    a, b = Device("village"), Device("county", level="county")
    create = a.create_case()
    b.observe(create)
    edit = b.set(create.case_id, {"title": "新标题"})   # base = the create's stamp

Op ids come from a counter hashed with the node id: reproducible, distinct per device.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

from conflict.author import make_op
from conflict.hlc import Stamp, parse, receive
from schema.entities import ENTITIES
from schema.ops import Op

T0 = 1_763_787_000_000  # 2025-11-22 ~12:50 Beijing time, in ms
CHINA = timezone(timedelta(hours=8))
MISSING: Any = object()

CASE_DEFAULTS: dict[str, Any] = {
    "case_no": "V2025-001",
    "title": "宅基地边界纠纷",
    "category": "dispute",
    "subject": "neighbour",
    "channel": "visit",
    "origin_node": "330102001",
    "received_at": "2025-11-22T09:00:00+08:00",
    "first_receiver": "wangli",
}

CHILD_DEFAULTS: dict[str, dict[str, Any]] = {
    "party": {"role": "petitioner", "name": "张三"},
    "visit": {"kind": "home", "visited_at": "2025-11-22T10:00:00+08:00", "visitor": "李四"},
    "mediation": {
        "kind": "people",
        "mediator": "王五",
        "held_at": "2025-11-23T10:00:00+08:00",
        "outcome": "no_agreement",
    },
    "notice": {"kind": "acceptance", "served_at": "2025-11-23"},
    "leader_assignment": {"leader": "赵书记", "assigned_at": "2025-11-24", "handler": "钱六"},
    "evaluation": {"rating": "satisfied", "evaluated_at": "2025-12-01T10:00:00+08:00"},
    "note": {"text": "电话回访,当事人表示满意", "written_at": "2025-11-25T10:00:00+08:00"},
}


def hex_id(*parts: object) -> str:
    """A reproducible 32-hex id from any parts."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def node_id(name: str) -> str:
    """A 16-character node id from a short lowercase name: ``"village"`` -> ``village000000000``."""
    node = (name.lower() + "0" * 16)[:16]
    assert node.isalnum() and node.isascii(), name
    return node


def iso(ms: int) -> str:
    """Wall milliseconds as ISO 8601 with the China offset (an op's ``occurred_at``)."""
    return datetime.fromtimestamp(ms / 1000, CHINA).isoformat(timespec="milliseconds")


def altered(op: Op, **changes: Any) -> dict[str, Any]:
    """The op as a mapping with some keys replaced: a way to make bad input from good."""
    data = op.to_dict()
    data.update(changes)
    return data


class Device:
    """One author device: its clock, its op ids, and its view of what it has seen."""

    def __init__(
        self,
        name: str = "a1b2c3d4e5f60718",
        *,
        author: str = "wangli",
        level: str = "village",
        node: str = "330102001",
        wall_ms: int = T0,
        step_ms: int = 1000,
    ) -> None:
        self.device = node_id(name)
        self.author = author
        self.level = level
        self.node = node
        self.wall_ms = wall_ms
        self.step_ms = step_ms
        self.last: Stamp | None = None
        self.count = 0
        self.seen: dict[tuple[str, str], str] = {}  # (entity_id, field) -> winner stamp seen
        self.tags: dict[tuple[str, str, str], set[str]] = {}  # (entity_id, field, item) -> tags
        self.ops: list[Op] = []  # every op this device made, in order

    # ---- the clock and the view ----

    def new_id(self) -> str:
        self.count += 1
        return hex_id(self.device, self.count)

    def _wall(self, wall_ms: int | None) -> int:
        if wall_ms is not None:
            return wall_ms
        self.wall_ms += self.step_ms
        return self.wall_ms

    def _note(self, op: Op) -> None:
        """Record what ``op`` wrote in this device's view."""

        def see(name: str) -> None:
            key = (op.entity_id, name)
            if key not in self.seen or self.seen[key] < op.stamp:
                self.seen[key] = op.stamp

        spec = ENTITIES[op.entity]
        if op.kind in ("create", "set"):
            for name, value in op.values.items():
                fs = spec.field_map.get(name)
                if fs is not None and fs.kind == "set":
                    for item in value:
                        self.tags.setdefault((op.entity_id, name, item), set()).add(op.op_id)
                elif fs is None or not fs.create_only:
                    see(name)
        elif op.kind == "resolve" and "field" in op.values:
            see(op.values["field"])
        elif op.kind == "add":
            for item in op.values["items"]:
                self.tags.setdefault((op.entity_id, op.values["field"], item), set()).add(op.op_id)
        elif op.kind == "remove":
            for item in op.values["items"]:
                self.tags.get((op.entity_id, op.values["field"], item), set()).difference_update(
                    op.values["observed"]
                )

    def observe(self, *ops: Op, wall_ms: int | None = None) -> None:
        """Receive ops made elsewhere: merge their stamps into the clock, note their writes."""
        wall = self.wall_ms if wall_ms is None else wall_ms
        for op in ops:
            self.last, _ = receive(self.last, parse(op.stamp), wall, self.device)
            self._note(op)

    def base_for(self, entity_id: str, fields: object) -> dict[str, str | None]:
        """The base this device would write: the stamp of each field's winner it has seen."""
        return {name: self.seen.get((entity_id, name)) for name in fields}  # type: ignore[attr-defined]

    def observed_tags(self, entity_id: str, field: str, items: list[str]) -> list[str]:
        return sorted(t for item in items for t in self.tags.get((entity_id, field, item), ()))

    # ---- making ops ----

    def op(
        self,
        *,
        entity: str,
        entity_id: str,
        case_id: str,
        kind: str,
        values: dict[str, Any],
        base: dict[str, str | None] | None = None,
        wall_ms: int | None = None,
        op_id: str | None = None,
    ) -> Op:
        """Any op, stamped after this device's last stamp."""
        wall = self._wall(wall_ms)
        op, self.last = make_op(
            last=self.last,
            wall_ms=wall,
            device=self.device,
            author=self.author,
            op_id=op_id or self.new_id(),
            entity=entity,
            entity_id=entity_id,
            case_id=case_id,
            kind=kind,
            values=values,
            occurred_at=iso(wall),
            base=base,
        )
        self._note(op)
        self.ops.append(op)
        return op

    def create_case(
        self,
        *,
        case_id: str | None = None,
        level: str | None = None,
        node: str | None = None,
        wall_ms: int | None = None,
        **values: Any,
    ) -> Op:
        """A valid case create at this device's level and node; keywords override fields."""
        cid = case_id or self.new_id()
        vals = {**CASE_DEFAULTS, "level": level or self.level, "node": node or self.node, **values}
        return self.op(
            entity="case", entity_id=cid, case_id=cid, kind="create", values=vals, wall_ms=wall_ms
        )

    def child(
        self,
        entity: str,
        case_id: str,
        values: dict[str, Any] | None = None,
        *,
        entity_id: str | None = None,
        wall_ms: int | None = None,
    ) -> Op:
        """A valid create of a case's child entity (party, visit, ...); ``values`` override."""
        vals = {**CHILD_DEFAULTS[entity], **(values or {})}
        return self.op(
            entity=entity,
            entity_id=entity_id or self.new_id(),
            case_id=case_id,
            kind="create",
            values=vals,
            wall_ms=wall_ms,
        )

    def set(
        self,
        case_id: str,
        values: dict[str, Any],
        *,
        entity: str = "case",
        entity_id: str | None = None,
        base: dict[str, str | None] | None = None,
        wall_ms: int | None = None,
    ) -> Op:
        """A field edit; ``base`` defaults to what this device has seen of each field."""
        eid = entity_id or case_id
        return self.op(
            entity=entity,
            entity_id=eid,
            case_id=case_id,
            kind="set",
            values=dict(values),
            base=self.base_for(eid, values) if base is None else base,
            wall_ms=wall_ms,
        )

    def transition(
        self,
        case_id: str,
        action: str,
        *,
        acting_level: str | None = None,
        wall_ms: int | None = None,
        **values: Any,
    ) -> Op:
        """A case transition at this device's level; ``to_node``/``decision`` get defaults."""
        vals: dict[str, Any] = {"action": action, "acting_level": acting_level or self.level}
        if action in ("route", "escalate"):
            vals["to_node"] = "330102"
        if action in ("decide", "decide_review", "decide_rereview"):
            vals["decision"] = "support"
        vals.update(values)
        return self.op(
            entity="case",
            entity_id=case_id,
            case_id=case_id,
            kind="transition",
            values=vals,
            wall_ms=wall_ms,
        )

    def void(
        self,
        case_id: str,
        reason: str = "重复登记",
        *,
        entity: str = "case",
        entity_id: str | None = None,
        wall_ms: int | None = None,
    ) -> Op:
        return self.op(
            entity=entity,
            entity_id=entity_id or case_id,
            case_id=case_id,
            kind="void",
            values={"reason": reason},
            wall_ms=wall_ms,
        )

    def resolve(
        self,
        case_id: str,
        resolves: list[str],
        *,
        field: str | None = None,
        value: Any = MISSING,
        entity: str = "case",
        entity_id: str | None = None,
        base: dict[str, str | None] | None = None,
        wall_ms: int | None = None,
    ) -> Op:
        """Close conflicts naming ``resolves``; with ``field``, write ``value`` too."""
        eid = entity_id or case_id
        vals: dict[str, Any] = {"resolves": list(resolves)}
        b: dict[str, str | None] = {}
        if field is not None:
            vals["field"] = field
            vals["value"] = value
            b = self.base_for(eid, [field]) if base is None else base
        return self.op(
            entity=entity,
            entity_id=eid,
            case_id=case_id,
            kind="resolve",
            values=vals,
            base=b,
            wall_ms=wall_ms,
        )

    def add(
        self,
        case_id: str,
        field: str,
        items: list[str],
        *,
        entity: str = "case",
        entity_id: str | None = None,
        wall_ms: int | None = None,
    ) -> Op:
        return self.op(
            entity=entity,
            entity_id=entity_id or case_id,
            case_id=case_id,
            kind="add",
            values={"field": field, "items": list(items)},
            wall_ms=wall_ms,
        )

    def remove(
        self,
        case_id: str,
        field: str,
        items: list[str],
        *,
        observed: list[str] | None = None,
        entity: str = "case",
        entity_id: str | None = None,
        wall_ms: int | None = None,
    ) -> Op:
        """Remove items; ``observed`` defaults to the add tags this device has seen."""
        eid = entity_id or case_id
        seen = self.observed_tags(eid, field, items) if observed is None else list(observed)
        return self.op(
            entity=entity,
            entity_id=eid,
            case_id=case_id,
            kind="remove",
            values={"field": field, "items": list(items), "observed": seen},
            wall_ms=wall_ms,
        )
