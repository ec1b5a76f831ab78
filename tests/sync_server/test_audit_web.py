"""The auditor's pages (/web/audit, docs/audit.md): behind the coordinator web's login, for the
auditor and the administrator only; devices with their gaps, the report by day and device,
the ledger check; Chinese by default, English on request; CSV exports logged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import SyncAgent, WsgiTransport
from sync_server.app import create_app
from sync_server.cli import main
from sync_server.service import SyncService
from sync_server.store import ServerStore
from sync_server.users import add_user

pytest.importorskip("sync_server.web.views")  # the coordinator web gives these pages their login

PASSWORD = "password1234"
VILLAGE = "330102101"
CSV = """code,name,level,parent
330102,上城区,county,
330102100,东乡,township,330102
330102101,东村,village,330102100
"""


@dataclass
class Site:
    app: Flask
    data: Path
    device: str


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Site]:
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    data = tmp_path / "server"
    assert main(["init", "--data", str(data)]) == 0
    (tmp_path / "county.csv").write_text(CSV, encoding="utf-8")
    assert main(["jurisdiction", "import", str(tmp_path / "county.csv"), "--data", str(data)]) == 0
    capsys.readouterr()
    store = ServerStore(data)
    with store.transaction():
        for name, role in (("it.wang", "auditor"), ("admin.li", "admin"), ("coord.zhao", "coordinator")):
            add_user(store.conn, name, PASSWORD, role=role, now_ms=store.now_ms())
    code = SyncService(store).create_enroll_code(VILLAGE, url="http://127.0.0.1:1")
    store.close()
    app = create_app(data, {"LOG_JSON": False})
    laptop = FieldClient.init(tmp_path / "lap", "passphrase1", node=VILLAGE, user="li.ming")
    agent = SyncAgent(laptop, WsgiTransport(app), retries=0, backoff_s=0.0)
    agent.enroll(code)
    case = laptop.new_case({"title": "宅基地边界纠纷", "category": "dispute", "subject": "neighbour", "channel": "visit"},
                           [{"role": "petitioner", "name": "王建国", "phone": "13812345678"}])
    for i in range(5):
        laptop.add_record("note", case, {"text": f"记录{i}", "written_at": "2026-11-18T10:00:00+08:00"})
    agent.pack(chunk_ops=2)
    client = app.test_client()
    for seq, envelope, _ in agent.unacked():  # the second batch is lost on the way
        if seq != 2:
            assert client.post("/api/v1/push", data=envelope, content_type="application/octet-stream").status_code == 200
    try:
        yield Site(app, data, laptop.device_id)
    finally:
        laptop.close()


def login(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    page = client.get("/web/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page[:500]
    r = client.post("/web/login", data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)})
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    return client


def test_the_audit_pages_need_an_auditor_or_administrator(site: Site) -> None:
    anonymous = site.app.test_client().get("/web/audit/devices")
    assert anonymous.status_code == 302 and "/web/login" in anonymous.headers["Location"]
    coordinator = login(site.app, "coord.zhao").get("/web/audit/devices")
    assert coordinator.status_code == 403 and "Traceback" not in coordinator.get_data(as_text=True)
    for who in ("it.wang", "admin.li"):
        assert login(site.app, who).get("/web/audit/devices").status_code == 200


def test_devices_page_shows_the_gap_in_chinese_and_english_and_exports_csv(site: Site) -> None:
    client = login(site.app, "it.wang")
    page = client.get("/web/audit/devices")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "缺号" in html and site.device in html
    row = html[html.index(f'id="device-{site.device}"'):]
    assert '<span class="badge badge-red">2</span>' in row[:row.index("</tr>")]
    english = client.get("/web/lang/en?next=/web/audit/devices", follow_redirects=True).get_data(as_text=True)
    assert "Gaps" in english and "缺号" not in english
    csv = client.get("/web/audit/export/devices.csv")
    assert csv.status_code == 200 and csv.headers["Content-Type"].startswith("text/csv")
    text = csv.get_data().decode("utf-8-sig")
    assert text.splitlines()[0].startswith("Device,Unit") and site.device in text and ",2," in text
    store = ServerStore(site.data)
    try:
        logged = store.conn.execute("SELECT username, what FROM access_log WHERE action='export'").fetchall()
    finally:
        store.close()
    assert ("it.wang", "audit-devices.csv") in logged


def test_report_page_counts_and_refuses_a_bad_date_with_a_sentence(site: Site) -> None:
    client = login(site.app, "it.wang")
    html = client.get("/web/audit/report?since=2020-01-01").get_data(as_text=True)
    assert 'id="total-envelopes">3<' in html and "按设备" in html
    bad = client.get("/web/audit/report?since=yesterday")
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.get_data(as_text=True)
    csv = client.get("/web/audit/export/report.csv?since=2020-01-01").get_data().decode("utf-8-sig")
    assert "按日" in csv and site.device in csv


def test_the_ledger_check_runs_from_the_page(site: Site) -> None:
    client = login(site.app, "admin.li")
    assert 'id="verdict"' not in client.get("/web/audit/verify").get_data(as_text=True)
    html = client.get("/web/audit/verify?run=1").get_data(as_text=True)
    assert "账本完好" in html and "未通过" not in html
    csv = client.get("/web/audit/export/verify.csv").get_data().decode("utf-8-sig")
    assert "哈希链" in csv and "通过" in csv
