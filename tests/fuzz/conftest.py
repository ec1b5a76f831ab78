"""In-process fixtures of the fuzz tests: the server's Flask app with one enrolled laptop
(``WsgiTransport``), made once per module. The end-to-end parts (``test_fuzz.py``) start
a real ``sync-server serve`` instead (``tests.fuzz.lab``)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import SyncAgent, WsgiTransport
from schema import envelope as env
from sync_server import keys as server_keys
from sync_server.app import create_app
from sync_server.cli import main
from sync_server.service import SyncService
from sync_server.store import ServerStore
from tests.fuzz import craft as c

VILLAGE = "330102101"
CSV = "code,name,level,parent\n330102,上城区,county,\n330102101,东村,village,330102\n"
OCTET = "application/octet-stream"


@dataclass
class Site:
    client: FlaskClient
    data: Path
    agent: SyncAgent
    laptop: FieldClient
    keys: server_keys.ServerKeys
    envelope: bytes  # the laptop's first change set, acknowledged
    raw_ops: list[dict[str, Any]]  # its ops as they travel

    @property
    def device(self) -> str:
        return self.laptop.device_id

    @contextlib.contextmanager
    def service(self) -> Iterator[SyncService]:
        """The server's service in-process, on the same data folder as the app."""
        store = ServerStore(self.data)
        try:
            yield SyncService(store)
        finally:
            store.close()

    def request(self, payload: Any, **kw: Any) -> bytes:
        return c.craft(payload, signing_key=self.laptop.keys.ed25519, recipient=self.keys.x25519.public_key(),
                       sender=self.device, seq=0, type="request", **kw)

    def post(self, path: str, body: bytes, content_type: str = OCTET) -> tuple[int, Any]:
        r = self.client.post(path, data=body, content_type=content_type)
        return r.status_code, (r.get_json(silent=True) if r.mimetype == "application/json" else r.get_data())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server and one laptop of 东村 for the module; the laptop has synced a case with a
    note (``envelope``, ``raw_ops``)."""
    tmp_path = tmp_path_factory.mktemp("regressions")
    mp = pytest.MonkeyPatch()
    mp.setattr(keystore, "SCRYPT_N", 2**10)
    data = tmp_path / "server"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["init", "--data", str(data)]) == 0
            (tmp_path / "county.csv").write_text(CSV, encoding="utf-8")
            assert main(["jurisdiction", "import", str(tmp_path / "county.csv"), "--data", str(data)]) == 0
        store = ServerStore(data)
        code = SyncService(store).create_enroll_code(VILLAGE, url="http://127.0.0.1:1")
        store.close()
        app = create_app(data, {"LOG_JSON": False})
        laptop = FieldClient.init(tmp_path / "lap", "passphrase1", node=VILLAGE, user="li.ming")
    finally:
        mp.undo()
    agent = SyncAgent(laptop, WsgiTransport(app), retries=0, backoff_s=0.0)
    agent.enroll(code)
    case = laptop.new_case({"title": "宅基地边界纠纷", "category": "dispute", "subject": "neighbour",
                            "channel": "visit"}, [{"role": "petitioner", "name": "王建国", "phone": "13812345678"}])
    laptop.add_record("note", case, {"text": "已电话联系当事人。", "written_at": "2026-11-18T10:00:00+08:00"})
    agent.sync()
    envelope = bytes(agent.conn.execute("SELECT envelope FROM outgoing ORDER BY seq").fetchone()[0])
    keys = server_keys.load(data)
    opened = env.open(envelope, recipient_key=keys.x25519, sender_key=lambda s: laptop.keys.ed25519.public_key())
    try:
        yield Site(app.test_client(), data, agent, laptop, keys, envelope, list(opened.payload["ops"]))
    finally:
        laptop.close()


