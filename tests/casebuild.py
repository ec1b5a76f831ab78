"""Build a case's ops at chosen moments, for deadline tests (real Op objects, valid ones).

    b = CaseBuilder(node="330102101", level="village")
    b.create("2026-09-28T10:00:00+08:00")                 # received and recorded then
    b.transition("accept", "2026-09-29T09:00:00+08:00")
    b.notice("acceptance", "2026-09-29", at="2026-09-29T09:05:00+08:00")
    case_status(b.case_id, b.ops, rules, ms("2026-10-20T00:00:00+08:00"))

Every op is stamped at its moment (the HLC stamp's milliseconds) by ``device``; pass
``skew_ms`` to write ``occurred_at`` from a wall clock that is off by that much.
"""

from __future__ import annotations

import itertools
from typing import Any

from schema.obligations import SweepContext, iso, ms_of
from schema.ops import SCHEMA_VERSION, Op
from schema.stamp import encode
from schema.validation import check_op

_ids = itertools.count(1)


def new_id() -> str:
    return f"{next(_ids):032x}"


def ms(text: str) -> int:
    return ms_of(text)


class CaseBuilder:
    def __init__(self, *, node: str = "330102101", level: str = "village", device: str = "dev0000000000001",
                 author: str = "li", category: str = "complaint", skew_ms: int = 0) -> None:
        self.node = node
        self.level = level
        self.device = device
        self.author = author
        self.category = category
        self.skew_ms = skew_ms
        self.case_id = new_id()
        self.ops: list[Op] = []
        self._counter = itertools.count()

    def op(self, at: str | int, entity: str, entity_id: str, kind: str, values: dict[str, Any],
           base: dict[str, str | None] | None = None, *, device: str | None = None) -> Op:
        t = at if isinstance(at, int) else ms(at)
        dev = device or self.device
        op = Op(op_id=new_id(), stamp=encode(t, next(self._counter) % 100000, dev), device=dev, author=self.author,
                entity=entity, entity_id=entity_id, case_id=self.case_id, kind=kind, values=values,
                base=base or {}, occurred_at=iso(t + self.skew_ms), schema_version=SCHEMA_VERSION)
        check_op(op)
        self.ops.append(op)
        return op

    def create(self, at: str, *, received_at: str | None = None, **values: Any) -> Op:
        v = {"case_no": f"C-{self.case_id[-6:]}", "title": "邻里纠纷", "category": self.category,
             "subject": "neighbour", "channel": "visit", "origin_node": self.node,
             "received_at": received_at or iso(ms(at) + self.skew_ms), "first_receiver": self.author,
             "level": self.level, "node": self.node}
        v.update(values)
        return self.op(at, "case", self.case_id, "create", v)

    def transition(self, action: str, at: str, *, acting_level: str | None = None, device: str | None = None,
                   **values: Any) -> Op:
        v = {"action": action, "acting_level": acting_level or self.level, **values}
        if action in ("escalate", "route") and "to_node" not in v:
            v["to_node"] = self.node[:-3] if action == "escalate" else self.node
        if action.startswith("decide") and "decision" not in v:
            v["decision"] = "support"
        return self.op(at, "case", self.case_id, "transition", v, device=device)

    def notice(self, kind: str, served_at: str, *, at: str) -> Op:
        return self.op(at, "notice", new_id(), "create", {"kind": kind, "served_at": served_at})

    def visit(self, kind: str, visited_at: str, *, at: str | None = None) -> Op:
        return self.op(at or visited_at, "visit", new_id(), "create",
                       {"kind": kind, "visited_at": visited_at, "visitor": self.author})

    def mediation(self, outcome: str, held_at: str, *, at: str | None = None, **values: Any) -> Op:
        v = {"kind": "people", "mediator": self.author, "held_at": held_at, "outcome": outcome}
        if outcome == "agreement":
            v["agreement_form"] = "written"
        v.update(values)
        return self.op(at or held_at, "mediation", new_id(), "create", v)

    def leader(self, assigned_at: str, *, at: str, progress: str | None = None) -> str:
        eid = new_id()
        v = {"leader": "王县长", "assigned_at": assigned_at, "handler": "张三"}
        if progress:
            v["progress"] = progress
        self.op(at, "leader_assignment", eid, "create", v)
        return eid

    def progress(self, assignment: str, text: str, *, at: str) -> Op:
        return self.op(at, "leader_assignment", assignment, "set", {"progress": text}, {"progress": None})

    def void(self, at: str, reason: str = "录入错误") -> Op:
        return self.op(at, "case", self.case_id, "void", {"reason": reason})

    def tag(self, at: str, *items: str) -> Op:
        return self.op(at, "case", self.case_id, "add", {"field": "tags", "items": list(items)})


# ---- the county server's side, for sweep tests ----

SERVER_NODE = "cty0000000000001"  # the county server's node id (its sweep ops' device)


def parent_of(node: str) -> str | None:
    """Village 330102101 -> township 330102 -> county 330100 -> none (a toy tree)."""
    if len(node) == 9:
        return node[:6]
    if len(node) == 6 and not node.endswith("00"):
        return node[:4] + "00"
    return None


def sweep_context(*, last_contact: str | int | None = None,
                  received_ms: dict[str, int] | None = None) -> SweepContext:
    """What the county server knows beyond the ops: its node, the node tree, the last sync, receipt times."""
    lc = ms(last_contact) if isinstance(last_contact, str) else last_contact
    return SweepContext(SERVER_NODE, parent_of, last_contact_ms=lc, received_ms=received_ms or {})


def new_ops(ops: list[Op], emitted: list[Op]) -> list[Op]:
    """The emitted ops the server would write: those whose ids it does not hold yet."""
    have = {o.op_id for o in ops}
    return [o for o in emitted if o.op_id not in have]
