"""A real county server for the fuzzer: ``sync-server init``, ``jurisdiction import`` and
``serve`` on 127.0.0.1 (the end-to-end fixtures' ``Server``), with enrolled laptops so
that the authenticated endpoints can be reached with valid signatures, not only refused
at the door.

    village   a laptop of 东村 with a case, a visit and a note, synced: its change sets
              are the valid envelopes that the hostile cases cut, flip and replay
    fuzzer    a laptop of 东村 whose keys sign the generated envelopes; the laptop's
              own bundle import is fuzzed on it
    revoked   a laptop enrolled, then revoked (``sync-server device revoke``)
    stranger  keys that were never enrolled
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import HttpTransport, SyncAgent
from sync_server import keys as server_keys
from tests.end_to_end.conftest import JURISDICTION_CSV, PASSWORD, VILLAGE_1, Server, free_port


@dataclass
class Device:
    client: FieldClient
    agent: SyncAgent

    @property
    def id(self) -> str:
        return self.client.device_id

    @property
    def ed25519(self) -> Ed25519PrivateKey:
        return self.client.keys.ed25519

    def envelopes(self) -> list[tuple[int, bytes]]:
        """Every change set this laptop packed: (seq, envelope)."""
        return [(int(s), bytes(e)) for s, e in self.agent.conn.execute("SELECT seq, envelope FROM outgoing ORDER BY seq")]


@dataclass
class Lab:
    root: Path
    server: Server
    keys: server_keys.ServerKeys
    village: Device
    fuzzer: Device
    revoked: Device
    stranger_ed: Ed25519PrivateKey
    other_server_x: X25519PrivateKey  # "another county's server"
    raw_ops: list[dict[str, Any]] = field(default_factory=list)  # the village's ops as they travel

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def server_x(self) -> X25519PublicKey:
        return self.keys.x25519.public_key()


def _laptop(root: Path, server: Server, name: str) -> Device:
    client = FieldClient.init(root / name, PASSWORD, node=VILLAGE_1, level="village", user=f"user.{name}")
    agent = SyncAgent(client, HttpTransport(server.url, timeout=(5.0, 30.0)), retries=0, backoff_s=0.0)
    agent.enroll(server.enroll_code(VILLAGE_1))
    return Device(client, agent)


@contextmanager
def lab(root: Path | None = None) -> Iterator[Lab]:
    """Start the server, enroll the laptops; stop everything and (unless ``root`` was
    given) remove the folder on the way out."""
    own = root is None
    base = Path(tempfile.mkdtemp(prefix="minqing-fuzz-")) if root is None else root
    base.mkdir(parents=True, exist_ok=True)
    csv = base / "county.csv"
    csv.write_text(JURISDICTION_CSV, encoding="utf-8")
    server = Server(data=base / "server", port=free_port(), log=base / "server.log")
    server.cli("init", "--url", "http://127.0.0.1:8730")
    server.cli("jurisdiction", "import", str(csv))
    scrypt_n = keystore.SCRYPT_N
    keystore.SCRYPT_N = 2**10  # a cheaper key file (its cost is stored in it): laptops made per run
    devices: list[Device] = []
    try:
        try:
            server.start()
        except RuntimeError:  # the free port was taken between probing and binding
            server.port = free_port()
            server.start()
        village = _laptop(base, server, "village")
        devices.append(village)
        case = village.client.new_case(
            {"title": "宅基地边界纠纷", "category": "dispute", "subject": "neighbour", "channel": "visit",
             "summary": "王建国反映：与邻居宅基地边界不清，请求协调解决。"},
            [{"role": "petitioner", "name": "王建国", "phone": "13812345678"}, {"role": "respondent", "name": "李秀英"}])
        village.client.add_record("visit", case, {"kind": "home", "visited_at": "2026-11-18T09:30:00+08:00",
                                                  "visitor": "user.village", "summary": "上门了解情况。"})
        village.client.add_record("note", case, {"text": "已电话联系当事人。", "written_at": "2026-11-18T10:00:00+08:00"})
        village.agent.sync()
        fuzzer = _laptop(base, server, "fuzzer")
        devices.append(fuzzer)
        revoked = _laptop(base, server, "revoked")
        devices.append(revoked)
        server.cli("device", "revoke", revoked.id)
        raw_ops: list[dict[str, Any]] = []
        from schema import envelope as env

        for _, data in village.envelopes():
            opened = env.open(data, recipient_key=server_keys.load(server.data).x25519,
                              sender_key=lambda s: village.ed25519.public_key())
            raw_ops.extend(json.loads(json.dumps(opened.payload["ops"])))
        yield Lab(root=base, server=server, keys=server_keys.load(server.data), village=village, fuzzer=fuzzer,
                  revoked=revoked, stranger_ed=Ed25519PrivateKey.generate(),
                  other_server_x=X25519PrivateKey.generate(), raw_ops=raw_ops)
    finally:
        keystore.SCRYPT_N = scrypt_n
        for d in devices:
            t = d.agent._transport
            if isinstance(t, HttpTransport):
                t.session.close()
            try:
                d.client.close()
            except Exception:  # noqa: BLE001 - a client already closed
                pass
        server.stop()
        if own:
            shutil.rmtree(base, ignore_errors=True)
