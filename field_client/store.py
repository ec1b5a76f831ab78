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
                   client_meta (clock, running numbers, server offset, county rules),
                   outbox, case_due (each case's colour and next due date)

Due dates (docs/deadlines.md "On the laptop"): ``schema.obligations.case_status`` with
the county's rules (``rules()``: the copy the last pull brought, else the defaults). Its
result for each case is kept in ``case_due``, refreshed in the transaction that records
or applies ops of the case, for every case when the rules change, and, when the
caseload is read, for the rows whose colour the clock alone has changed since
(``next_at_ms <= now``, an indexed range). The caseload sorts and pages on it in SQL.
The engine reads no personal field (those are sealed at rest), so it runs on the sealed
ops as stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from schema.entities import ENTITIES
from schema.enums import LEVEL_ORDER, Action, Level
from schema.errors import OpInvalid
from schema.masking import MASKERS
from schema.obligations import CHINA, CaseStatus, case_status, colour_rank
from schema.ops import Op
from schema.rules import Rules, RulesInvalid, default_rules, parse_rules
from schema.stamp import parse
from schema.validation import check_op

log = logging.getLogger("field_client.store")

REPLICA_FILE = "replica.db"
RULES_META = "county_rules"  # client_meta key: the county's rules file as the server sent it
Clock = Callable[[], float]

# One row per case (every row of ``cases`` has one once ``refresh_due`` has run). The
# caseload pages in the order of ``case_due_order`` (most urgent first; ``case_no`` is
# copied here, it never changes, so ties keep a stable order); ``client_cases_filters``
# lets the caseload count and filter without reading whole case rows.
CASE_DUE_TABLE = """
CREATE TABLE IF NOT EXISTS case_due (
  case_id TEXT PRIMARY KEY, case_no TEXT, next_due TEXT, next_rule TEXT, colour TEXT NOT NULL,
  colour_rank INTEGER NOT NULL, overdue INTEGER NOT NULL, backlog INTEGER NOT NULL DEFAULT 0,
  obligations TEXT NOT NULL, flags TEXT NOT NULL, next_at_ms INTEGER, evaluated_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS case_due_order ON case_due(colour_rank DESC, next_due IS NULL, next_due, case_no);
CREATE INDEX IF NOT EXISTS case_due_next_at ON case_due(next_at_ms);
CREATE INDEX IF NOT EXISTS case_due_evaluated ON case_due(evaluated_ms);
CREATE INDEX IF NOT EXISTS client_cases_filters ON cases(voided, state, category, level, id);
"""
URGENCY_ORDER = " ORDER BY d.colour_rank DESC, d.next_due IS NULL, d.next_due, d.case_no"


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
        self._rules: Rules | None = None
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
        c.executescript(CASE_DUE_TABLE)

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

    # ---- the county's rules and each case's due dates ----

    def rules(self) -> Rules:
        """The county's rules as the last pull brought them, else the defaults (docs/deadlines.md)."""
        text = self.meta(RULES_META)
        if not text:
            return _default_rules()
        if self._rules is None or self._rules.text != text:
            try:
                self._rules = parse_rules(text, source="county rules")
            except RulesInvalid:  # only valid text is stored; a damaged copy must not stop the laptop
                return _default_rules()
        return self._rules

    def rules_sha256(self) -> str | None:
        """SHA-256 of the county rules text this laptop holds (None before the first pull brings it)."""
        text = self.meta(RULES_META)
        return hashlib.sha256(text.encode()).hexdigest() if text else None

    def take_rules_in_transaction(self, text: str) -> Rules:
        """Keep the county's rules text (RulesInvalid if it does not parse, nothing changed);
        every case's due dates are worked out again when the figures differ. Inside the
        caller's transaction."""
        new = parse_rules(text, source="county rules")
        before = self.rules()
        self._set_meta(RULES_META, text)
        self._rules = new
        if new.text != before.text:
            self.refresh_due_in_transaction(None)
        return new

    def now_ms(self) -> int:
        """The time due dates are judged at: the laptop's clock corrected like its stamps."""
        return self.wall_ms()

    def status_of(self, case_id: str, *, now_ms: int | None = None) -> CaseStatus:
        """The case's obligations, colour and flags now (``schema.obligations.case_status``)."""
        return _status(case_id, self.replica.ops_for_case(case_id), self.rules(),
                       self.now_ms() if now_ms is None else now_ms)

    def refresh_due_in_transaction(self, case_ids: Iterable[str] | None) -> int:
        """Rewrite the ``case_due`` rows of ``case_ids`` (None: every case) that have a row in
        ``cases`` (ops of a case whose own record has not arrived wait for it). Inside a transaction."""
        conn = self.replica.conn
        ids = (sorted({r[0] for r in conn.execute("SELECT id FROM cases")}) if case_ids is None
               else sorted(i for i in set(case_ids)
                           if conn.execute("SELECT 1 FROM cases WHERE id=?", (i,)).fetchone()))
        now = self.now_ms()
        rules = self.rules()
        rows = []
        for cid in ids:
            ops = self.replica.ops_for_case(cid)
            st = _status(cid, ops, rules, now)
            case_no = next((op.values.get("case_no") for op in ops
                            if op.entity == "case" and op.entity_id == cid and op.kind == "create"), None)
            nd = st.next_due  # a case whose create has not arrived yet (only edits): green, no due date
            rows.append((cid, case_no, nd.due if nd else None, nd.rule if nd else None, st.colour,
                         colour_rank(st.colour), int(st.overdue), int(st.backlog),
                         json.dumps([o.to_dict() for o in st.obligations], ensure_ascii=False),
                         json.dumps(st.flags, ensure_ascii=False), st.next_at_ms, now))
        conn.executemany(
            "INSERT OR REPLACE INTO case_due(case_id, case_no, next_due, next_rule, colour, colour_rank, overdue, "
            "backlog, obligations, flags, next_at_ms, evaluated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def refresh_due(self) -> int:
        """Bring ``case_due`` up to the clock: rows whose status the clock has changed since
        they were worked out (``next_at_ms`` passed, or the clock was set back before their
        evaluation), and cases without a row (ops that came in by another route). Indexed
        look-ups; returns how many rows were rewritten."""
        now = self.now_ms()
        conn = self.replica.conn
        q = "SELECT case_id FROM case_due WHERE next_at_ms <= ? UNION SELECT case_id FROM case_due WHERE evaluated_ms > ?"
        n_cases, n_due = conn.execute("SELECT (SELECT COUNT(*) FROM cases), (SELECT COUNT(*) FROM case_due)").fetchone()
        if n_due < n_cases:  # case_due only holds rows of cases: some case has none yet
            q += " UNION SELECT id FROM cases WHERE NOT EXISTS (SELECT 1 FROM case_due d WHERE d.case_id = cases.id)"
        stale = [r[0] for r in conn.execute(q, (now, now))]
        if not stale:
            return 0
        with self.replica.transaction():
            return self.refresh_due_in_transaction(stale)

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
            applied = self.replica.apply_in_transaction(sealed)
            self.refresh_due_in_transaction(applied.cases)
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
        allowed = lifecycle.actions_for(case, self.level)
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

    CASE_LIST_COLUMNS = (
        "c.id, c.case_no, c.title, c.category, c.subject, c.state, c.level, c.node, c.received_at, "
        "c.accepted_at, c.extended_days, c.state_since, c.level_since, c.voided, c.open_conflicts, "
        "c.people_count, c.tags, d.next_due, d.next_rule, d.colour, d.colour_rank, d.overdue, d.backlog"
    )

    @staticmethod
    def _case_filter(state: str | None, category: str | None, level: str | None,
                     include_voided: bool) -> tuple[str, list[Any]]:
        where = " WHERE 1=1"
        params: list[Any] = []
        for col, val in (("state", state), ("category", category), ("level", level)):
            if val:
                where += f" AND c.{col}=?"
                params.append(val)
        if not include_voided:
            where += " AND c.voided=0"
        return where, params

    def list_cases_page(
        self,
        *,
        page: int = 1,
        per_page: int = 100,
        **filters: Any,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the caseload and the number of matching cases: counted, sorted and
        paged in SQL over ``case_due``; titles opened for the page only."""
        sort = filters.pop("sort", "due")
        self.refresh_due()
        where, params = self._case_filter(filters.get("state"), filters.get("category"), filters.get("level"),
                                          bool(filters.get("include_voided")))
        total = int(self.replica.conn.execute("SELECT COUNT(*) FROM cases c" + where, params).fetchone()[0])
        pages = max(1, -(-total // per_page))
        page = min(max(1, page), pages)  # past the end: the last page
        filtered = any(filters.get(k) for k in ("state", "category", "level"))
        rows = self._list(where, params, sort, per_page, (page - 1) * per_page, decrypt=True, filtered=filtered)
        return rows, total

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
        """My caseload, filtered; the most urgent first by default (colour, then the next due
        date: docs/deadlines.md), or ``sort="received"`` newest first."""
        self.refresh_due()
        where, params = self._case_filter(state, category, level, include_voided)
        return self._list(where, params, sort, limit, offset, decrypt=decrypt,
                          filtered=bool(state or category or level))

    @classmethod
    def page_sql(cls, where: str, *, sort: str = "due", filtered: bool = False) -> str:
        """The caseload's SELECT for a WHERE clause on ``cases c`` (``_case_filter``); its last
        two parameters are LIMIT and OFFSET."""
        cols = cls.CASE_LIST_COLUMNS
        if sort == "received":
            return (f"SELECT {cols} FROM cases c JOIN case_due d ON d.case_id = c.id{where} "
                    "ORDER BY c.received_at DESC, c.case_no LIMIT ? OFFSET ?")
        # the page's ids first, sorting small index entries only, then its rows. Unfiltered,
        # walk case_due in urgency order (CROSS JOIN: case_due outermost) and stop at the
        # page; filtered, the filter index finds the matching cases first.
        join = "CROSS JOIN" if not filtered else "JOIN"
        return (f"SELECT {cols} FROM (SELECT d.case_id AS pid FROM case_due d {join} cases c ON c.id = d.case_id"
                f"{where}{URGENCY_ORDER} LIMIT ? OFFSET ?) p JOIN case_due d ON d.case_id = p.pid "
                f"JOIN cases c ON c.id = p.pid{URGENCY_ORDER}")

    def _list(self, where: str, params: list[Any], sort: str, limit: int, offset: int, *,
              decrypt: bool, filtered: bool) -> list[dict[str, Any]]:
        q = self.page_sql(where, sort=sort, filtered=filtered)
        cur = self.replica.conn.execute(q, [*params, limit, offset])
        names = [d[0] for d in cur.description]
        rules = self.rules()
        rows = []
        for r in cur:
            row = dict(zip(names, r, strict=True))
            rule = rules.rules.get(row["next_rule"] or "")
            row["next_due_rule"] = rule.zh if rule else None
            row["tags"] = json.loads(row["tags"] or "[]")
            if decrypt:
                row["title"] = self.sealer.open_value("case", "title", row["title"])
            rows.append(row)
        return rows

    def case_detail(self, case_id: str, *, unmask: bool = False) -> dict[str, Any]:
        """Everything about one case: its row, records, deadlines, timeline, conflicts."""
        case = self._case_row(case_id)
        detail: dict[str, Any] = {"case": self.show("case", case, unmask=unmask)}
        for entity in ("party", "visit", "mediation", "notice", "note", "evaluation", "leader_assignment", "alert"):
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
        st = self.status_of(case_id)
        nd = st.next_due
        detail["obligations"] = [o.to_dict() for o in st.obligations]
        detail["status"] = {"colour": st.colour, "overdue": st.overdue, "awaiting_sync": st.awaiting_sync,
                            "backlog": st.backlog, "flags": st.flags, "next_due": nd.due if nd else None,
                            "next_rule": nd.rule if nd else None, "rules_county": self.rules().county}
        detail["allowed_actions"] = lifecycle.actions_for(case, self.level)
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


ENGINE_RETRY_MS = 3_600_000  # a case the engine failed on is tried again an hour later (or with its next op)


def _status(case_id: str, ops: list[Op], rules: Rules, now_ms: int) -> CaseStatus:
    """``case_status``, or, should the engine fail on a case, a status saying so (flag
    ``engine_error``, no due date): one case the engine cannot read must never stop the
    laptop recording, syncing or showing the others."""
    try:
        return case_status(case_id, ops, rules, now_ms)
    except Exception:  # noqa: BLE001 - any fault of the engine on one case
        log.exception("case_status failed on case %s", case_id)
        st = CaseStatus(case_id, exists=True, flags=[{"flag": "engine_error"}], next_at_ms=now_ms + ENGINE_RETRY_MS)
        return st


_DEFAULT_RULES: list[Rules] = []


def _default_rules() -> Rules:
    """``schema.rules.default_rules()``, read once per process."""
    if not _DEFAULT_RULES:
        _DEFAULT_RULES.append(default_rules())
    return _DEFAULT_RULES[0]


__all__ = ["FieldClient", "field_errors", "Level"]
