"""The conflict queue and its resolution by a coordinator.

A conflict (docs/oplog.md) is either a concurrent edit of one field (two or more values,
each from an op) or a transition the state machine refused where it landed. The
coordinator picks one of the values, or writes a merged one, or (for a refused step)
acknowledges it. The resolution is a ``resolve`` op authored by the county server
(``SyncService.author``: sealed to the server, appended to the ledger, merged), naming
all the conflict's op ids, with ``field`` and ``value`` for an edit and ``base`` the stamp
of the value the coordinator saw; it reaches the laptops with their next pull.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from schema.entities import ENTITIES
from schema.errors import OpInvalid
from schema.obligations import iso
from schema.ops import Op
from sync_server.errors import BadRequest, NotFound
from sync_server.service import SyncService
from sync_server.web.privacy import ACCUSATION, CASE_HIDDEN, PARTY_IDENTITY, Viewer

MERGEABLE_KINDS = frozenset({"str", "text", "int", "enum", "date", "datetime", "phone", "idnum", "bool"})
QUEUE_SQL = (
    "SELECT f.id, f.entity, f.entity_id, f.case_id, f.field, f.kind, f.op_ids, f.status, f.reason, f.opened_stamp, "
    "c.case_no, c.category, c.origin_node, c.title FROM conflicts f LEFT JOIN cases c ON c.id = f.case_id "
    "WHERE f.status = 'open'"
)
QUEUE_COLUMNS = ("id", "entity", "entity_id", "case_id", "field", "kind", "op_ids", "status", "reason",
                 "opened_stamp", "case_no", "category", "origin_node", "title")


def hides(conflict: Mapping[str, Any], party_role: str | None, viewer: Viewer) -> bool:
    """True when the conflict's values would show a reporter's identity this viewer may not see."""
    if conflict.get("category") != ACCUSATION or viewer.confidential:
        return False
    entity, name = conflict["entity"], conflict["field"]
    if entity == "case":
        return name in CASE_HIDDEN
    if entity == "party":
        return name in PARTY_IDENTITY and party_role != "respondent"
    spec = ENTITIES.get(entity)
    fs = spec.field_map.get(name) if spec else None
    return bool(fs and fs.personal)


def open_conflicts(conn: Any, *, case_id: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    q = QUEUE_SQL + (" AND f.case_id = ?" if case_id else "") + " ORDER BY f.opened_stamp, f.id LIMIT ?"
    params: list[Any] = [case_id] if case_id else []
    rows = []
    for r in conn.execute(q, [*params, limit]):
        d = dict(zip(QUEUE_COLUMNS, r, strict=True))
        d["op_ids"] = json.loads(d["op_ids"])
        rows.append(d)
    return rows


def count_open(conn: Any) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM conflicts WHERE status='open'").fetchone()[0])


def ops_by_id(conn: Any, op_ids: list[str]) -> dict[str, Op]:
    from conflict.replica import OP_COLUMNS, row_to_op

    out: dict[str, Op] = {}
    for i in range(0, len(op_ids), 500):
        chunk = op_ids[i : i + 500]
        q = f"SELECT {', '.join(OP_COLUMNS)} FROM ops WHERE op_id IN ({', '.join('?' * len(chunk))})"
        for row in conn.execute(q, chunk):
            op = row_to_op(row)
            out[op.op_id] = op
    return out


def coerce(entity: str, name: str, text: str) -> Any:
    """A merged value typed by the coordinator, as the field's type (BadRequest if it is not)."""
    spec = ENTITIES[entity].field_map.get(name)
    if spec is None or spec.kind not in MERGEABLE_KINDS:
        raise BadRequest("this field takes no written value", code="web.not_mergeable")
    text = text.strip()
    if spec.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise BadRequest("a whole number is needed", code="web.bad_value") from None
    if spec.kind == "bool":
        return text.lower() in ("1", "true", "yes", "是")
    if not text and spec.required:
        raise BadRequest("a value is needed", code="web.bad_value")
    return text or None


def resolve(svc: SyncService, conflict_id: str, *, choice: str, merged: str, username: str) -> Op:
    """Write the coordinator's resolution as a server ``resolve`` op; returns the op."""
    store = svc.store
    rows = store.replica.conflicts(status="open")
    found = [c for c in rows if c["id"] == conflict_id]
    if not found:
        raise NotFound("the conflict is no longer open", code="web.conflict_closed")
    c = found[0]
    values: dict[str, Any] = {"resolves": list(c["op_ids"])}
    base: dict[str, Any] = {}
    if c["kind"] == "concurrent_edit":
        if choice == "merged":
            value = coerce(c["entity"], c["field"], merged)
        else:
            ops = ops_by_id(store.conn, list(c["op_ids"]))
            op = ops.get(choice)
            if op is None or choice not in c["op_ids"]:
                raise BadRequest("choose one of the values, or write a merged one", code="web.no_choice")
            value = op.values.get("value") if op.kind == "resolve" else op.values.get(c["field"])
        state = store.replica.fold_state(c["entity"], c["entity_id"]) or {"win": {}}
        values.update(field=c["field"], value=value)
        base = {c["field"]: (state["win"].get(c["field"]) or [None])[0]}
    spec = {"entity": c["entity"], "entity_id": c["entity_id"], "case_id": c["case_id"], "kind": "resolve",
            "values": values, "base": base}
    try:
        (op,) = svc.author([spec], author=username, occurred_at=iso(store.now_ms()))
    except OpInvalid as exc:
        raise BadRequest(exc.message, code="web.bad_value", details=exc.details) from None
    return op
