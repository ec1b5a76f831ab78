"""The deadline sweep (时限巡查): the server's pass over due cases (docs/deadlines.md).

Which cases: those whose ``case_status.next_at_ms`` has come (an index, never a scan of
every case), plus those with ops the sweep has not examined yet (past the op watermark
``sweep_watermark``: new cases, and any merge whose after-merge sweep did not finish).

For each, ``schema.obligations.sweep_ops`` (pure) says what the server must write; the
ops it does not hold yet are sealed to the server, ledgered and merged as one server
change set per batch, and the case's status row is replaced. Op ids and stamps are
derived from (case, rule, due time, action), so a second run, or a run on a restored
copy, writes nothing new.

Repeat and skip-level petitions: each party's identity is kept only as a keyed hash
(HMAC-SHA256 with a secret of this server) of the normalised ID number, or of the name
and phone, in ``person_keys``; the raw number never enters an index or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schema.obligations import SWEEP_AUTHOR, CaseStatus, SweepContext, derived_id, iso, sweep_ops
from schema.ops import SCHEMA_VERSION, Op
from schema.rules import Rules
from schema.stamp import encode as encode_stamp
from schema.stamp import parse as parse_stamp
from schema.validation import check_op

BATCH = 200
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


@dataclass
class SweepReport:
    """What one sweep did; printed by ``sync-server sweep`` and kept for /metrics."""

    now_ms: int
    cases: int = 0
    due: int = 0
    unswept: int = 0
    ops_written: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    find_ms: float = 0.0
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"now": iso(self.now_ms), "cases": self.cases, "due": self.due, "unswept": self.unswept,
                "ops_written": self.ops_written, "by_kind": dict(sorted(self.by_kind.items())),
                "find_ms": round(self.find_ms, 3), "duration_ms": round(self.duration_ms, 1)}


def normalise_id_number(text: str) -> str | None:
    """A resident ID number in its 18-character form (15-digit numbers are converted)."""
    s = unicodedata.normalize("NFKC", text).replace(" ", "").replace("-", "").upper()
    if len(s) == 15 and s.isdigit():
        body = s[:6] + "19" + s[6:]
        check = ID_CHECK[sum(int(c) * w for c, w in zip(body, ID_WEIGHTS, strict=True)) % 11]
        return body + check
    if len(s) == 18 and s[:17].isdigit() and (s[17].isdigit() or s[17] == "X"):
        return s
    return None


def normalise_name_phone(name: str, phone: str) -> str | None:
    n = "".join(unicodedata.normalize("NFKC", name).split())
    digits = "".join(c for c in unicodedata.normalize("NFKC", phone) if c.isdigit())
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if not n or len(digits) < 7:
        return None
    return f"{n}|{digits}"


class Sweeper:
    """Runs the sweep over a SyncService's store with a county's rules."""

    def __init__(self, service: Any, rules: Rules) -> None:
        self.svc = service
        self.store = service.store
        self.rules = rules
        self.conn = self.store.conn
        self.node_id = self.store.keys.node_id

    # ---- what the sweep knows beyond a case's ops ----

    def parent_of(self, node: str) -> str | None:
        row = self.store.node(node)
        return row.get("parent") if row else None

    def last_contact(self, node: str | None) -> int | None:
        """When a device handling ``node`` last synced; None when no device works there."""
        if not node:
            return None
        row = self.conn.execute(
            "SELECT MAX(COALESCE(last_contact_ms, enrolled_ms)), COUNT(*) FROM devices WHERE node=? AND status='active'",
            (node,)).fetchone()
        return int(row[0]) if row and row[1] and row[0] is not None else None

    def person_secret(self) -> bytes:
        value = self.store.meta("person_key")
        if value is None:
            value = os.urandom(32).hex()
            self.store.set_meta("person_key", value)
        return bytes.fromhex(value)

    # ---- finding the cases ----

    def due_cases(self, now_ms: int) -> list[str]:
        """Cases whose next due time has come: the indexed query the sweep starts from."""
        return [r[0] for r in self.conn.execute(
            "SELECT case_id FROM case_status WHERE next_at_ms IS NOT NULL AND next_at_ms <= ? ORDER BY next_at_ms",
            (now_ms,))]

    def unswept_cases(self, watermark: int) -> list[str]:
        """Cases with ops newer than both the watermark and their own last examination."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT o.case_id FROM ops o LEFT JOIN case_status s ON s.case_id = o.case_id "
            "WHERE o.seq > ? AND (s.evaluated_seq IS NULL OR o.seq > s.evaluated_seq)", (watermark,))]

    def sweep(self, now_ms: int, *, progress: Callable[[int, int], None] | None = None) -> SweepReport:
        """Sweep every due or unexamined case at ``now_ms``."""
        t0 = time.perf_counter()
        report = SweepReport(now_ms)
        watermark = int(self.store.meta("sweep_watermark", "0") or 0)
        top = self.store.max_op_seq()
        due = self.due_cases(now_ms)
        unswept = self.unswept_cases(watermark) if top > watermark else []
        report.find_ms = (time.perf_counter() - t0) * 1000
        report.due, report.unswept = len(due), len(unswept)
        cases = sorted(set(due) | set(unswept))
        self.sweep_cases(cases, now_ms, report=report, progress=progress)
        report.duration_ms = (time.perf_counter() - t0) * 1000
        with self.store.transaction():
            self.store.set_meta("sweep_watermark", str(top))
            self.store.set_meta("sweep_last_ms", str(self.store.now_ms()))
            self.store.set_meta("sweep_duration_ms", f"{report.duration_ms:.1f}")
            self.store.set_meta("sweep_last_report", json.dumps(report.to_dict(), ensure_ascii=False))
        return report

    def sweep_cases(self, case_ids: Iterable[str], now_ms: int, *, report: SweepReport | None = None,
                    progress: Callable[[int, int], None] | None = None) -> SweepReport:
        """Examine these cases at ``now_ms``: write what is due, refresh their status rows."""
        report = report or SweepReport(now_ms)
        ids = list(case_ids)
        for i in range(0, len(ids), BATCH):
            chunk = ids[i : i + BATCH]
            with self.store.transaction():
                new_ops: list[Op] = []
                rows = []
                for case_id in chunk:
                    st, written = self._one(case_id, now_ms)
                    new_ops += written
                    if st.exists:
                        rows.append(st.to_row())
                new_ops += self._people(chunk, now_ms)
                unique: dict[str, Op] = {}
                for op in new_ops:
                    unique.setdefault(op.op_id, op)
                new_ops = list(unique.values())
                for op in new_ops:
                    check_op(op)
                written_ops = self.svc.append_server_ops(new_ops)
                self._save(rows, now_ms)
            report.cases += len(chunk)
            report.ops_written += len(written_ops)
            for op in written_ops:
                report.by_kind[_kind_of(op)] += 1
            if progress is not None:
                progress(min(i + BATCH, len(ids)), len(ids))
        return report

    def _one(self, case_id: str, now_ms: int) -> tuple[CaseStatus, list[Op]]:
        ops = self.store.replica.ops_for_case(case_id)
        have = {op.op_id for op in ops}
        row = self.conn.execute("SELECT node FROM cases WHERE id=?", (case_id,)).fetchone()
        node = row[0] if row else None
        ctx = SweepContext(self.node_id, self.parent_of, self.last_contact(node), self.store.received_ms(case_id))
        written: list[Op] = []
        st = CaseStatus(case_id)
        for _ in range(5):  # an escalation opens the next level's window: look again
            st, out = sweep_ops(case_id, ops, self.rules, now_ms, ctx)
            new = [op for op in out if op.op_id not in have]
            if not new:
                break
            written += new
            ops = ops + new
            have.update(op.op_id for op in new)
        return st, written

    def _save(self, rows: list[dict[str, Any]], now_ms: int) -> None:
        seq = self.store.max_op_seq()  # inside the write transaction: every op of these cases is seen
        self.conn.executemany(
            "INSERT INTO case_status(case_id, next_at_ms, next_due, next_rule, colour, overdue, awaiting_sync, "
            "backlog, obligations, flags, evaluated_ms, evaluated_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(case_id) DO UPDATE SET next_at_ms=excluded.next_at_ms, next_due=excluded.next_due, "
            "next_rule=excluded.next_rule, colour=excluded.colour, overdue=excluded.overdue, "
            "awaiting_sync=excluded.awaiting_sync, backlog=excluded.backlog, obligations=excluded.obligations, "
            "flags=excluded.flags, evaluated_ms=excluded.evaluated_ms, evaluated_seq=excluded.evaluated_seq",
            [(r["case_id"], r["next_at_ms"], r["next_due"], r["next_rule"], r["colour"], r["overdue"],
              r["awaiting_sync"], r["backlog"], json.dumps(r["obligations"], ensure_ascii=False),
              json.dumps(r["flags"], ensure_ascii=False), now_ms, seq) for r in rows],
        )

    # ---- repeat and skip-level petitions ----

    def person_keys(self, case_id: str) -> set[str]:
        secret = self.person_secret()
        keys: set[str] = set()
        for id_number, name, phone in self.conn.execute(
                "SELECT id_number, name, phone FROM parties WHERE case_id=? AND role='petitioner' AND voided=0",
                (case_id,)):
            norm = normalise_id_number(id_number) if isinstance(id_number, str) else None
            if norm:
                keys.add(hmac.new(secret, f"id:{norm}".encode(), hashlib.sha256).hexdigest()[:32])
            np = normalise_name_phone(name, phone) if isinstance(name, str) and isinstance(phone, str) else None
            if np:
                keys.add(hmac.new(secret, f"np:{np}".encode(), hashlib.sha256).hexdigest()[:32])
        return keys

    def _people(self, case_ids: list[str], now_ms: int) -> list[Op]:
        """Link cases that share a petitioner: repeat, skip-level, and petitions on a final matter."""
        out: list[Op] = []
        recent = self.rules.repeat_recent_days * 86_400_000
        for case_id in case_ids:
            me = self._case(case_id)
            if me is None:
                continue
            keys = self.person_keys(case_id)
            self.conn.execute("DELETE FROM person_keys WHERE case_id=?", (case_id,))
            self.conn.executemany("INSERT OR IGNORE INTO person_keys(key, case_id, party_id) VALUES (?, ?, '')",
                                  [(k, case_id) for k in sorted(keys)])
            if me["voided"] or not keys:
                continue
            marks = ", ".join("?" * len(keys))
            others = sorted({r[0] for r in self.conn.execute(
                f"SELECT case_id FROM person_keys WHERE key IN ({marks}) AND case_id != ?", [*sorted(keys), case_id])})
            for other_id in others:
                other = self._case(other_id)
                if other is None or other["voided"]:
                    continue
                first, second = sorted((me, other), key=lambda c: (c["created_stamp"], c["id"]))
                closed_ms = _ms_or_none(first["closed_at"])
                second_ms = parse_stamp(second["created_stamp"]).ms
                first_open = first["state"] not in ("closed", "final", "not_accepted")
                recent_enough = first_open or (closed_ms is not None and second_ms - closed_ms <= recent)
                if first["state"] == "final" and first["subject"] == second["subject"]:
                    out += self._link(second, first, "final_refiled", second_ms,
                                      f"同一信访人就同一事项({first['case_no']})已终结，依条例不再受理 "
                                      f"(the same person's matter {first['case_no']} is final; not to be accepted again)")
                elif recent_enough:
                    out += self._link(second, first, "repeat", second_ms,
                                      f"同一信访人另有案件 {first['case_no']} (the same person has case {first['case_no']})")
                    out += self._link(first, second, "repeat", second_ms,
                                      f"同一信访人另有案件 {second['case_no']} (the same person has case {second['case_no']})")
                if (first_open and _level_rank(second["create_level"]) > _level_rank(first["level"])
                        and first["node"] != second["node"]):
                    out += self._link(second, first, "skip_level", second_ms,
                                      f"村/乡镇案件 {first['case_no']} 仍在办理时向上级登记 (越级; case "
                                      f"{first['case_no']} is still open at {first['level']} level)")
        return out

    def _case(self, case_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, case_no, state, level, node, subject, closed_at, created_stamp, voided FROM cases "
            "WHERE id=?", (case_id,)).fetchone()
        if row is None or row[7] is None:
            return None
        keys = ("id", "case_no", "state", "level", "node", "subject", "closed_at", "created_stamp", "voided")
        case = dict(zip(keys, row, strict=True))
        case["create_level"] = _create_level(self.store.replica.ops_for_entity("case", case_id)) or case["level"]
        return case

    def _link(self, case: dict[str, Any], other: dict[str, Any], kind: str, ms: int, message: str) -> list[Op]:
        case_id = case["id"]
        k = f"{case_id}|{other['id']}|{kind}"
        tag = "repeat" if kind in ("repeat", "final_refiled") else "skip_level"
        tag_ms = parse_stamp(case["created_stamp"]).ms  # one tag op per case and tag, whatever linked it
        return [
            Op(op_id=derived_id(k, "alert", "create"), stamp=encode_stamp(ms, 2, self.node_id), device=self.node_id,
               author=SWEEP_AUTHOR, entity="alert", entity_id=derived_id(k, "alert"), case_id=case_id,
               kind="create", values={"kind": kind, "raised_at": iso(ms), "message": message,
                                      "related_case": other["id"]},
               base={}, occurred_at=iso(ms), schema_version=SCHEMA_VERSION),
            Op(op_id=derived_id(case_id, tag, "tag"), stamp=encode_stamp(tag_ms, 2, self.node_id),
               device=self.node_id, author=SWEEP_AUTHOR, entity="case", entity_id=case_id, case_id=case_id,
               kind="add", values={"field": "tags", "items": [tag]}, base={}, occurred_at=iso(tag_ms),
               schema_version=SCHEMA_VERSION),
        ]


def _create_level(ops: list[Op]) -> str | None:
    creates = sorted((op for op in ops if op.kind == "create"), key=lambda o: (o.stamp, o.op_id))
    return creates[0].values.get("level") if creates else None


def _level_rank(level: str | None) -> int:
    return {"village": 0, "township": 1, "county": 2}.get(level or "", -1)


def _ms_or_none(text: str | None) -> int | None:
    if not text:
        return None
    from schema.obligations import ms_of

    try:
        return ms_of(text)
    except ValueError:
        return None


def _kind_of(op: Op) -> str:
    if op.entity == "alert":
        return f"alert:{op.values.get('kind', 'withdrawn' if op.kind == 'set' else op.kind)}"
    if op.kind == "transition":
        return f"transition:{op.values.get('action')}"
    if op.entity == "notice":
        return f"notice:{op.values.get('kind', op.kind)}"
    return f"{op.entity}:{op.kind}"


class SweepTimer:
    """The sweep on a timer inside ``sync-server serve``: its own connection, stops with the server."""

    def __init__(self, data_dir: Any, rules: Rules, *, clock: Callable[[], float] = time.time) -> None:
        import threading

        self.data_dir = data_dir
        self.rules = rules
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="minqing-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_once(self) -> SweepReport:
        from sync_server.service import SyncService
        from sync_server.store import ServerStore

        store = ServerStore(self.data_dir)
        try:
            return Sweeper(SyncService(store, rules=self.rules), self.rules).sweep(int(self.clock() * 1000))
        finally:
            store.close()

    def _run(self) -> None:
        interval = self.rules.sweep_interval_minutes * 60
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - a failed sweep is retried at the next tick
                _note_error(self.data_dir, exc)
            self._stop.wait(interval)


def _note_error(data_dir: Any, exc: BaseException) -> None:
    from sync_server.store import ServerStore

    try:
        store = ServerStore(data_dir)
        with store.transaction():
            store.set_meta("sweep_last_error", f"{store.now_ms()} timer: {exc!r}"[:2000])
        store.close()
    except Exception:  # noqa: BLE001 - nowhere left to report to but the next tick
        pass
