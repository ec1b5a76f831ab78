"""The conflict queue: a coordinator's choice becomes a server ``resolve`` op that syncs out."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_client.sync import SyncAgent, WsgiTransport
from sync_server import keys
from tests.sync_server.coord_support import (
    ACCUSATION_SUMMARY,
    Browser,
    County,
    close_app,
    county_template,
)


@pytest.fixture
def county(tmp_path: Path) -> County:
    return county_template().copy(tmp_path / "county")


@pytest.fixture
def app(county: County) -> Iterator[Any]:
    a = county.app()
    yield a
    close_app(a)


def db(county: County) -> sqlite3.Connection:
    return sqlite3.connect(county.root / "server" / "server.db")


def open_conflict(county: County, field: str, kind: str = "concurrent_edit") -> dict[str, Any]:
    with db(county) as conn:
        row = conn.execute("SELECT id, entity, entity_id, case_id, op_ids FROM conflicts WHERE status='open' "
                           "AND field=? AND kind=? ORDER BY opened_stamp LIMIT 1", (field, kind)).fetchone()
        assert row is not None, f"no open {kind} conflict on {field}"
        ops = {}
        for op_id in json.loads(row[4]):
            author, vals = conn.execute("SELECT author, vals FROM ops WHERE op_id=?", (op_id,)).fetchone()
            ops[op_id] = (author, json.loads(vals))
    return {"id": row[0], "entity": row[1], "entity_id": row[2], "case_id": row[3], "ops": ops}


def conflict_row(county: County, conflict_id: str) -> tuple[Any, ...]:
    with db(county) as conn:
        return tuple(conn.execute("SELECT status, resolved_by FROM conflicts WHERE id=?", (conflict_id,)).fetchone())


def test_choosing_a_value_writes_a_server_resolve_op_that_reaches_the_laptops(app: Any, county: County) -> None:
    c = open_conflict(county, "title")
    (chosen_id, (author, values)), = [(k, v) for k, v in c["ops"].items() if v[0] == "zhao.fang"]
    chosen = values["title"]
    b = Browser(app.test_client())
    b.login("coord")
    page = b.text("/web/conflicts")
    assert f'id="c-{c["id"]}"' in page and chosen in page and "li.ming" in page and "zhao.fang" in page
    assert "服务器接收时间" in page
    resp = b.post(f"/web/conflicts/{c['id']}", {"choice": chosen_id})
    assert resp.status_code == 302
    assert "冲突已处理" in b.text("/web/conflicts")
    status, resolved_by = conflict_row(county, c["id"])
    assert status == "resolved"
    with db(county) as conn:
        op = conn.execute("SELECT device, author, kind, vals FROM ops WHERE op_id=?", (resolved_by,)).fetchone()
        kinds = [r[0] for r in conn.execute("SELECT kind FROM ledger ORDER BY ledger_seq DESC LIMIT 1")]
        title = conn.execute("SELECT title FROM cases WHERE id=?", (c["case_id"],)).fetchone()[0]
        devices = {r[0] for r in conn.execute("SELECT device_id FROM devices")}
    server_node = keys.load(county.root / "server").node_id
    assert op[0] == server_node and op[0] not in devices and op[1] == "coord" and op[2] == "resolve"
    written = json.loads(op[3])
    assert sorted(written.pop("resolves")) == sorted(c["ops"]) and written == {"field": "title", "value": chosen}
    assert kinds == ["server"] and title == chosen
    # both laptops that wrote the title receive the resolution with their next sync
    transport = WsgiTransport(app)
    for i in (1, 2):
        lap = county.laptop(i, clock=app.config["MINQING_CLOCK"])
        try:
            SyncAgent(lap, transport).sync()
            detail = lap.case_detail(c["case_id"])
            assert detail["case"]["title"] == chosen
            assert [x["status"] for x in detail["conflicts"] if x["id"] == c["id"]] == ["resolved"]
        finally:
            lap.close()


def test_a_merged_value_is_written_as_typed(app: Any, county: County) -> None:
    c = open_conflict(county, "title")
    b = Browser(app.test_client())
    b.login("coord")
    b.get("/web/conflicts")
    b.post(f"/web/conflicts/{c['id']}", {"choice": "merged", "merged": "灌溉水渠改道纠纷（合并）"})
    assert conflict_row(county, c["id"])[0] == "resolved"
    with db(county) as conn:
        assert conn.execute("SELECT title FROM cases WHERE id=?", (c["case_id"],)).fetchone()[0] == "灌溉水渠改道纠纷（合并）"


def test_no_choice_or_a_closed_conflict_changes_nothing(app: Any, county: County) -> None:
    c = open_conflict(county, "title")
    b = Browser(app.test_client())
    b.login("coord")
    b.get("/web/conflicts")
    b.post(f"/web/conflicts/{c['id']}", {"choice": "0" * 32})
    assert "请选择其中一个值" in b.text("/web/conflicts") and conflict_row(county, c["id"])[0] == "open"
    b.post(f"/web/conflicts/{c['id']}", {"choice": next(iter(c["ops"]))})
    with db(county) as conn:
        n = conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0]
    b.post(f"/web/conflicts/{c['id']}", {"choice": next(iter(c["ops"]))})
    assert "该冲突已不是待处理状态" in b.text("/web/conflicts")
    with db(county) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0] == n


def test_a_refused_step_is_acknowledged_and_stays_refused(app: Any, county: County) -> None:
    c = open_conflict(county, "state", "invalid_transition")
    with db(county) as conn:
        state_before = conn.execute("SELECT state, level FROM cases WHERE id=?", (c["case_id"],)).fetchone()
    b = Browser(app.test_client())
    b.login("coord")
    page = b.text(f"/web/cases/{c['case_id']}")
    assert "案件已由上级办理" in page and "不予受理" in page
    b.post(f"/web/conflicts/{c['id']}", {"choice": "acknowledge", "next": f"/web/cases/{c['case_id']}"})
    assert conflict_row(county, c["id"])[0] == "resolved"
    with db(county) as conn:
        assert conn.execute("SELECT state, level FROM cases WHERE id=?", (c["case_id"],)).fetchone() == state_before


def test_a_conflict_over_a_reporters_words_is_for_the_permitted_only(app: Any, county: County) -> None:
    clock = app.config["MINQING_CLOCK"]
    transport = WsgiTransport(app)
    one, two = county.laptop(1, clock=clock), county.laptop(2, clock=clock)
    try:
        SyncAgent(two, transport).sync()
        one.edit("case", county.accusation, {"summary": ACCUSATION_SUMMARY + "（补充一）"})
        two.edit("case", county.accusation, {"summary": ACCUSATION_SUMMARY + "（补充二）"})
        SyncAgent(one, transport).sync()
        SyncAgent(two, transport).sync()
    finally:
        one.close()
        two.close()
    c = open_conflict(county, "summary")
    coord = Browser(app.test_client())
    coord.login("coord")
    page = coord.text("/web/conflicts")
    assert "补充一" not in page and "须由有保密权限的协调员处理" in page
    resp = coord.post(f"/web/conflicts/{c['id']}", {"choice": next(iter(c["ops"]))})
    assert resp.status_code == 403 and conflict_row(county, c["id"])[0] == "open"
    secret = Browser(app.test_client())
    secret.login("secret")
    assert "补充一" in secret.text("/web/conflicts")
    secret.post(f"/web/conflicts/{c['id']}", {"choice": next(iter(c["ops"]))})
    assert conflict_row(county, c["id"])[0] == "resolved"
