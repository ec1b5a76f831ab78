"""The merge rules: fold one entity's ops, in stamp order, into its state.

Pure: no I/O, no clock, no randomness. Every replica that holds the same ops of an
entity gets the same state, whatever order the ops arrived in, because the state is a
function of the *set* of ops folded in (stamp, op_id) order. ``conflict.replica`` keeps
that state (``EntityFold.to_state``) on the row and resumes from it when a new op sorts
after everything folded so far; an op that sorts earlier makes it fold the entity again.

The rules (``docs/oplog.md`` states them as the contract):

* **Fields: last writer wins, losers kept.** The highest stamp wins. A write whose
  ``base`` (the stamp its author saw) is older than the current winner's, and whose value
  differs, is a *concurrent edit*: a conflict is opened holding both op ids (or the
  op joins the field's open conflict). The values stay in the op log.
* **Sets: add wins.** ``add`` tags each item with its op id; ``remove`` kills only the
  tags its author observed, so an add the remover had not seen survives.
* **Lifecycle.** Transition ops go through ``schema.lifecycle.apply_transition``; one
  the machine refuses where it lands is kept, not applied, and opens an
  ``invalid_transition`` conflict with the reason.
* **Void.** The first void (in stamp order) marks the entity voided with its reason.
  Nothing is deleted.
* **Resolve.** Closes every open conflict whose op ids it names (all of them), then,
  with a ``field``, writes the chosen value like a ``set``.
* A ``create`` is a write of all its fields with no base; the row exists once a create
  has been folded. Kinds from a newer schema are ignored by the fold (kept in the log).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from schema.entities import CASE_LIFECYCLE_COLUMNS, ENTITIES, EntitySpec
from schema.enums import ConflictKind, OpKind
from schema.errors import TransitionRefused
from schema.lifecycle import apply_transition, initial_lifecycle
from schema.ops import Op


def conflict_id(*parts: str) -> str:
    """A conflict's id, derived from what opened it, so every replica names it alike."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def sort_key(op: Op) -> tuple[str, str]:
    return (op.stamp, op.op_id)


class EntityFold:
    """The folded state of one entity; ``apply`` ops in ``sort_key`` order."""

    __slots__ = (
        "spec", "entity_id", "case_id", "exists", "values", "win", "tags", "dead",
        "void", "life", "conflicts", "max", "created",
    )

    def __init__(self, entity: str, entity_id: str) -> None:
        self.spec: EntitySpec = ENTITIES[entity]
        self.entity_id = entity_id
        self.case_id: str | None = None
        self.exists = False
        self.values: dict[str, Any] = {}
        self.win: dict[str, list[str]] = {}  # field -> [stamp, op_id] of the winner
        self.tags: dict[str, dict[str, list[str]]] = {}  # set field -> item -> add op ids
        self.dead: dict[str, dict[str, list[str]]] = {}  # set field -> item -> removed tags
        self.void: dict[str, str] | None = None
        self.life: dict[str, Any] | None = None
        self.conflicts: list[dict[str, Any]] = []
        self.max: tuple[str, str] | None = None  # sort key of the last op folded
        self.created: str | None = None

    # ---- state in and out (what the replica stores on the row) ----

    def to_state(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "exists": self.exists,
            "values": self.values,
            "win": self.win,
            "tags": self.tags,
            "dead": self.dead,
            "void": self.void,
            "life": self.life,
            "conflicts": self.conflicts,
            "max": list(self.max) if self.max else None,
            "created": self.created,
        }

    @classmethod
    def from_state(cls, entity: str, entity_id: str, state: dict[str, Any]) -> EntityFold:
        f = cls(entity, entity_id)
        f.case_id = state["case_id"]
        f.exists = state["exists"]
        f.values = state["values"]
        f.win = state["win"]
        f.tags = state["tags"]
        f.dead = state["dead"]
        f.void = state["void"]
        f.life = state["life"]
        f.conflicts = state["conflicts"]
        f.max = tuple(state["max"]) if state["max"] else None
        f.created = state["created"]
        return f

    # ---- folding ----

    def can_append(self, op: Op) -> bool:
        """True when ``op`` sorts after every op folded so far (no refold needed).

        A case state stored before the lifecycle kept ``decided_level`` is folded again, so
        a deadline escalation lands alike on every replica.
        """
        if self.life is not None and "decided_level" not in self.life:
            return False
        return self.max is None or sort_key(op) > self.max

    def apply(self, op: Op) -> None:
        """Fold one op. The caller keeps (stamp, op_id) order; see ``fold``."""
        key = sort_key(op)
        if self.max is not None and key <= self.max:
            raise ValueError("ops must be folded in stamp order; refold the entity")
        self.max = key
        if self.case_id is None:
            self.case_id = op.case_id
        kind = op.kind
        if kind == OpKind.CREATE:
            self._create(op)
        elif kind == OpKind.SET:
            for name, value in op.values.items():
                self._write(name, value, op.base.get(name), op)
        elif kind == OpKind.TRANSITION:
            self._transition(op)
        elif kind == OpKind.VOID:
            if self.void is None:
                self.void = {"reason": op.values["reason"], "op_id": op.op_id, "stamp": op.stamp}
        elif kind == OpKind.RESOLVE:
            self._resolve(op)
        elif kind == OpKind.ADD:
            name = op.values["field"]
            items = self.tags.setdefault(name, {})
            for item in op.values["items"]:
                items.setdefault(item, []).append(op.op_id)
            self._refresh_set(name)
        elif kind == OpKind.REMOVE:
            name = op.values["field"]
            dead = self.dead.setdefault(name, {})
            observed = op.values["observed"]
            for item in op.values["items"]:
                killed = dead.setdefault(item, [])
                killed.extend(t for t in observed if t not in killed)
                killed.sort()
            self._refresh_set(name)
        # any other kind comes from a newer schema: kept in the log, not folded

    def _create(self, op: Op) -> None:
        for name, value in op.values.items():
            fs = self.spec.field_map.get(name)
            if fs is not None and (fs.create_only or (fs.immutable and self.exists)):
                continue  # lifecycle fields, and fields fixed by the first create
            if fs is not None and fs.kind == "set":
                items = self.tags.setdefault(name, {})
                for item in value:
                    items.setdefault(item, []).append(op.op_id)
                self._refresh_set(name)
            else:
                self._write(name, value, None, op)
        if not self.exists:
            self.exists = True
            self.created = op.stamp
            if self.spec.name == "case":
                self.life = initial_lifecycle(
                    op.values["level"], op.values["node"], op.occurred_at
                )

    def _write(self, name: str, value: Any, base: str | None, op: Op) -> None:
        current = self.win.get(name)
        if current is not None:
            cur_stamp, cur_op = current
            unseen = base is None or base < cur_stamp
            if unseen and self.values.get(name) != value:
                self._concurrent(name, cur_op, op)
        self.values[name] = value
        self.win[name] = [op.stamp, op.op_id]

    def _open_conflict(self, name: str) -> dict[str, Any] | None:
        for c in self.conflicts:
            if c["field"] == name and c["status"] == "open" and c["kind"] == ConflictKind.CONCURRENT_EDIT:
                return c
        return None

    def _concurrent(self, name: str, winner_op: str, op: Op) -> None:
        open_c = self._open_conflict(name)
        if open_c is not None:
            for oid in (winner_op, op.op_id):
                if oid not in open_c["op_ids"]:
                    open_c["op_ids"].append(oid)
            return
        self.conflicts.append(
            {
                "id": conflict_id(self.spec.name, self.entity_id, name, winner_op, op.op_id),
                "field": name,
                "kind": ConflictKind.CONCURRENT_EDIT.value,
                "op_ids": [winner_op, op.op_id],
                "status": "open",
                "resolved_by": None,
                "reason": None,
                "opened_stamp": op.stamp,
            }
        )

    def _transition(self, op: Op) -> None:
        try:
            if self.life is None:
                raise TransitionRefused(
                    "the case does not exist yet", code="transition.case_not_created"
                )
            self.life = apply_transition(
                self.life, op.values, op.occurred_at, voided=self.void is not None
            )
        except TransitionRefused as refused:
            self.conflicts.append(
                {
                    "id": conflict_id(self.spec.name, self.entity_id, "transition", op.op_id),
                    "field": "state",
                    "kind": ConflictKind.INVALID_TRANSITION.value,
                    "op_ids": [op.op_id],
                    "status": "open",
                    "resolved_by": None,
                    "reason": refused.code,
                    "opened_stamp": op.stamp,
                }
            )

    def _resolve(self, op: Op) -> None:
        named = set(op.values["resolves"])
        for c in self.conflicts:
            if c["status"] == "open" and named.issuperset(c["op_ids"]):
                c["status"] = "resolved"
                c["resolved_by"] = op.op_id
        name = op.values.get("field")
        if name is not None:
            self._write(name, op.values["value"], op.base.get(name), op)

    def _refresh_set(self, name: str) -> None:
        dead = self.dead.get(name, {})
        live = [
            item
            for item, tags in self.tags.get(name, {}).items()
            if any(t not in dead.get(item, ()) for t in tags)
        ]
        self.values[name] = sorted(live)

    # ---- what the replica writes ----

    def row(self) -> dict[str, Any] | None:
        """The materialised row, or None while no create has been folded."""
        if not self.exists:
            return None
        row: dict[str, Any] = {"id": self.entity_id, "case_id": self.case_id}
        known = self.spec.field_map
        for fs in self.spec.fields:
            if fs.create_only:
                continue
            value = self.values.get(fs.name)
            if fs.kind == "set":
                value = json.dumps(value or [], ensure_ascii=False)
            elif fs.kind == "bool" and value is not None:
                value = int(value)
            row[fs.name] = value
        if self.life is not None:
            for col in CASE_LIFECYCLE_COLUMNS:
                row[col] = self.life[col]
        extra = {k: v for k, v in self.values.items() if k not in known}
        row["voided"] = 1 if self.void else 0
        row["void_reason"] = self.void["reason"] if self.void else None
        row["created_stamp"] = self.created
        row["updated_stamp"] = self.max[0] if self.max else None
        row["open_conflicts"] = sum(1 for c in self.conflicts if c["status"] == "open")
        row["extra"] = json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else None
        row["fold"] = json.dumps(self.to_state(), sort_keys=True, ensure_ascii=False)
        return row

    def conflict_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "id": c["id"],
                "entity": self.spec.name,
                "entity_id": self.entity_id,
                "case_id": self.case_id,
                "field": c["field"],
                "kind": c["kind"],
                "op_ids": json.dumps(c["op_ids"]),
                "status": c["status"],
                "resolved_by": c["resolved_by"],
                "reason": c["reason"],
                "opened_stamp": c["opened_stamp"],
            }
            for c in self.conflicts
        ]


def fold(entity: str, entity_id: str, ops: Iterable[Op]) -> EntityFold:
    """Fold all of one entity's ops from nothing; the order they come in does not matter."""
    f = EntityFold(entity, entity_id)
    for op in sorted(ops, key=sort_key):
        f.apply(op)
    return f
