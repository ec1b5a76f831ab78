"""A known bug the fault suite's replays point at: a stale pull request loses a case's history.

``SyncService._collect`` records in ``device_cases`` that a case newly in a device's scope
had its history sent "at" the answer's cursor, and a later request whose ``after`` is at
least that cursor gets no history. A stale request (a replayed one, or an old bundle's
request file imported late) is answered from its old ``after``; when its answer stops at
the pull limit, its cursor lies below where the laptop already is, and the upsert lowers
the case's ``sent_cursor`` to it (``WHERE device_cases.sent_cursor > after``). If the
answer that did carry the history was lost on the way, the laptop's next pull counts the
case as had: the case's create and everything before the laptop's cursor never reach it.

Steps: a township laptop routes its case into a village; the village laptop's pull that
carries the case's history is lost; an old pull request of that laptop (cursor 0, from
before 300+ ops of its village) arrives at the server; the laptop syncs: it has the route
op but not the case.

Strict xfail until fixed: the fix is to record nothing in ``device_cases`` for a request
whose ``after`` is below the highest ``after`` the device itself has presented (kept per
device, e.g. in ``server_meta``), so only the device's own current position moves it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import SyncAgent, WsgiTransport
from schema import envelope as env
from sync_server.app import create_app
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore

OCTET = "application/octet-stream"
NODES = [
    {"code": "330102", "name": "上城区", "level": "county", "parent": ""},
    {"code": "330102100", "name": "东乡", "level": "township", "parent": "330102"},
    {"code": "330102101", "name": "东村", "level": "village", "parent": "330102100"},
    {"code": "330102102", "name": "西村", "level": "village", "parent": "330102100"},
]


def _pull_request(agent: SyncAgent, after: int) -> bytes:
    c = agent.client
    return env.seal({"device": c.device_id, "after": after, "limit": 300, "sent_ms": int(time.time() * 1000)},
                    type="request", sender=c.device_id, seq=0, signing_key=c.keys.ed25519,
                    recipient=agent._server_keys()[0])


@pytest.mark.xfail(strict=True, reason="bug: a stale pull request lowers device_cases.sent_cursor, so a case "
                                       "newly in scope whose history answer was lost never reaches the laptop")
def test_a_stale_pull_request_does_not_cost_a_laptop_a_case_history(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    store = ServerStore.init(tmp_path / "server")
    made: list[Any] = [store]
    try:
        import_nodes(store, NODES)
        svc = SyncService(store)
        transport = WsgiTransport(create_app(tmp_path / "server"))

        def laptop(name: str, node: str, level: str) -> tuple[FieldClient, SyncAgent]:
            c = FieldClient.init(tmp_path / name, "password123", node=node, level=level, user=f"user.{name}")
            made.append(c)
            agent = SyncAgent(c, transport)
            agent.enroll(svc.create_enroll_code(node, url="http://127.0.0.1:8730"))
            return c, agent

        town, town_agent = laptop("t", "330102100", "township")
        village, village_agent = laptop("c", "330102102", "village")
        neighbour, neighbour_agent = laptop("c2", "330102102", "village")
        values = {"title": "乡里登记的案件", "category": "dispute", "subject": "neighbour", "channel": "visit",
                  "summary": "当事人反映情况。"}
        case = town.new_case(values, [{"role": "petitioner", "name": "王建国", "phone": "13800000001"}])
        town_agent.sync()
        stale = _pull_request(village_agent, 0)  # the village laptop's request from before all that follows
        busy = neighbour.new_case({**values, "title": "村里的案件"})
        for i in range(310):  # more than one pull's worth (300) of ops in the village's scope
            neighbour.add_record("note", busy, {"text": f"记录{i}", "written_at": "2026-11-18T10:00:00+08:00"})
        neighbour_agent.sync()
        village_agent.sync()
        assert village.replica.get("case", case) is None  # not in its scope yet

        town.transition(case, "route", to_node="330102102")  # 交办 to the village
        town_agent.sync()
        lost = _pull_request(village_agent, int(village.meta("pull_cursor") or 0))
        status, _, _ = transport.post("/api/v1/pull", lost, OCTET)  # its answer never arrives
        assert status == 200
        status, _, _ = transport.post("/api/v1/pull", stale, OCTET)  # the old request turns up
        assert status == 200
        village_agent.sync()
        village_agent.sync()

        on_server = {r[0] for r in store.conn.execute("SELECT op_id FROM ops WHERE case_id=?", (case,))}
        on_laptop = {r[0] for r in village.replica.conn.execute("SELECT op_id FROM ops WHERE case_id=?", (case,))}
        assert on_laptop == on_server, f"the laptop misses {len(on_server - on_laptop)} op(s) of the routed case"
        assert village.replica.get("case", case) is not None
    finally:
        for thing in reversed(made):
            thing.close()
