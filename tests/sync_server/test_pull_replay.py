"""A replayed pull request is answered but is no news of the laptop.

A signed pull request carries the laptop's clock reading (``sent_ms``) and its cursor, and
no nonce: anyone on the link can resend it. Before, every copy set the device's last
contact (which ends "awaiting sync" in the deadline engine, docs/deadlines.md) and its
clock offset from the old reading. Now only a request whose cursor or clock reading is
past every one before counts (``SyncService._fresh_request``).
"""

from __future__ import annotations

from collections.abc import Iterator
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

NODES = [
    {"code": "330102", "name": "上城区", "level": "county", "parent": ""},
    {"code": "330102100", "name": "东乡", "level": "township", "parent": "330102"},
    {"code": "330102101", "name": "东村", "level": "village", "parent": "330102100"},
]
T0 = 1_795_000_000.0  # seconds
DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    clock = Clock()
    ServerStore.init(tmp_path / "server").close()
    app = create_app(tmp_path / "server", {"MINQING_CLOCK": clock, "TESTING": True})
    store = ServerStore(tmp_path / "server", clock=clock)
    import_nodes(store, NODES)
    svc = SyncService(store)
    laptop = FieldClient.init(tmp_path / "laptop", "password123", node="330102101", level="village", user="li")
    agent = SyncAgent(laptop, WsgiTransport(app))
    agent.enroll(svc.create_enroll_code("330102101", url="http://127.0.0.1:8730"))
    try:
        yield {"clock": clock, "store": store, "svc": svc, "laptop": laptop, "agent": agent}
    finally:
        laptop.close()
        store.close()


def _device(store: ServerStore, device_id: str) -> tuple[int, int | None]:
    row = store.conn.execute("SELECT last_contact_ms, clock_offset_ms FROM devices WHERE device_id=?",
                             (device_id,)).fetchone()
    return row[0], row[1]


def _request(site: dict[str, Any], after: int, sent_ms: int) -> bytes:
    c: FieldClient = site["laptop"]
    return env.seal({"device": c.device_id, "after": after, "limit": 300, "sent_ms": sent_ms},
                    type="request", sender=c.device_id, seq=0, signing_key=c.keys.ed25519,
                    recipient=site["agent"]._server_keys()[0])


def test_a_replayed_pull_request_is_answered_but_moves_neither_contact_nor_offset(site: dict[str, Any]) -> None:
    svc: SyncService = site["svc"]
    device = site["laptop"].device_id
    clock: Clock = site["clock"]
    captured = _request(site, 0, int(T0 * 1000))  # the laptop's clock agrees with the server's
    svc.pull(captured)
    contact, offset = _device(site["store"], device)
    assert contact == int(T0 * 1000) and offset is not None and abs(offset) < 1000

    clock.t = T0 + 5 * DAY  # five days later the laptop has not synced; someone resends the request
    answer = svc.pull(captured)
    assert answer  # still answered: the request is genuine, only old
    assert _device(site["store"], device) == (contact, offset)

    fresh = _request(site, 0, int((T0 + 5 * DAY) * 1000) - 3_600_000)  # the laptop itself, an hour slow
    svc.pull(fresh)
    contact2, offset2 = _device(site["store"], device)
    assert contact2 == int((T0 + 5 * DAY) * 1000)
    assert offset2 is not None and abs(offset2 - 3_600_000) < 1000


def test_a_request_with_a_new_cursor_counts_even_when_the_laptop_clock_went_back(site: dict[str, Any]) -> None:
    svc: SyncService = site["svc"]
    device = site["laptop"].device_id
    clock: Clock = site["clock"]
    svc.pull(_request(site, 0, int((T0 + 2 * DAY) * 1000)))  # the laptop's clock two days fast
    clock.t = T0 + DAY
    # its clock is put right (now behind its earlier reading), and the cursor has moved
    svc.pull(_request(site, 1, int((T0 + DAY) * 1000)))
    contact, offset = _device(site["store"], device)
    assert contact == int((T0 + DAY) * 1000) and offset is not None and abs(offset) < 1000
