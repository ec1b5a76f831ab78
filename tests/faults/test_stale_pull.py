"""A stale pull request must not cost a laptop a case's history (a bug the fault suite's
replays pointed at, fixed in ``SyncService.presented_after``).

The server records in ``device_cases`` that a case newly in a device's scope had its
history sent "at" the answer's cursor, and a later request whose ``after`` is at least that
cursor gets no history. A stale request (a replayed one, a copy arriving late, an old
bundle's request file imported late) is answered from its old ``after``; when its answer
stops at the pull limit, its cursor can lie at or below where the laptop already is.
Before the fix, its answer was recorded like any other (lowering a case's ``sent_cursor``
to it): when the case had entered the laptop's scope after the laptop's own answer was
made, or the answer that did carry its history was lost, the laptop's next pull counted the
case as had, and the case's create never reached it. Now only a request past every cursor
the device named before records anything.

Each test: a township laptop routes its case into a village; the village laptop misses the
case's history in one way; a stale request of that laptop reaches the server; the laptop
syncs, and must hold every op of the case.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import SyncAgent, WsgiTransport
from schema import envelope as env
from sync_server.app import create_app
from sync_server.bundles import export_for, import_folder
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore

OCTET = "application/octet-stream"
TOWN, VILLAGE = "330102100", "330102102"
NODES = [
    {"code": "330102", "name": "上城区", "level": "county", "parent": ""},
    {"code": TOWN, "name": "东乡", "level": "township", "parent": "330102"},
    {"code": "330102101", "name": "东村", "level": "village", "parent": TOWN},
    {"code": VILLAGE, "name": "西村", "level": "village", "parent": TOWN},
]
VALUES = {"title": "乡里登记的案件", "category": "dispute", "subject": "neighbour", "channel": "visit",
          "summary": "当事人反映情况。"}


@dataclass
class County:
    store: ServerStore
    svc: SyncService
    transport: WsgiTransport
    town: FieldClient
    town_agent: SyncAgent
    village: FieldClient
    village_agent: SyncAgent
    neighbour: FieldClient
    neighbour_agent: SyncAgent
    case: str

    def request(self, after: int) -> bytes:
        """A pull request of the village laptop (limit 300, as its agent sends)."""
        c = self.village
        return env.seal({"device": c.device_id, "after": after, "limit": 300, "sent_ms": int(time.time() * 1000)},
                        type="request", sender=c.device_id, seq=0, signing_key=c.keys.ed25519,
                        recipient=self.village_agent._server_keys()[0])

    def post(self, body: bytes) -> bytes:
        status, _, raw = self.transport.post("/api/v1/pull", body, OCTET)
        assert status == 200
        return raw

    def busy_village(self, n: int = 310) -> None:
        """More than one pull's worth (300) of ops in the village's scope, by its other laptop."""
        busy = self.neighbour.new_case({**VALUES, "title": "村里的案件"})
        for i in range(n):
            self.neighbour.add_record("note", busy, {"text": f"记录{i}", "written_at": "2026-11-18T10:00:00+08:00"})
        self.neighbour_agent.sync()

    def route_case_to_village(self) -> None:
        self.town.transition(self.case, "route", to_node=VILLAGE)  # 交办
        self.town_agent.sync()

    def village_holds_the_whole_case(self) -> None:
        self.village_agent.sync()
        self.village_agent.sync()
        q = "SELECT op_id FROM ops WHERE case_id=?"
        on_server = {r[0] for r in self.store.conn.execute(q, (self.case,))}
        on_laptop = {r[0] for r in self.village.replica.conn.execute(q, (self.case,))}
        assert on_laptop == on_server, f"the laptop misses {len(on_server - on_laptop)} op(s) of the routed case"
        assert self.village.replica.get("case", self.case) is not None


@pytest.fixture
def county(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[County]:
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

        town, town_agent = laptop("t", TOWN, "township")
        village, village_agent = laptop("c", VILLAGE, "village")
        neighbour, neighbour_agent = laptop("c2", VILLAGE, "village")
        case = town.new_case(VALUES, [{"role": "petitioner", "name": "王建国", "phone": "13800000001"}])
        town_agent.sync()
        village_agent.sync()
        neighbour_agent.sync()
        yield County(store, svc, transport, town, town_agent, village, village_agent, neighbour, neighbour_agent,
                     case)
    finally:
        for thing in reversed(made):
            thing.close()


def test_an_old_request_replayed_after_a_lost_answer(county: County) -> None:
    """The answer carrying the history is lost; an old request (cursor from before 300+ ops of
    the village) turns up; its answer stops at the limit below the laptop's cursor."""
    stale = county.request(int(county.village.meta("pull_cursor") or 0))
    county.busy_village()
    county.village_agent.sync()
    assert county.village.replica.get("case", county.case) is None  # not in its scope yet
    county.route_case_to_village()
    county.post(county.request(int(county.village.meta("pull_cursor") or 0)))  # its answer never arrives
    county.post(stale)
    county.village_holds_the_whole_case()


def test_a_copy_of_the_last_request_arriving_late(county: County) -> None:
    """The laptop takes the first page of its pull; then the case is routed in; then a copy of
    that same request reaches the server (a network duplicate delivered late): its answer
    stops at the limit exactly where the laptop is, and must not count the case as sent."""
    county.busy_village()
    first = county.request(int(county.village.meta("pull_cursor") or 0))
    answer = county.village_agent._open_answer(county.post(first))
    assert answer["more"] is True
    county.village_agent._take(answer, None, None)
    county.route_case_to_village()
    county.post(first)  # the late copy
    county.village_holds_the_whole_case()


def test_an_old_usb_request_file_imported_late(county: County, tmp_path: Path) -> None:
    """A stick exported long ago (its request names an old cursor) is imported after the
    answer carrying the history was lost; ``export-for`` answers from the old cursor."""
    old_stick = tmp_path / "old-stick"
    county.village_agent.export_bundle(old_stick)
    county.busy_village()
    county.village_agent.sync()
    county.route_case_to_village()
    county.post(county.request(int(county.village.meta("pull_cursor") or 0)))  # its answer never arrives
    import_folder(county.svc, old_stick)
    export_for(county.svc, county.village.device_id, tmp_path / "answers", limit=300)  # left in a drawer
    county.village_holds_the_whole_case()
