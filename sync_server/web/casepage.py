"""One case as the county sees it: every record, every op from every device, its deadlines.

The timeline lists each op of the case in stamp order with who wrote it (author), on
which device (the laptop's unit and user, or the county server), when it was recorded
(its HLC stamp: the device's clock corrected by its offset to the server), what the
person said happened (``occurred_at``), and when the server received it (its ledger
entry's ``received_ms``, via ``ledger_ops``). Ops that are part of a conflict carry its
mark; a transition the state machine refused says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schema.entities import ENTITIES
from sync_server.errors import NotFound
from sync_server.store import ServerStore
from sync_server.web.caseindex import Nodes
from sync_server.web.i18n import (
    N_,
    _,
    entity_label,
    enum_label,
    field_label,
    rule_label,
    start_event_label,
)
from sync_server.web.present import fmt_dt, fmt_ms, show_value, stamp_ms
from sync_server.web.privacy import Viewer

RECORD_ENTITIES = ("party", "visit", "mediation", "notice", "leader_assignment", "evaluation", "note", "alert")
CASE_FACTS_ONLY = frozenset({"case_no", "origin_node", "first_receiver", "level", "node", "summary", "demands"})

REFUSALS: dict[str, str] = {
    "transition.level_too_low": N_("the case was already handled at a higher level"),
    "transition.not_allowed_from_state": N_("the case's state did not allow it"),
    "transition.already_extended": N_("the case had already been extended once"),
    "transition.already_top_level": N_("the case is already at county level"),
    "transition.case_voided": N_("the case had been voided"),
    "transition.unknown_action": N_("this program does not know that step"),
    "transition.level_changed": N_("the case was no longer at the level the step was meant for"),
    "transition.already_decided": N_("that level had already dealt with the case in time"),
    "transition.case_not_created": N_("the case did not exist yet"),
}

ENDED: dict[str, str] = {
    "escalated": N_("ended: the case was taken up a level"),
    "closed": N_("ended: the case was closed"),
    "extended": N_("ended: extended only after the limit had passed"),
    "reopened": N_("ended: the case was reopened"),
    "voided": N_("ended: the case was voided"),
}

FLAG_TEXT: dict[str, str] = {
    "clock_skew": N_("A device's clock was off; the times typed on it were corrected"),
    "group": N_("Group petition"),
    "repeat": N_("Repeat petition"),
    "reopened": N_("Reopened after closing"),
    "final": N_("Final: the matter is concluded"),
}


def refusal(code: str | None) -> str:
    msgid = REFUSALS.get(str(code))
    return _(msgid) if msgid else str(code or "")


def flag_text(flag: Mapping[str, Any]) -> str:
    msgid = FLAG_TEXT.get(str(flag.get("flag")))
    return _(msgid) if msgid else str(flag.get("flag"))


@dataclass
class DeviceLabels:
    """Who a device is, as people know it: its unit and user; the server is the county server."""

    server_id: str
    devices: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (node, user)
    nodes: Nodes = field(default_factory=Nodes)

    @classmethod
    def load(cls, store: ServerStore, nodes: Nodes) -> DeviceLabels:
        devs = {r[0]: (r[1], r[2] or "") for r in store.conn.execute("SELECT device_id, node, user FROM devices")}
        return cls(store.keys.node_id, devs, nodes)

    def label(self, device: str) -> str:
        if device == self.server_id:
            return _("County server")
        known = self.devices.get(device)
        if known is None:
            return device
        node, user = known
        return f"{self.nodes.name(node)} · {user}" if user else self.nodes.name(node)


def obligation_rows(obligations: list[Mapping[str, Any]], rules: Any) -> list[dict[str, Any]]:
    out = []
    for o in obligations:
        notes = []
        if o.get("late"):
            notes.append(_("late"))
        if o.get("met_at"):
            notes.append(_("done %(when)s", when=fmt_dt(o["met_at"])))
        ended = ENDED.get(str(o.get("ended")))
        if ended:
            notes.append(_(ended))
        if o.get("estimated"):
            notes.append(_("estimated: that year's holidays are not published yet"))
        out.append({**o, "label": rule_label(o.get("rule"), rules), "event": start_event_label(o.get("start_event")),
                    "kind_label": _("Duty of the office") if o.get("kind") == "duty" else _("Window to act"),
                    "state_label": enum_label("obligation_state", o.get("state")), "notes": notes,
                    "due_text": fmt_dt(o.get("due")), "start_text": fmt_dt(o.get("start"))})
    return out


def _rows(store: ServerStore, entity: str, case_id: str) -> list[dict[str, Any]]:
    spec = ENTITIES[entity]
    cur = store.conn.execute(f"SELECT * FROM [{spec.table}] WHERE case_id=? ORDER BY created_stamp, id", (case_id,))
    cols = [d[0] for d in cur.description]
    rows = []
    for r in cur:
        row = dict(zip(cols, r, strict=True))
        row.pop("fold", None)
        for name in spec.set_fields:
            row[name] = json.loads(row[name] or "[]")
        rows.append(row)
    return rows


def shown_record(case: Mapping[str, Any], entity: str, row: Mapping[str, Any], viewer: Viewer) -> dict[str, Any]:
    """A record's fields as this viewer reads them: (name, label, text, wide) in entity order."""
    spec = ENTITIES[entity]
    fields = []
    for fs in spec.fields:
        if fs.create_only or fs.name not in row:
            continue
        raw = viewer.record_value(case, entity, fs.name, row[fs.name], party=row if entity == "party" else None)
        text = show_value(entity, fs.name, raw) if raw != viewer.hidden_text else raw
        if entity == "alert" and fs.name == "start_event":
            text = start_event_label(row[fs.name])
        fields.append({"name": fs.name, "label": field_label(entity, fs.name), "text": text,
                       "wide": fs.kind == "text"})
    return {"id": row["id"], "voided": bool(row.get("voided")), "void_reason": row.get("void_reason"),
            "fields": fields, "values": {f["name"]: f["text"] for f in fields}, "raw": row}


def op_rows(case: Mapping[str, Any], op: Any, viewer: Viewer, parties: Mapping[str, Mapping[str, Any]],
            rules: Any, nodes: Nodes) -> tuple[str, list[tuple[str, str, bool]]]:
    """An op's title and its values as rows (label, text, wide), masked for the viewer."""
    entity, kind, values = op.entity, op.kind, op.values or {}
    party = parties.get(op.entity_id) if entity == "party" else None

    def val(name: str, value: Any) -> str:
        raw = viewer.record_value(case, entity, name, value, party=party)
        return raw if raw == viewer.hidden_text else show_value(entity, name, raw)

    rows: list[tuple[str, str, bool]] = []
    if kind == "transition":
        title = _("Step: %(action)s", action=enum_label("action", values.get("action")))
        rows.append((_("Acting level"), enum_label("level", values.get("acting_level")), False))
        if values.get("to_node"):
            rows.append((_("To unit"), nodes.name(str(values["to_node"])), False))
        if values.get("decision"):
            rows.append((_("Decision"), enum_label("decision", values["decision"]), False))
        if values.get("days"):
            rows.append((_("Days"), str(values["days"]), False))
        if values.get("reason"):
            rows.append((_("Reason"), str(values["reason"]), True))
        if values.get("rule"):
            rows.append((_("Rule"), rule_label(str(values["rule"]), rules), False))
    elif kind == "void":
        title = _("%(what)s voided", what=entity_label(entity))
        rows.append((_("Reason"), str(values.get("reason", "")), True))
    elif kind == "resolve":
        title = _("Conflict resolved (%(what)s)", what=entity_label(entity))
        if values.get("field"):
            rows.append((field_label(entity, values["field"]), val(values["field"], values.get("value")), False))
    elif kind in ("add", "remove"):
        name = str(values.get("field", ""))
        title = (_("Added to %(what)s", what=field_label(entity, name)) if kind == "add"
                 else _("Removed from %(what)s", what=field_label(entity, name)))
        rows.append((field_label(entity, name), val(name, values.get("items", [])), False))
    else:
        if kind == "create":
            title = _("Case registered") if entity == "case" else entity_label(entity)
        else:
            title = _("%(what)s changed", what=entity_label(entity))
        spec = ENTITIES.get(entity)
        order = [f.name for f in spec.fields] if spec else list(values)
        for name in order:
            if name not in values or (entity == "case" and kind == "create" and name in CASE_FACTS_ONLY):
                continue
            text = val(name, values[name])
            if entity == "alert" and name == "rule":
                text = rule_label(str(values[name]), rules)
            elif entity == "alert" and name == "start_event":
                text = start_event_label(str(values[name]))
            if text:
                wide = spec is not None and spec.field_map[name].kind == "text"
                rows.append((field_label(entity, name), text, wide))
    return title, rows


def conflict_values(store: ServerStore, c: Mapping[str, Any], by_id: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The competing values of a conflict, one per op, in the clear (mask before showing)."""
    out = []
    for op_id in c["op_ids"]:
        op = by_id.get(op_id)
        if op is None:
            continue
        if op.kind == "transition":
            value: Any = op.values.get("action")
        elif op.kind == "resolve":
            value = op.values.get("value")
        else:
            value = op.values.get(c["field"])
        out.append({"op_id": op_id, "value": value, "author": op.author, "device": op.device,
                    "stamp": op.stamp, "occurred_at": op.occurred_at, "kind": op.kind,
                    "action": op.values.get("action") if op.kind == "transition" else None})
    return out


def case_detail(store: ServerStore, case_id: str, viewer: Viewer, rules: Any, nodes: Nodes) -> dict[str, Any]:
    """Everything the case page shows, masked for ``viewer``."""
    case = store.replica.get("case", case_id)
    if case is None:
        raise NotFound(_("There is no such case on the county server."), code="web.case_not_found")
    case.pop("fold", None)
    conn = store.conn
    status_row = conn.execute("SELECT colour, overdue, awaiting_sync, backlog, next_due, next_rule, obligations, "
                              "flags, evaluated_ms FROM case_status WHERE case_id=?", (case_id,)).fetchone()
    records = {e: _rows(store, e, case_id) for e in RECORD_ENTITIES}
    parties = {p["id"]: p for p in records["party"]}
    devices = DeviceLabels.load(store, nodes)
    received = store.received_ms(case_id)
    ops = store.replica.ops_for_case(case_id)
    by_id = {op.op_id: op for op in ops}
    conflicts = store.replica.conflicts(case_id=case_id)
    in_conflict: dict[str, list[dict[str, Any]]] = {}
    for c in conflicts:
        for oid in c["op_ids"]:
            in_conflict.setdefault(oid, []).append(c)
        c["values"] = conflict_values(store, c, by_id)
    refused = {c["op_ids"][0]: c["reason"] for c in conflicts if c["kind"] == "invalid_transition"}
    resolved_by = {c["resolved_by"]: c for c in conflicts if c.get("resolved_by")}
    withdrawn = {a["id"] for a in records["alert"] if a.get("withdrawn_at")}

    timeline = []
    for op in ops:
        title, rows = op_rows(case, op, viewer, parties, rules, nodes)
        marks = [{"id": c["id"], "status": c["status"], "kind": c["kind"]} for c in in_conflict.get(op.op_id, [])]
        timeline.append({
            "op_id": op.op_id, "stamp": op.stamp, "recorded": fmt_ms(stamp_ms(op.stamp), seconds=True),
            "occurred": fmt_dt(op.occurred_at), "received": fmt_ms(received.get(op.op_id), seconds=True),
            "author": op.author, "device": op.device, "device_label": devices.label(op.device),
            "by_server": op.device == devices.server_id, "entity": op.entity, "entity_label": entity_label(op.entity),
            "kind": op.kind, "title": title, "rows": rows, "conflicts": marks,
            "refused": refusal(refused[op.op_id]) if op.op_id in refused else None,
            "resolves": resolved_by.get(op.op_id, {}).get("id"),
            "withdrawn": op.entity == "alert" and op.kind == "create" and op.entity_id in withdrawn,
        })

    shown = {e: [shown_record(case, e, r, viewer) for r in rows] for e, rows in records.items()}
    facts = []
    for name in ("case_no", "title", "category", "subject", "channel", "received_at", "first_receiver",
                 "people_count", "tags", "simplified", "not_public", "summary", "demands"):
        raw = viewer.case_value(case, name, case.get(name))
        facts.append({"name": name, "label": field_label("case", name),
                      "text": raw if raw == viewer.hidden_text else show_value("case", name, raw),
                      "wide": name in ("summary", "demands")})
    status: dict[str, Any] = {"swept": status_row is not None, "colour": "green", "overdue": 0,
                              "awaiting_sync": 0, "backlog": 0, "obligations": [], "flags": []}
    if status_row is not None:
        status.update(colour=status_row[0] or "green", overdue=status_row[1], awaiting_sync=status_row[2],
                      backlog=status_row[3], next_due=status_row[4], next_rule=status_row[5],
                      obligations=obligation_rows(json.loads(status_row[6] or "[]"), rules),
                      flags=[flag_text(f) for f in json.loads(status_row[7] or "[]")],
                      evaluated=fmt_ms(status_row[8]))

    related_ids: dict[str, str] = {}
    for a in records["alert"]:
        if a.get("related_case"):
            related_ids.setdefault(a["related_case"], a["kind"])
    if case.get("related_case"):
        related_ids.setdefault(case["related_case"], "related")
    for other, kind in conn.execute("SELECT case_id, kind FROM alerts WHERE related_case=? AND case_id != ?",
                                    (case_id, case_id)):
        related_ids.setdefault(other, kind)
    related = []
    for rid, kind in related_ids.items():
        row = conn.execute("SELECT c.case_no, c.state, c.level, c.origin_node, COALESCE(s.colour, 'green') "
                           "FROM cases c LEFT JOIN case_status s ON s.case_id=c.id WHERE c.id=?", (rid,)).fetchone()
        related.append({"id": rid, "kind": kind, "case_no": row[0] if row else rid[:8],
                        "state": row[1] if row else None, "level": row[2] if row else None,
                        "origin": nodes.name(row[3]) if row else "", "colour": row[4] if row else "green",
                        "exists": row is not None})
    township, village = nodes.place(case.get("origin_node"))
    return {
        "case": case, "facts": facts, "status": status, "records": shown, "timeline": timeline,
        "conflicts": conflicts, "related": related, "by_id": by_id, "devices": devices,
        "received": received, "parties": parties,
        "place": {"township": nodes.name(township), "village": nodes.name(village),
                  "origin": nodes.name(case.get("origin_node")), "node": nodes.name(case.get("node"))},
    }
