"""Planning a merge, as a value: which ops of a change set apply and which are held, and why.

The plan is computed from the change set, the sending device and what the server knows
of each case; executing it (ledger append, quarantine, apply) is the service's job, in
one transaction. The live merge and ``rebuild`` both call ``plan_changeset``, so a state
rebuilt from the ledger takes the same decisions as the live one.

Hold codes (docs/sync.md "Scope"):
  ``op.*``                 the op failed validation (its own code)
  ``sync.foreign_author``  the op names another device as its author
  ``sync.acting_level``    a transition acts at a level other than the device's
  ``sync.server_only``     the op writes an entity only the server writes (``alert``)
  ``sync.out_of_scope``    the case lies outside the device's jurisdiction subtree
  ``sync.case_unknown``    the server has no such case yet (released automatically when
                           the case arrives and lies in scope)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schema.entities import SERVER_ONLY_ENTITIES
from schema.errors import OpInvalid
from schema.ops import ChangeSet, Op

CaseInfo = tuple[str | None, str | None]  # (origin_node, node)


@dataclass
class Plan:
    """The decision for one change set."""

    apply: list[Op] = field(default_factory=list)
    hold: list[tuple[dict[str, Any], str, str]] = field(default_factory=list)  # (raw op, code, message)


def case_info_from_create(op: Op) -> CaseInfo:
    return (op.values.get("origin_node"), op.values.get("node"))


def in_scope(info: CaseInfo, subtree: set[str]) -> bool:
    origin, node = info
    return origin in subtree or node in subtree


def plan_changeset(
    cs: ChangeSet,
    bad: Iterable[tuple[int, OpInvalid]],
    raw_ops: list[Any],
    device: Mapping[str, Any],
    subtree: set[str],
    case_lookup: Callable[[Iterable[str]], dict[str, CaseInfo]],
) -> Plan:
    """Decide, op by op, what merges and what is held (one bad op never blocks the rest).

    An op whose id is already stored with other content is found by the apply itself
    (``Replica.apply_in_transaction(set_aside_reused=True)``) and held by ``hold_reused``.
    """
    plan = Plan()
    for index, err in bad:
        raw = raw_ops[index] if 0 <= index < len(raw_ops) else None
        plan.hold.append((raw if isinstance(raw, dict) else {"raw": str(raw)[:2000]}, err.code, err.message))
    created: dict[str, CaseInfo] = {
        op.case_id: case_info_from_create(op) for op in cs.ops if op.entity == "case" and op.kind == "create"
    }
    # What the server already knows of a case wins over any create in the change set: a
    # create for an existing case cannot move that case into the sender's scope.
    known = case_lookup({op.case_id for op in cs.ops})
    authors = device.get("authors") or {device["device_id"]}  # itself and the devices it replaced
    for op in cs.ops:
        raw = op.to_dict()
        if op.device not in authors:
            plan.hold.append((raw, "sync.foreign_author", f"op authored by {op.device}, sent by {device['device_id']}"))
            continue
        if op.entity in SERVER_ONLY_ENTITIES:
            plan.hold.append((raw, "sync.server_only", f"{op.entity} records are written by the county server only"))
            continue
        if op.kind == "transition" and op.values.get("acting_level") != device["level"]:
            plan.hold.append((raw, "sync.acting_level",
                              f"acts as {op.values.get('acting_level')} from a {device['level']} device"))
            continue
        info = known.get(op.case_id) or created.get(op.case_id)
        if info is None:
            plan.hold.append((raw, "sync.case_unknown", f"the server has no case {op.case_id} yet"))
            continue
        if not in_scope(info, subtree):
            plan.hold.append((raw, "sync.out_of_scope",
                              f"case {op.case_id} lies outside {device['node']}'s jurisdiction"))
            continue
        plan.apply.append(op)
    return plan


def hold_reused(plan: Plan, reused: list[Op]) -> None:
    """Move the ops the apply set aside (id already used with other content) to the held."""
    if not reused:
        return
    out = {id(op) for op in reused}
    plan.apply = [op for op in plan.apply if id(op) not in out]
    plan.hold.extend((op.to_dict(), "op.id_reused", f"op id {op.op_id} is already used with different content")
                     for op in reused)
