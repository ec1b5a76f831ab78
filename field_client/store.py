"""The field client's own API: everything the CLI and the local web UI do goes through here.

``FieldClient.init`` makes a device (keys under the passphrase, a replica);
``FieldClient.open`` unlocks one. Every action a person takes becomes one or more ops
that are validated in the clear, sealed (personal fields encrypted with the data key),
applied to the replica and queued in the outbox **in one SQLite transaction** together
with the device's clock and running numbers: an acknowledged action is on disk whole,
or not at all.

Data folder::

    device.json    keys wrapped under the passphrase (field_client.keystore)
    replica.db     the replica (conflict.replica) plus client tables:
                   client_meta (clock, running numbers, server offset), outbox
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from conflict.author import make_op
from conflict.hlc import Stamp
from conflict.replica import Replica
from field_client import keystore
from field_client.errors import AlreadyInitialised, InputInvalid, NotFound, NotInitialised
from schema import lifecycle
from schema.deadlines import CHINA, case_deadlines, next_due
from schema.entities import ENTITIES
from schema.enums import LEVEL_ORDER, Action, Level
from schema.errors import OpInvalid
from schema.masking import MASKERS
from schema.ops import Op
from schema.stamp import parse
from schema.validation import check_op

REPLICA_FILE = "replica.db"
Clock = Callable[[], float]


def new_id() -> str:
    return os.urandom(16).hex()


def now_iso(clock: Clock = time.time) -> str:
    return datetime.fromtimestamp(clock(), CHINA).isoformat(timespec="seconds")


class FieldClient:
    """An unlocked field device: its keys, its replica, its clock."""

    def __init__(self, data_dir: Path, keys: keystore.DeviceKeys, replica: Replica, clock: Clock) -> None:
        self.data_dir = data_dir
        self.keys = keys
        self.replica = replica
        self.sealer = keystore.Sealer(keys.data_key)
        self.clock = clock
        self._ensure_tables()
        self._catch_up_clock()

    # ---- making and opening a device ----

    @classmethod
    def init(
        cls,
        data_dir: str | Path,
        passphrase: str,
        *,
        node: str,
        level: str = "village",
        user: str,
        node_name: str = "",
        clock: Clock = time.time,
    ) -> FieldClient:
        """Create a device in ``data_dir``: keys, replica, client tables."""
        data = Path(data_dir)
        if len(passphrase) < 8:
            raise InputInvalid(
                "口令至少 8 个字符 (the passphrase needs at least 8 characters)",
                details={"passphrase": "too short"},
            )
        if level not in LEVEL_ORDER:
            raise InputInvalid(f"层级必须是 village/township/county (unknown level {level!r})")
        if not node or len(node) > 32:
            raise InputInvalid("单位代码不能为空 (node code is required, at most 32 characters)")
        if keystore.exists(data):
            raise AlreadyInitialised(
                f"这里已经有一台设备，不会覆盖 (a device already exists in {data}; not overwritten)",
                details={"path": str(keystore.keyfile_path(data))},
            )
        # The replica first, the keys last: an init cut short leaves at most an empty
        # replica, which the next init reuses. A replica that holds ops but has no keys is
        # somebody's unreadable data: never build a new device on top of it.
        data.mkdir(parents=True, exist_ok=True)
        replica = Replica(data / REPLICA_FILE)
        try:
            if replica.op_count():
                raise AlreadyInitialised(
                    f"{data / REPLICA_FILE} 已有记录但没有密钥文件，不会覆盖 "
                    f"(a replica with records but no key file is here; not overwritten)",
                    details={"path": str(data / REPLICA_FILE)},
                )
            keys = keystore.create(
                data,
                passphrase,
                {"node": node, "level": level, "user": user, "node_name": node_name,
                 "created_at": now_iso(clock)},
            )
        except BaseException:
            replica.close()
            raise
        return cls(data, keys, replica, clock)

    @classmethod
    def open(cls, data_dir: str | Path, passphrase: str, *, clock: Clock = time.time) -> FieldClient:
        """Unlock the device in ``data_dir`` (WrongPassphrase changes nothing)."""
        data = Path(data_dir)
        keys = keystore.unlock(data, passphrase)
        if not (data / REPLICA_FILE).exists():
            raise NotInitialised(f"{data} 中缺少 {REPLICA_FILE} (the replica file is missing)")
        replica = Replica(data / REPLICA_FILE, create=False)
        return cls(data, keys, replica, clock)

    def close(self) -> None:
        self.replica.close()

    def __enter__(self) -> FieldClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _catch_up_clock(self) -> None:
        """Start the device's clock after every stamp already in the op log (read once on open).

        Ops can reach the replica by other routes than sync (a bundle, a restored file); a
        new edit must still sort after what the person saw, or a resolution could lose.
        """
        newest = self.replica.max_stamp()
        known = self.meta("hlc_last")
        if newest and (known is None or parse(newest) > parse(known)):
            from conflict.hlc import receive

            caught, _ = receive(parse(known) if known else None, parse(newest), self.wall_ms(), self.device_id)
            with self.replica.transaction():
                self._set_meta("hlc_last", caught.encode())

    def _ensure_tables(self) -> None:
        c = self.replica.conn
        c.execute("CREATE TABLE IF NOT EXISTS client_meta (key TEXT PRIMARY KEY, value TEXT)")
        c.execute(
            "CREATE TABLE IF NOT EXISTS outbox (local_seq INTEGER PRIMARY KEY, "
            "op_id TEXT UNIQUE NOT NULL, acked INTEGER NOT NULL DEFAULT 0)"
        )
        c.execute("CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(acked, local_seq)")

    # ---- properties of the device ----

    @property
    def device_id(self) -> str:
        return self.keys.device_id

    @property
    def node(self) -> str:
        return str(self.keys.info["node"])

    @property
    def level(self) -> str:
        return str(self.keys.info["level"])

    @property
    def user(self) -> str:
        return str(self.keys.info["user"])

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.replica.conn.execute("SELECT value FROM client_meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self.replica.conn.execute(
            "INSERT INTO client_meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def wall_ms(self) -> int:
        """Wall time corrected by the offset to the server's clock learnt at the last sync."""
        return int(self.clock() * 1000) + int(self.meta("server_offset_ms", "0") or 0)

    def pending_count(self) -> int:
        return int(self.replica.conn.execute("SELECT COUNT(*) FROM outbox WHERE acked=0").fetchone()[0])

    # ---- recording ----

    def record(self, specs: Iterable[Mapping[str, Any]], *, running_year: int | None = None) -> list[Op]:
        """Record ops (entity, entity_id, case_id, kind, values, base) as one transaction.

        Each op is validated in the clear (so a person gets field errors), then sealed,
        applied and queued. ``running_year``: also consume the next case running number.
        """
        with self.replica.transaction():
            last_text = self.meta("hlc_last")
            last: Stamp | None = parse(last_text) if last_text else None
            wall = self.wall_ms()
            occurred = now_iso(self.clock)
            plain: list[Op] = []
            for spec in specs:
                op, last = make_op(
                    last=last, wall_ms=wall, device=self.device_id, author=self.user,
                    op_id=new_id(), occurred_at=occurred, **spec,
                )
                check_op(op)
                plain.append(op)
            sealed = [self.sealer.seal_op(op) for op in plain]
            self.replica.apply_in_transaction(sealed)
            self.replica.conn.executemany(
                "INSERT INTO outbox(op_id) VALUES (?)", [(op.op_id,) for op in sealed]
            )
            if last is not None:
                self._set_meta("hlc_last", last.encode())
            if running_year is not None:
                key = f"running:{running_year}"
                self._set_meta(key, str(int(self.meta(key, "0") or 0) + 1))
        return plain

    def _next_case_no(self, year: int) -> str:
        n = int(self.meta(f"running:{year}", "0") or 0) + 1
        return f"{self.node}-{self.device_id[:4].upper()}-{year}-{n:04d}"

    def new_case(self, values: Mapping[str, Any], parties: Iterable[Mapping[str, Any]] = ()) -> str:
        """Register a case (and its parties) made offline; returns the case id."""
        case_id = new_id()
        year = datetime.fromtimestamp(self.clock(), CHINA).year
        v = {
            "origin_node": self.node,
            "first_receiver": self.user,
            "received_at": now_iso(self.clock),
            "level": self.level,
            "node": self.node,
            **{k: val for k, val in values.items() if val not in (None, "")},
        }
        v["case_no"] = self._next_case_no(year)
        specs: list[dict[str, Any]] = [
            {"entity": "case", "entity_id": case_id, "case_id": case_id, "kind": "create", "values": v}
        ]
        for party in parties:
            pv = {k: val for k, val in party.items() if val not in (None, "")}
            specs.append(
                {"entity": "party", "entity_id": new_id(), "case_id": case_id, "kind": "create", "values": pv}
            )
        self.record(specs, running_year=year)
        return case_id

    def add_record(self, entity: str, case_id: str, values: Mapping[str, Any]) -> str:
        """Append a visit, mediation, notice, note, evaluation, party or leader assignment."""
        if entity == "case" or entity not in ENTITIES:
            raise InputInvalid(f"unknown record type {entity!r}")
        self._case_row(case_id)
        eid = new_id()
        clean = {k: v for k, v in values.items() if v not in (None, "", [])}
        self.record([{"entity": entity, "entity_id": eid, "case_id": case_id, "kind": "create", "values": clean}])
        return eid

    def edit(self, entity: str, entity_id: str, changes: Mapping[str, Any]) -> Op | None:
        """Set fields, with base = the stamps this laptop shows (concurrent edits surface)."""
        state = self.replica.fold_state(entity, entity_id)
        if state is None:
            raise NotFound(f"找不到记录 (no {entity} {entity_id} on this laptop)")
        current = {k: self.sealer.open_value(entity, k, v) for k, v in state["values"].items()}
        changed = {k: v for k, v in changes.items() if current.get(k) != v}
        if not changed:
            return None
        base = {k: (state["win"].get(k) or [None])[0] for k in changed}
        (op,) = self.record(
            [{"entity": entity, "entity_id": entity_id, "case_id": state["case_id"], "kind": "set",
              "values": changed, "base": base}]
        )
        return op

    def transition(self, case_id: str, action: str, **extra: Any) -> Op:
        """Move a case through the state machine (the fold decides if it holds)."""
        case = self._case_row(case_id)
        allowed = lifecycle.allowed_actions(case["state"], case["level"], self.level)
        if action not in allowed:
            raise InputInvalid(
                f"当前状态不允许此操作 ({action} is not allowed from {case['state']} "
                f"at {case['level']} level for a {self.level} device)",
                code="client.transition_not_allowed",
                details={"allowed": allowed},
            )
        values = {"action": action, "acting_level": self.level, **{k: v for k, v in extra.items() if v not in (None, "")}}
        (op,) = self.record(
            [{"entity": "case", "entity_id": case_id, "case_id": case_id, "kind": "transition", "values": values}]
        )
        return op

    def report_up(self, case_id: str, to_node: str, reason: str = "") -> Op:
        """上报: escalate the case one level to ``to_node``."""
        return self.transition(case_id, Action.ESCALATE, to_node=to_node, reason=reason)

    def void(self, entity: str, entity_id: str, reason: str) -> Op:
        state = self.replica.fold_state(entity, entity_id)
        if state is None:
            raise NotFound(f"找不到记录 (no {entity} {entity_id} on this laptop)")
        (op,) = self.record(
            [{"entity": entity, "entity_id": entity_id, "case_id": state["case_id"], "kind": "void",
              "values": {"reason": reason}}]
        )
        return op

    def set_tags(self, case_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[Op]:
        state = self.replica.fold_state("case", case_id)
        if state is None:
            raise NotFound(f"找不到案件 (no case {case_id})")
        specs: list[dict[str, Any]] = []
        add = list(add)
        if add:
            specs.append({"entity": "case", "entity_id": case_id, "case_id": case_id, "kind": "add",
                          "values": {"field": "tags", "items": add}})
        tags = state["tags"].get("tags", {})
        dead = state["dead"].get("tags", {})
        for item in remove:
            live = [t for t in tags.get(item, []) if t not in dead.get(item, [])]
            if live:
                specs.append({"entity": "case", "entity_id": case_id, "case_id": case_id, "kind": "remove",
                              "values": {"field": "tags", "items": [item], "observed": live}})
        return self.record(specs) if specs else []

    def resolve(self, conflict_id: str, value: Any = None, *, keep_current: bool = False) -> Op:
        """Resolve a conflict: choose or write a value (or acknowledge a refused transition)."""
        rows = [c for c in self.replica.conflicts(status="open") if c["id"] == conflict_id]
        if not rows:
            raise NotFound(f"没有这个未解决的冲突 (no open conflict {conflict_id})")
        c = rows[0]
        values: dict[str, Any] = {"resolves": c["op_ids"]}
        base: dict[str, Any] = {}
        if c["kind"] == "concurrent_edit":
            state = self.replica.fold_state(c["entity"], c["entity_id"]) or {"values": {}, "win": {}}
            chosen = self.sealer.open_value(c["entity"], c["field"], state["values"].get(c["field"])) if keep_current else value
            values.update(field=c["field"], value=chosen)
            base = {c["field"]: (state["win"].get(c["field"]) or [None])[0]}
        (op,) = self.record(
            [{"entity": c["entity"], "entity_id": c["entity_id"], "case_id": c["case_id"], "kind": "resolve",
              "values": values, "base": base}]
        )
        return op

    # ---- reading ----

    def _case_row(self, case_id: str) -> dict[str, Any]:
        row = self.replica.get("case", case_id)
        if row is None:
            raise NotFound(f"找不到案件 (no case {case_id} on this laptop)")
        return row

    def find_case(self, ref: str) -> str:
        """A case id from a case id, a case number, or a unique prefix of either."""
        q = ("SELECT id FROM cases WHERE id=? OR case_no=? OR id LIKE ? ESCAPE '\\' "
             "OR case_no LIKE ? ESCAPE '\\' LIMIT 2")
        pattern = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.replica.conn.execute(q, (ref, ref, pattern + "%", "%" + pattern)).fetchall()
        if not ref.strip():
            rows = []
        if len(rows) != 1:
            raise NotFound(
                f"找不到案件 {ref} (no single case matches {ref!r})" if not rows
                else f"{ref} 对应多个案件，请写完整编号 ({ref!r} matches several cases)",
                details={"ref": ref, "matches": len(rows)},
            )
        return str(rows[0][0])

    def show(self, entity: str, row: Mapping[str, Any], *, unmask: bool = False) -> dict[str, Any]:
        """A row with personal fields decrypted, and ID numbers and phones masked unless asked."""
        out = self.sealer.open_row(entity, dict(row))
        out.pop("fold", None)
        if not unmask:
            for name, mask in MASKERS.items():
                if name in out:
                    out[name] = mask(out[name])
        return out

    def list_cases_page(
        self,
        *,
        page: int = 1,
        per_page: int = 100,
        **filters: Any,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the caseload and the number of matching cases (titles opened for the page only)."""
        rows = self.list_cases(limit=10**9, decrypt=False, **filters)
        pages = max(1, -(-len(rows) // per_page))
        page = min(max(1, page), pages)  # past the end: the last page
        chunk = rows[(page - 1) * per_page : page * per_page]
        for row in chunk:
            row["title"] = self.sealer.open_value("case", "title", row["title"])
        return chunk, len(rows)

    def list_cases(
        self,
        *,
        state: str | None = None,
        category: str | None = None,
        level: str | None = None,
        include_voided: bool = False,
        sort: str = "due",
        limit: int = 200,
        offset: int = 0,
        decrypt: bool = True,
    ) -> list[dict[str, Any]]:
        """My caseload, filtered; sorted by the next due date (soonest first) by default."""
        q = (
            "SELECT id, case_no, title, category, subject, state, level, node, received_at, "
            "accepted_at, extended_days, state_since, level_since, voided, open_conflicts, "
            "people_count, tags FROM cases WHERE 1=1"
        )
        params: list[Any] = []
        for col, val in (("state", state), ("category", category), ("level", level)):
            if val:
                q += f" AND {col}=?"
                params.append(val)
        if not include_voided:
            q += " AND voided=0"
        cur = self.replica.conn.execute(q + " ORDER BY received_at DESC", params)
        cols = [d[0] for d in cur.description]
        rows = []
        for r in cur:
            row = dict(zip(cols, r, strict=True))
            due = next_due(row)
            row["next_due"] = due.due if due else None
            row["next_due_rule"] = due.zh if due else None
            row["tags"] = json.loads(row["tags"] or "[]")
            rows.append(row)
        if sort == "due":
            rows.sort(key=lambda r: (r["next_due"] is None, r["next_due"] or "", r["case_no"]))
        rows = rows[offset : offset + limit]
        if decrypt:
            for row in rows:
                row["title"] = self.sealer.open_value("case", "title", row["title"])
        return rows

    def case_detail(self, case_id: str, *, unmask: bool = False) -> dict[str, Any]:
        """Everything about one case: its row, records, deadlines, timeline, conflicts."""
        case = self._case_row(case_id)
        detail: dict[str, Any] = {"case": self.show("case", case, unmask=unmask)}
        for entity in ("party", "visit", "mediation", "notice", "note", "evaluation", "leader_assignment"):
            spec = ENTITIES[entity]
            cur = self.replica.conn.execute(
                f"SELECT * FROM [{spec.table}] WHERE case_id=? ORDER BY created_stamp", (case_id,)
            )
            cols = [d[0] for d in cur.description]
            rows = []
            for r in cur:
                row = dict(zip(cols, r, strict=True))
                for name in spec.set_fields:
                    row[name] = json.loads(row[name] or "[]")
                rows.append(self.show(entity, row, unmask=unmask))
            detail[spec.table] = rows
        detail["deadlines"] = [d.__dict__ for d in case_deadlines(case)]
        detail["allowed_actions"] = lifecycle.allowed_actions(case["state"], case["level"], self.level)
        conflicts = self.replica.conflicts(case_id=case_id)
        for c in conflicts:
            c["values"] = self._conflict_values(c)
        detail["conflicts"] = conflicts
        detail["timeline"] = self.timeline(case_id, unmask=unmask)
        return detail

    def list_conflicts(self, *, status: str | None = "open") -> list[dict[str, Any]]:
        """Conflicts on this laptop (open ones by default), each with its case number and the
        competing values in the clear (they are what a resolution chooses from: mask to show)."""
        conflicts = self.replica.conflicts(status=status)
        numbers = {
            cid: no for cid, no in self.replica.conn.execute("SELECT id, case_no FROM cases")
        } if conflicts else {}
        for c in conflicts:
            c["case_no"] = numbers.get(c["case_id"])
            c["values"] = self._conflict_values(c)
        return conflicts

    def _conflict_values(self, c: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = []
        by_id = {op.op_id: op for op in self.replica.ops_for_entity(c["entity"], c["entity_id"])}
        for op_id in c["op_ids"]:
            if op_id not in by_id:
                continue
            op = self.sealer.open_op(by_id[op_id])
            value = op.values.get(c["field"]) if op.kind != "resolve" else op.values.get("value")
            if op.kind == "transition":
                value = op.values.get("action")
            out.append({"op_id": op_id, "value": value, "author": op.author, "device": op.device,
                        "occurred_at": op.occurred_at, "stamp": op.stamp})
        return out

    def timeline(self, case_id: str, *, unmask: bool = False) -> list[dict[str, Any]]:
        """Every op of the case, oldest first, personal values decrypted (ID numbers and
        phones masked unless asked)."""
        refused = {
            oid: c["reason"]
            for c in self.replica.conflicts(case_id=case_id)
            if c["kind"] == "invalid_transition"
            for oid in c["op_ids"]
        }
        return [
            {
                "op_id": op.op_id, "stamp": op.stamp, "entity": op.entity, "entity_id": op.entity_id,
                "kind": op.kind, "values": op.values if unmask else _masked_values(op),
                "author": op.author, "device": op.device,
                "occurred_at": op.occurred_at, "refused": refused.get(op.op_id),
            }
            for op in map(self.sealer.open_op, self.replica.ops_for_case(case_id))
        ]


def _masked_values(op: Op) -> dict[str, Any]:
    """An op's values with ID numbers and phones masked (a create/set, or a resolve of one)."""
    values = dict(op.values)
    for name, mask in MASKERS.items():
        if isinstance(values.get(name), str):
            values[name] = mask(values[name])
    if op.kind == "resolve" and values.get("field") in MASKERS and isinstance(values.get("value"), str):
        values["value"] = MASKERS[values["field"]](values["value"])
    return values


def field_errors(exc: OpInvalid) -> dict[str, str]:
    """``values.x`` errors of an OpInvalid as {x: message} for forms."""
    out: dict[str, str] = {}
    details = exc.details if isinstance(exc.details, dict) else {}
    for path, msgs in details.items():
        name = str(path).split(".", 1)[1] if str(path).startswith("values.") else str(path)
        out[name] = "; ".join(map(str, msgs)) if isinstance(msgs, list) else str(msgs)
    if not out and isinstance(details, dict) and "field" in details:
        out[str(details["field"]).removeprefix("values.")] = exc.message
    return out


__all__ = ["FieldClient", "field_errors", "Level"]
