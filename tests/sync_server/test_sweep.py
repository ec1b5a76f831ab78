"""The deadline sweep on a real server store, with real laptops syncing through the real
protocol (sealed, signed envelopes) in-process, on one clock the test moves.

Scenarios of issue 5: escalation on the deadline, a second sweep and a sweep on a
restored copy writing nothing new, the village's close stamped before an escalation but
arriving after it (withdrawn, and the timeline says why), an escalation that was right
(stays), awaiting sync inside the grace period, repeat and skip-level petitions.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import SyncAgent
from schema.errors import MinqingError
from schema.obligations import ms_of
from schema.ops import canonical_json
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore
from sync_server.sweep import Sweeper, normalise_id_number

DAY = 86400.0
T0 = ms_of("2026-09-01T09:00:00+08:00") / 1000  # a Tuesday
NODES = [
    ("330102", "上城区", "county", None),
    ("330102100", "东乡", "township", "330102"),
    ("330102101", "东村", "village", "330102100"),
    ("330102102", "西村", "village", "330102100"),
]
PETITIONER = {"role": "petitioner", "name": "王建国", "phone": "13812345678", "id_number": "330102196501011237"}


@dataclass
class Clock:
    t: float = T0

    def __call__(self) -> float:
        return self.t

    def advance(self, days: float) -> None:
        self.t += days * DAY


class ServiceTransport:
    """The sync API's two calls, straight into the service (the same bytes as over HTTP)."""

    def __init__(self, svc: SyncService) -> None:
        self.svc = svc

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        try:
            if path.endswith("/enroll"):
                return 200, "application/json", json.dumps(self.svc.enroll(json.loads(body))).encode()
            if path.endswith("/push"):
                return 200, "application/octet-stream", self.svc.receive(body).answer
            if path.endswith("/pull"):
                return 200, "application/octet-stream", self.svc.pull(body)
        except MinqingError as exc:
            return 400, "application/json", json.dumps(exc.to_dict()).encode()
        return 404, "application/json", b'{"ok": false}'


class County:
    def __init__(self, root: Path, clock: Clock) -> None:
        self.root = root
        self.clock = clock
        self.store = ServerStore.init(root / "server", clock=clock)
        import_nodes(self.store, [dict(zip(("code", "name", "level", "parent"), n, strict=True)) for n in NODES])
        self.rules = self.store.rules()
        self.svc = SyncService(self.store, rules=self.rules)
        self.transport = ServiceTransport(self.svc)

    def laptop(self, name: str, node: str, level: str = "village") -> tuple[FieldClient, SyncAgent]:
        fc = FieldClient.init(self.root / name, "password123", node=node, level=level, user=f"user.{name}",
                              clock=self.clock)
        agent = SyncAgent(fc, self.transport, retries=0, backoff_s=0.0)
        agent.enroll(self.svc.create_enroll_code(node, url="http://127.0.0.1:9", hours=24 * 365))
        return fc, agent

    def sweep(self, store: ServerStore | None = None) -> Any:
        store = store or self.store
        return Sweeper(SyncService(store, rules=self.rules), self.rules).sweep(store.now_ms())

    def alerts(self, case_id: str) -> list[dict[str, Any]]:
        rows = self.store.conn.execute(
            "SELECT kind, rule, due, withdrawn_at, withdrawn_reason, related_case, message FROM alerts "
            "WHERE case_id=? ORDER BY raised_at, kind", (case_id,)).fetchall()
        keys = ("kind", "rule", "due", "withdrawn_at", "withdrawn_reason", "related_case", "message")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def case(self, case_id: str) -> dict[str, Any]:
        row = self.store.conn.execute("SELECT level, node, state, open_conflicts, tags FROM cases WHERE id=?",
                                      (case_id,)).fetchone()
        return dict(zip(("level", "node", "state", "open_conflicts", "tags"), row, strict=True))

    def status(self, case_id: str) -> dict[str, Any]:
        row = self.store.conn.execute("SELECT colour, overdue, awaiting_sync, next_rule, obligations FROM case_status "
                                      "WHERE case_id=?", (case_id,)).fetchone()
        return {"colour": row[0], "overdue": row[1], "awaiting_sync": row[2], "next_rule": row[3],
                "obligations": json.loads(row[4])}


@pytest.fixture
def county(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> County:
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    c = County(tmp_path, Clock())
    yield c
    c.store.close()


def new_dispute(fc: FieldClient, parties: list[dict[str, Any]] | None = None) -> str:
    return fc.new_case({"title": "宅基地边界纠纷", "category": "dispute", "subject": "neighbour", "channel": "visit"},
                       parties if parties is not None else [PETITIONER])


def server_ops_by_kind(county: County, case_id: str) -> list[tuple[str, str, str]]:
    return [(op.entity, op.kind, str(op.values.get("kind") or op.values.get("action") or ""))
            for op in county.store.replica.ops_for_case(case_id) if op.device == county.store.keys.node_id]


def test_an_overdue_village_case_is_escalated_once_and_a_second_sweep_writes_nothing(county: County) -> None:
    fc, agent = county.laptop("v1", "330102101")
    case_id = new_dispute(fc)
    agent.sync()
    county.clock.advance(8)  # the village's 7 days have passed; the laptop syncs, the case untouched
    agent.sync()
    first = county.sweep()
    assert first.ops_written > 0
    case = county.case(case_id)
    assert (case["level"], case["node"]) == ("township", "330102100")
    kinds = {a["kind"] for a in county.alerts(case_id)}
    assert {"overdue", "escalated", "follow_up_required"} & kinds == {"overdue", "escalated"}
    written = server_ops_by_kind(county, case_id)
    assert ("case", "transition", "escalate") in written and ("notice", "create", "reminder_letter") in written
    again = county.sweep()
    assert again.ops_written == 0
    assert server_ops_by_kind(county, case_id) == written
    # the escalation reaches the laptop: the case has gone up
    agent.sync()
    row = fc.replica.conn.execute("SELECT level, node FROM cases WHERE id=?", (case_id,)).fetchone()
    assert tuple(row) == ("township", "330102100")


def test_a_restored_copy_sweeps_to_byte_identical_ops(county: County) -> None:
    fc, agent = county.laptop("v1", "330102101")
    ids = [new_dispute(fc) for _ in range(3)]
    agent.sync()
    county.clock.advance(9)
    agent.sync()
    county.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(county.root / "server", county.root / "restored")
    restored = ServerStore(county.root / "restored", clock=county.clock)
    try:
        county.sweep()
        county.sweep(restored)

        def written(store: ServerStore) -> list[str]:
            return sorted(canonical_json(op.to_dict()) for case_id in ids
                          for op in store.replica.ops_for_case(case_id) if op.device == store.keys.node_id)

        assert written(county.store) and written(county.store) == written(restored)
        assert county.store.replica.digest() == restored.replica.digest()
    finally:
        restored.close()


def test_a_close_stamped_before_the_escalation_but_arriving_after_it_withdraws_the_escalation(county: County) -> None:
    fc, agent = county.laptop("v1", "330102101")
    case_id = new_dispute(fc)
    agent.sync()  # the server knows the case; the laptop then works offline
    county.clock.advance(1)
    fc.transition(case_id, "accept")
    county.clock.advance(4)
    fc.transition(case_id, "close_by_agreement")  # day 5: in time, but not synced
    county.clock.advance(3.5)
    inside_grace = county.sweep()
    assert county.status(case_id)["awaiting_sync"] == 1
    assert inside_grace.by_kind.get("transition:escalate", 0) == 0
    county.clock.advance(3)  # day 11.5: past due + 72 h grace, still no word from the laptop
    county.sweep()
    assert county.case(case_id)["level"] == "township"
    assert {a["kind"] for a in county.alerts(case_id)} >= {"overdue", "escalated"}
    county.clock.advance(1)
    agent.sync()  # the close arrives; the merge's own sweep re-examines the case
    case = county.case(case_id)
    assert case["state"] == "closed" and case["level"] == "village"
    assert case["open_conflicts"] == 0  # the refused escalation is resolved, not left for a coordinator
    alerts = {a["kind"]: a for a in county.alerts(case_id)}
    assert alerts["escalated"]["withdrawn_at"] and alerts["overdue"]["withdrawn_at"]
    assert "in time" in alerts["escalated"]["withdrawn_reason"]
    letter = county.store.conn.execute(
        "SELECT voided, void_reason FROM notices WHERE case_id=? AND kind='reminder_letter'", (case_id,)).fetchone()
    assert letter[0] == 1 and "撤回" in letter[1]
    # the laptop's timeline shows the escalation and its withdrawal, with the reason
    agent.sync()
    timeline = json.dumps(fc.timeline(case_id), ensure_ascii=False)
    assert "withdrawn_reason" in timeline and "in time" in timeline
    assert fc.replica.conn.execute("SELECT open_conflicts FROM cases WHERE id=?", (case_id,)).fetchone()[0] == 0


def test_an_escalation_that_was_right_stays_when_the_late_close_arrives(county: County) -> None:
    fc, agent = county.laptop("v1", "330102101")
    case_id = new_dispute(fc)
    agent.sync()
    county.clock.advance(8)
    agent.sync()  # the laptop has synced after the deadline: overdue at once
    county.sweep()
    county.clock.advance(1)
    fc.transition(case_id, "accept")  # made offline, before it learnt of the escalation
    agent.sync()
    case = county.case(case_id)
    assert case["level"] == "township"
    alerts = {a["kind"]: a for a in county.alerts(case_id)}
    assert alerts["escalated"]["withdrawn_at"] is None and alerts["overdue"]["withdrawn_at"] is None
    assert case["open_conflicts"] == 1  # the village acting on a township case: for a person


def test_the_sweep_examines_only_due_and_changed_cases(county: County) -> None:
    fc, agent = county.laptop("v1", "330102101")
    for _ in range(5):
        new_dispute(fc)
    agent.sync()  # the merge's own sweep has examined the five new cases
    report = county.sweep()
    assert (report.due, report.unswept) == (0, 0) and report.cases == 0
    county.clock.advance(5)  # two days before the village deadline: a colour threshold and a warning
    report = county.sweep()
    assert report.due == 5 and report.by_kind["alert:warning"] == 5


def test_repeat_petitions_are_linked_across_villages_without_keeping_the_id_number(county: County) -> None:
    fc1, a1 = county.laptop("v1", "330102101")
    fc2, a2 = county.laptop("v2", "330102102")
    c1 = new_dispute(fc1)
    a1.sync()
    county.clock.advance(1)
    c2 = new_dispute(fc2, [{**PETITIONER, "id_number": "330102650101123", "name": "王建国"}])
    a2.sync()
    kinds1 = {(a["kind"], a["related_case"]) for a in county.alerts(c1)}
    kinds2 = {(a["kind"], a["related_case"]) for a in county.alerts(c2)}
    assert ("repeat", c2) in kinds1 and ("repeat", c1) in kinds2
    assert "repeat" in json.loads(county.case(c2)["tags"])
    dump = "\n".join(county.store.conn.iterdump())
    person_rows = [r[0] for r in county.store.conn.execute("SELECT key FROM person_keys")]
    assert person_rows and all("330102196501011237" not in k for k in person_rows)
    assert "330102196501011237" not in json.dumps([county.alerts(c1), county.alerts(c2)], ensure_ascii=False)
    assert dump.count("330102196501011237") >= 1  # it is in the parties' own rows, and only there


def test_a_county_registration_while_a_village_case_is_open_is_flagged_skip_level(county: County) -> None:
    fc1, a1 = county.laptop("v1", "330102101")
    fcc, ac = county.laptop("c", "330102", level="county")
    village_case = new_dispute(fc1)
    a1.sync()
    county.clock.advance(2)
    county_case = new_dispute(fcc)
    ac.sync()
    kinds = {a["kind"] for a in county.alerts(county_case)}
    assert "skip_level" in kinds
    assert "skip_level" in json.loads(county.case(county_case)["tags"])
    assert "skip_level" not in {a["kind"] for a in county.alerts(village_case)}


def test_normalised_id_numbers() -> None:
    assert normalise_id_number("３３０１０２１９６５０１０１１２３ｘ") == "33010219650101123X"
    assert normalise_id_number("330102650101123") == "330102196501011237"
    assert normalise_id_number("12345") is None


def test_a_laptop_whose_clock_is_a_week_behind_gets_sane_deadlines_and_is_flagged(county: County) -> None:
    behind = Clock(county.clock.t - 7 * DAY)  # the laptop's wall clock, a week slow
    fc = FieldClient.init(county.root / "slow", "password123", node="330102101", level="village", user="slow",
                          clock=behind)
    agent = SyncAgent(fc, county.transport, retries=0, backoff_s=0.0)
    agent.enroll(county.svc.create_enroll_code("330102101", url="http://127.0.0.1:9", hours=24 * 365))
    case_id = new_dispute(fc)  # received_at typed by the form on the slow clock
    agent.sync()
    status = county.status(case_id)
    village = next(o for o in status["obligations"] if o["rule"] == "village_handling")
    assert village["start"].startswith("2026-09-01T09:00")  # the server's day, not the laptop's
    assert village["due"] == "2026-09-08T23:59:59+08:00" and village["state"] == "pending"
    skew = [a for a in county.alerts(case_id) if a["kind"] == "clock_skew"]
    assert len(skew) == 1 and "10080" in skew[0]["message"]  # about a week, in minutes


def test_a_new_petition_on_a_final_matter_by_the_same_person_is_flagged(county: County) -> None:
    fc, agent = county.laptop("v1", "330102101")
    first = new_dispute(fc)
    for action in ("accept", "decide", "close", "finalize"):
        county.clock.advance(1)
        fc.transition(first, action, **({"decision": "explain"} if action == "decide" else {}))
    agent.sync()
    assert county.case(first)["state"] == "final"
    county.clock.advance(3)
    again = new_dispute(fc)  # the same person, the same subject
    agent.sync()
    flagged = [a for a in county.alerts(again) if a["kind"] == "final_refiled"]
    assert len(flagged) == 1 and flagged[0]["related_case"] == first
    assert "不再受理" in flagged[0]["message"]
    assert county.case(again)["state"] == "registered"  # flagged, not refused: a person answers it
    assert "repeat" in json.loads(county.case(again)["tags"])
