"""Operating signals and the IT officer's commands, in-process (docs/audit.md): request ids,
JSON-line logs, /healthz checking the database, /metrics in Prometheus text, audit report
by day and device, backup refusals, and errors that are one sentence and a stable code."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import SyncAgent, WsgiTransport
from sync_server import ops_log
from sync_server.app import create_app
from sync_server.cli import main
from sync_server.service import SyncService
from sync_server.store import ServerStore

PASSWORD = "password123"
VILLAGE = "330102101"
CSV = """code,name,level,parent
330102,上城区,county,
330102100,东乡,township,330102
330102101,东村,village,330102100
"""
DOC = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text(encoding="utf-8")


@dataclass
class County:
    data: Path
    app: Flask
    laptop: FieldClient
    agent: SyncAgent

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([*args, "--data", str(self.data)])
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        return rc, out.out, out.err


@pytest.fixture
def county(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[County]:
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    data = tmp_path / "server"
    assert main(["init", "--data", str(data)]) == 0
    (tmp_path / "county.csv").write_text(CSV, encoding="utf-8")
    assert main(["jurisdiction", "import", str(tmp_path / "county.csv"), "--data", str(data)]) == 0
    capsys.readouterr()
    app = create_app(data, {"LOG_JSON": False})
    store = ServerStore(data)
    code = SyncService(store).create_enroll_code(VILLAGE, url="http://127.0.0.1:1")
    store.close()
    laptop = FieldClient.init(tmp_path / "lap", PASSWORD, node=VILLAGE, user="li.ming")
    agent = SyncAgent(laptop, WsgiTransport(app), retries=0, backoff_s=0.0)
    agent.enroll(code)
    case = laptop.new_case({"title": "宅基地边界纠纷", "category": "dispute", "subject": "neighbour", "channel": "visit"},
                           [{"role": "petitioner", "name": "王建国", "phone": "13812345678"}])
    agent.sync()
    laptop.add_record("note", case, {"text": "回访。", "written_at": "2026-11-18T10:00:00+08:00"})
    agent.sync()
    try:
        yield County(data, app, laptop, agent)
    finally:
        laptop.close()


# ---- request ids and logs ----


def test_every_answer_carries_the_request_id_it_was_given_or_a_new_one(county: County) -> None:
    client = county.app.test_client()
    assert client.get("/api/v1/ping", headers={"X-Request-Id": "it-42.a"}).headers["X-Request-Id"] == "it-42.a"
    made = client.get("/api/v1/ping").headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    odd = client.get("/api/v1/ping", headers={"X-Request-Id": "no spaces allowed"}).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", odd)
    refused = client.post("/api/v1/push", data=b"x" * 10, content_type="application/octet-stream",
                          headers={"X-Request-Id": "it-43"})
    assert refused.status_code == 400 and refused.headers["X-Request-Id"] == "it-43"
    assert set(refused.get_json()) == {"ok", "error"}  # the error body keeps its one shape


def test_each_request_is_one_json_log_line_with_its_request_id_and_error_code(county: County) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ops_log.JsonFormatter())
    logger = logging.getLogger("minqing.http")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        county.app.test_client().post("/api/v1/push", data=b"x" * 10, content_type="application/octet-stream",
                                      headers={"X-Request-Id": "it-44"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [line] = [x for x in lines if x.get("request_id") == "it-44"]
    assert line["msg"] == "request" and line["status"] == 400 and line["code"] == "envelope.truncated"
    assert line["path"] == "/api/v1/push" and line["method"] == "POST" and line["bytes_in"] == 10
    assert line["level"] == "info" and line["ts"].endswith("Z") and isinstance(line["ms"], float)


# ---- /healthz and /metrics ----


def test_healthz_answers_ok_only_when_the_database_answers(county: County) -> None:
    client = county.app.test_client()
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json()["ok"] is True and r.get_json()["ledger_head"] == 2
    (county.data / "server.db").write_bytes(b"this is no database" * 100)
    for suffix in ("-wal", "-shm"):
        (county.data / f"server.db{suffix}").unlink(missing_ok=True)
    r = client.get("/healthz")
    assert r.status_code == 503
    body = r.get_json()
    assert set(body) == {"ok", "error"} and body["error"]["code"] == "server.unhealthy"
    assert "Traceback" not in r.get_data(as_text=True)


def _metrics(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = app.test_client().get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    out = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        assert family.documentation, family.name
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_are_prometheus_text_that_agree_with_the_database(county: County) -> None:
    client = county.app.test_client()
    client.post("/api/v1/push", data=b"x" * 10, content_type="application/octet-stream")
    store = ServerStore(county.data)
    with store.transaction():
        store.set_meta("sweep_last_ms", "1795300000000")
        store.set_meta("sweep_duration_ms", "250")
    ops = store.replica.op_count()
    store.close()
    m = _metrics(county.app)
    assert m[("minqing_up", ())] == 1
    assert m[("minqing_envelopes_received_total", ())] == 2
    assert m[("minqing_ops", ())] == ops
    assert m[("minqing_refusals_total", (("code", "envelope.truncated"),))] == 1
    assert m[("minqing_quarantine_held", (("code", "all"),))] == 0
    assert m[("minqing_devices", (("status", "active"),))] == 1
    assert m[("minqing_sweep_duration_seconds", ())] == 0.25
    assert m[("minqing_sweep_last_timestamp_seconds", ())] == 1795300000.0
    assert m[("minqing_http_requests_total", (("route", "/api/v1/push"), ("status", "200")))] == 2
    assert m[("minqing_http_request_duration_seconds_count", (("route", "/api/v1/push"),))] == 3


def test_every_metric_is_named_in_docs_audit_md() -> None:
    for name in ops_log.METRICS:
        assert f"`{name}`" in DOC, name


# ---- audit report ----


def test_audit_report_counts_per_day_and_device_and_exports_csv(county: County, capsys: pytest.CaptureFixture[str]) -> None:
    county.app.test_client().post("/api/v1/push", data=b"x" * 10, content_type="application/octet-stream")
    rc, out, _ = county.cli(capsys, "audit", "report", "--since", "2020-01-01", "--json")
    assert rc == 0
    rep = json.loads(out)
    device = county.laptop.device_id
    assert rep["totals"]["envelopes"] == 2 and rep["totals"]["refused"] == 1
    assert rep["totals"]["ops_merged"] == county.laptop.replica.op_count()
    assert rep["refused_by_code"] == {"envelope.truncated": 1}
    [mine] = [d for d in rep["by_device"] if d["device"] == device]
    assert mine["envelopes"] == 2 and mine["node"] == VILLAGE
    assert sum(d["envelopes"] for d in rep["by_day"]) == 2
    rc, csv_text, _ = county.cli(capsys, "audit", "report", "--since", "2020-01-01", "--csv")
    lines = csv_text.splitlines()
    assert rc == 0 and lines[0].startswith("day,device,node,envelopes,ops_merged")
    assert lines[-1].startswith("total,,,2,") and lines[-1].endswith("envelope.truncated=1")
    rc, out, _ = county.cli(capsys, "audit", "report", "--since", "2099-01-01", "--json")
    assert rc == 0 and json.loads(out)["totals"]["envelopes"] == 0


# ---- refusals: one sentence, a stable code, exit 2 ----


def test_refusals_are_a_sentence_or_a_json_error_and_exit_2(county: County, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (("audit", "report", "--since", "yesterday"), "audit.bad_date"),
        (("restore", str(tmp_path)), "backup.not_a_backup"),
        (("device", "reenroll", "0123456789abcdef"), "sync.not_found"),
        (("device", "history", "0123456789abcdef"), "sync.not_found"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases.append((("backup", str(tmp_path / "full")), "backup.dest_not_empty"))
    for args, code in cases:
        rc, out, err = county.cli(capsys, *args, "--json")
        assert rc == 2, args
        body = json.loads(out)
        assert body["ok"] is False and body["error"]["code"] == code and set(body["error"]) == {"code", "message", "details"}
        rc, out, err = county.cli(capsys, *args)
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "(" in err, (args, err)
    rc, _, err = county.cli(capsys, "audit", "verify")
    assert rc == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--data", str(tmp_path / "nowhere")]) == 2
    assert "sync-server init" in capsys.readouterr().err


def test_a_changed_file_in_a_backup_is_refused_at_restore(county: County, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "bk"
    rc, out, _ = county.cli(capsys, "backup", str(dest), "--json")
    manifest = json.loads(out)
    assert rc == 0 and set(manifest["files"]) >= {"server.db", "server_keys.json", "rules.toml"}
    assert (dest.stat().st_mode & 0o777) == 0o700
    with open(dest / "rules.toml", "a", encoding="utf-8") as fh:
        fh.write("\n# edited\n")
    capsys.readouterr()
    assert main(["restore", str(dest), "--data", str(tmp_path / "new"), "--json"]) == 2
    body: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert body["error"]["code"] == "backup.damaged" and body["error"]["details"] == {"file": "rules.toml"}
    assert not (tmp_path / "new").exists()


def test_a_served_folder_is_locked_against_a_second_server_and_a_restore(tmp_path: Path) -> None:
    assert ops_log.lock_held(tmp_path) is None
    with ops_log.serving_lock(tmp_path):
        assert ops_log.lock_held(tmp_path) is not None
        with pytest.raises(ops_log.AlreadyServing) as second, ops_log.serving_lock(tmp_path):
            pass
        assert second.value.code == "server.already_serving"
    assert ops_log.lock_held(tmp_path) is None
