"""Fixtures for the sync end-to-end tests: a real county server process and real laptops.

``server``: ``sync-server init`` + ``jurisdiction import`` of a small county, then
``sync-server serve`` on 127.0.0.1 (a free port) as a subprocess, waited for on
``/api/v1/ping`` and stopped at teardown. Administration goes through the CLI
(``server.cli(...)``); what the server holds is read straight from its SQLite file
(``server.db()``), read-only.

``laptops``: a factory of enrolled laptops (``FieldClient`` + ``SyncAgent`` over
``HttpTransport``), enrolled with codes from ``sync-server device add --json``.

The county::

    330102     county    上城区
    ├── 330102100  township 东乡
    │   ├── 330102101  village 东村
    │   └── 330102102  village 西村
    └── 330102200  township 西乡
        └── 330102201  village 南村
"""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from conflict.digest import op_digest
from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import HttpTransport, SyncAgent

PASSWORD = "password123"
COUNTY, TOWN_E, TOWN_W = "330102", "330102100", "330102200"
VILLAGE_1, VILLAGE_2, VILLAGE_3 = "330102101", "330102102", "330102201"
JURISDICTION_CSV = f"""code,name,level,parent
{COUNTY},上城区,county,
{TOWN_E},东乡,township,{COUNTY}
{TOWN_W},西乡,township,{COUNTY}
{VILLAGE_1},东村,village,{TOWN_E}
{VILLAGE_2},西村,village,{TOWN_E}
{VILLAGE_3},南村,village,{TOWN_W}
"""
OCTET = "application/octet-stream"
_PHONES = itertools.count(12345678)
CLI_TIMEOUT = 60
START_TIMEOUT = 20.0


def sync_server_cmd() -> list[str]:
    """The installed ``sync-server`` script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "sync-server"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sync_server.cli"]


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_error_body(status: int, body: bytes | str | dict[str, Any], *, code: str | None = None,
                      prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every refusal is ``{"ok": false, "error": {"code", "message", "details"}}`` (docs/sync.md)."""
    doc = body if isinstance(body, dict) else json.loads(body)
    assert 400 <= status < 500, (status, doc)
    assert set(doc) == {"ok", "error"}, doc
    assert doc["ok"] is False
    assert set(doc["error"]) == {"code", "message", "details"}, doc
    assert isinstance(doc["error"]["code"], str) and doc["error"]["code"]
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    assert "Traceback" not in json.dumps(doc, ensure_ascii=False)
    if code is not None:
        assert doc["error"]["code"] == code, doc
    if prefixes:
        assert doc["error"]["code"].startswith(prefixes), doc
    return doc["error"]


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Server:
    data: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- the CLI ----

    def cli(self, *args: str, check: bool = True, json_out: bool = True) -> CliResult:
        cmd = [*sync_server_cmd(), *args, "--data", str(self.data)]
        if json_out:
            cmd.append("--json")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
        result = CliResult(p.returncode, p.stdout, p.stderr)
        if check:
            assert p.returncode == 0, f"{' '.join(args)} exited {p.returncode}: {p.stdout}\n{p.stderr}"
        assert "Traceback" not in p.stderr, p.stderr
        return result

    def enroll_code(self, node: str, *, hours: float | None = None) -> str:
        args = ["device", "add", "--node", node, "--url", self.url]
        if hours is not None:
            args += ["--hours", repr(hours)]
        doc = self.cli(*args).json()
        assert doc["ok"] is True and doc["code"].startswith("MQ1.")
        return str(doc["code"])

    # ---- reading the server's database (never writing, except tamper tests) ----

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.data / "server.db", timeout=10)
        try:
            conn.execute("PRAGMA query_only=1")
            yield conn
        finally:
            conn.close()

    def scalar(self, sql: str, *params: Any) -> Any:
        with self.db() as conn:
            row = conn.execute(sql, params).fetchone()
        return row[0] if row else None

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.db() as conn:
            return [tuple(r) for r in conn.execute(sql, params)]

    def op_ids(self) -> list[str]:
        return [r[0] for r in self.rows("SELECT op_id FROM ops")]

    def digest(self) -> str:
        return op_digest(self.rows("SELECT op_id, stamp FROM ops"))

    def ledger_count(self) -> int:
        return int(self.scalar("SELECT COUNT(*) FROM ledger"))

    def refusal_codes(self) -> list[str]:
        return [r[0] for r in self.rows("SELECT code FROM refusals ORDER BY id")]

    def conflicts(self) -> list[dict[str, Any]]:
        out = []
        for cid, field_, kind, op_ids, status in self.rows(
                "SELECT id, field, kind, op_ids, status FROM conflicts ORDER BY id"):
            out.append({"id": cid, "field": field_, "kind": kind, "op_ids": json.loads(op_ids), "status": status})
        return out

    def post(self, path: str, body: bytes, content_type: str = OCTET) -> requests.Response:
        with requests.Session() as s:
            return s.post(self.url + path, data=body, headers={"Content-Type": content_type}, timeout=30)

    # ---- the process ----

    def start(self) -> None:
        assert self.proc is None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*sync_server_cmd(), "serve", "--data", str(self.data), "--host", "127.0.0.1",
                 "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sync-server serve exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with requests.Session() as s:
                    r = s.get(self.url + "/api/v1/ping", timeout=1)
                if r.status_code == 200 and r.json().get("ok") is True:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sync-server serve did not answer /api/v1/ping in {START_TIMEOUT}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="session")
def server_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sync-server init`` and ``jurisdiction import`` through the CLI, once per session;
    each test serves its own copy of the folder."""
    base = tmp_path_factory.mktemp("server-template")
    csv = base / "county.csv"
    csv.write_text(JURISDICTION_CSV, encoding="utf-8")
    srv = Server(data=base / "server", port=0, log=base / "unused.log")
    init = srv.cli("init", "--url", "http://127.0.0.1:8730").json()
    assert init["ok"] is True and len(init["node_id"]) == 16
    imported = srv.cli("jurisdiction", "import", str(csv)).json()
    assert imported == {"ok": True, "imported": 6, "new": 6}
    nodes = {n["code"]: n for n in srv.cli("jurisdiction", "list").json()}
    assert nodes[VILLAGE_1]["parent"] == TOWN_E and nodes[VILLAGE_3]["parent"] == TOWN_W
    return srv.data


@pytest.fixture
def server(server_template: Path, tmp_path: Path) -> Iterator[Server]:
    """A running ``sync-server serve`` on its own copy of the county's data folder."""
    data = tmp_path / "server"
    shutil.copytree(server_template, data)
    srv = Server(data=data, port=free_port(), log=tmp_path / "server.log")
    try:
        srv.start()
    except RuntimeError:
        # the free port may have been taken between probing and binding: one more try
        srv.port = free_port()
        srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Laptop:
    """A field laptop: its client, its agent talking HTTP to the server."""

    name: str
    client: FieldClient
    agent: SyncAgent
    dir: Path
    extra_sessions: list[Any] = field(default_factory=list)

    @property
    def device_id(self) -> str:
        return self.client.device_id

    def sync(self) -> Any:
        return self.agent.sync()

    def agent_via(self, url: str, *, retries: int = 0, timeout: tuple[float, float] = (5.0, 15.0)) -> SyncAgent:
        """Another agent on the same laptop, talking to ``url`` (a proxy), failing fast."""
        transport = HttpTransport(url, timeout=timeout)
        self.extra_sessions.append(transport.session)
        return SyncAgent(self.client, transport, retries=retries, backoff_s=0.0)

    def written(self) -> set[str]:
        """Every op id this laptop authored (its outbox)."""
        return {r[0] for r in self.client.replica.conn.execute("SELECT op_id FROM outbox")}

    def op_ids(self) -> set[str]:
        return {r[0] for r in self.client.replica.conn.execute("SELECT op_id FROM ops")}

    def digest(self) -> str:
        return self.client.replica.digest()

    def outbox_all_acked(self) -> bool:
        return self.client.pending_count() == 0 and not self.agent.unacked()

    # ---- casework ----

    def new_case(self, title: str = "宅基地边界纠纷", *, phone: str | None = None, **values: Any) -> str:
        """A dispute with a petitioner; each case's petitioner has a phone of its own unless
        ``phone`` is given (the same name and phone make a repeat petition, docs/deadlines.md)."""
        v = {"title": title, "category": "dispute", "subject": "neighbour", "channel": "visit",
             "summary": "王建国反映：与邻居宅基地边界不清，请求协调解决。", **values}
        phone = phone or f"138{next(_PHONES):08d}"
        return self.client.new_case(v, [{"role": "petitioner", "name": "王建国", "phone": phone},
                                        {"role": "respondent", "name": "李秀英"}])

    def note(self, case_id: str, text: str = "已电话联系当事人，约定下周再谈。") -> str:
        return self.client.add_record("note", case_id, {"text": text, "written_at": "2026-11-18T10:00:00+08:00"})

    def visit(self, case_id: str) -> str:
        return self.client.add_record("visit", case_id, {"kind": "home", "visited_at": "2026-11-18T09:30:00+08:00",
                                                         "visitor": self.client.user, "summary": "上门了解情况。"})

    def close(self) -> None:
        for s in self.extra_sessions:
            s.close()
        t = self.agent._transport
        if isinstance(t, HttpTransport):
            t.session.close()
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - an erased laptop's client is closed already
            pass


LaptopFactory = Callable[..., Laptop]


@pytest.fixture
def laptops(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LaptopFactory]:
    """``laptops(name, node, level="village", enroll=True)``: a new laptop, enrolled online."""
    # A cheaper scrypt for the key file (its cost is stored in the file): many laptops per test.
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    made: list[Laptop] = []

    def make(name: str, node: str, *, level: str = "village", enroll: bool = True, user: str | None = None) -> Laptop:
        d = tmp_path / name
        client = FieldClient.init(d, PASSWORD, node=node, level=level, user=user or f"user.{name}")
        agent = SyncAgent(client, HttpTransport(server.url, timeout=(5.0, 30.0)), retries=0, backoff_s=0.0)
        lap = Laptop(name, client, agent, d)
        made.append(lap)
        if enroll:
            info = agent.enroll(server.enroll_code(node))
            assert info["node"]["code"] == node
        return lap

    yield make
    for lap in made:
        lap.close()


def copy_folder(src: Path, dst: Path) -> Path:
    """A relay carries files: a plain copy, nothing else."""
    shutil.copytree(src, dst)
    return dst
