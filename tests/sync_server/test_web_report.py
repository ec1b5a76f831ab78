"""The monthly report's figures on a month built by hand, and the handover of a leader's cases."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from field_client.store import FieldClient
from field_client.sync import SyncAgent, WsgiTransport
from schema.obligations import CHINA
from sync_server.app import create_app
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore
from sync_server.sweep import Sweeper
from sync_server.users import add_user
from tests.sync_server.coord_support import (
    LEADER,
    PASSWORD,
    Browser,
    Clock,
    County,
    close_app,
    county_template,
)

COUNTY, TOWN, V1, V2 = "330199", "330199100", "330199101", "330199102"


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=CHINA).timestamp()


@pytest.fixture
def october(tmp_path: Path) -> Iterator[tuple[Any, Clock]]:
    """A county whose October 2026 is known case by case (see the test)."""
    clock = Clock(at("2026-07-31T09:00:00"))
    store = ServerStore.init(tmp_path / "server", clock=clock)
    import_nodes(store, [
        {"code": COUNTY, "name": "测试县", "level": "county", "parent": ""},
        {"code": TOWN, "name": "测试镇", "level": "township", "parent": COUNTY},
        {"code": V1, "name": "一村", "level": "village", "parent": TOWN},
        {"code": V2, "name": "二村", "level": "village", "parent": TOWN},
    ])
    with store.transaction():
        add_user(store.conn, "coord", PASSWORD, role="coordinator", now_ms=store.now_ms())
    svc = SyncService(store)
    transport = WsgiTransport(create_app(tmp_path / "server", {"MINQING_CLOCK": clock}))
    laptops = {}
    for node, level, user in ((V1, "village", "cun"), (COUNTY, "county", "xian")):
        lap = FieldClient.init(tmp_path / user, "passphrase-1", node=node, level=level, user=user, clock=clock)
        SyncAgent(lap, transport).enroll(svc.create_enroll_code(node, url="http://127.0.0.1"))
        laptops[user] = lap
    cun, xian = laptops["cun"], laptops["xian"]

    def case(lap: FieldClient, when: str, title: str) -> str:
        clock.t = at(when)
        return lap.new_case({"title": title, "category": "complaint", "subject": "wage_arrears", "channel": "visit"},
                            [{"role": "petitioner", "name": "王五"}])

    def step(lap: FieldClient, when: str, case_id: str, action: str, **kw: Any) -> None:
        clock.t = at(when)
        lap.transition(case_id, action, **kw)

    # each laptop records in the order things happened (its clock only moves forward)
    # the county's own: handling after acceptance is due in October (60 days)
    t1 = case(xian, "2026-08-01T09:00:00", "县本级一")
    step(xian, "2026-08-02T09:00:00", t1, "accept")
    t2 = case(xian, "2026-08-03T09:00:00", "县本级二")
    step(xian, "2026-08-04T09:00:00", t2, "accept")
    step(xian, "2026-09-30T09:00:00", t1, "decide", decision="support")  # due 10-01: on time
    step(xian, "2026-10-05T09:00:00", t2, "decide", decision="explain")  # due 10-03: late
    # the village in October
    a = case(cun, "2026-10-01T09:00:00", "一村甲")
    step(cun, "2026-10-02T09:00:00", a, "accept")  # registered and routed in time
    step(cun, "2026-10-03T09:00:00", a, "start")
    case(cun, "2026-10-03T10:00:00", "一村乙")  # never accepted: late
    step(cun, "2026-10-04T09:00:00", a, "decide", decision="support")
    step(cun, "2026-10-05T09:00:00", a, "close")  # closed at village level
    clock.t = at("2026-10-06T09:00:00")
    cun.add_record("evaluation", a, {"rating": "satisfied", "evaluated_at": "2026-10-06T09:00:00+08:00"})
    case(cun, "2026-10-25T10:00:00", "一村丙")  # still within its 15 days at the month's end
    clock.t = at("2026-10-31T22:00:00")
    for lap in (cun, xian):
        SyncAgent(lap, transport).sync()
        lap.close()
    rules = store.rules()
    Sweeper(SyncService(store, rules=rules), rules).sweep(store.now_ms())
    store.close()
    app = create_app(tmp_path / "server", {"MINQING_CLOCK": clock, "TESTING": True})
    yield app, clock
    close_app(app)


def rate(page: str, key: str) -> tuple[str, str]:
    row = re.search(rf'<tr id="rate-{key}">(.*?)</tr>', page, re.S).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row, re.S)
    return re.sub(r"<[^>]+>", "", cells[1]).strip(), cells[2].strip()


def test_the_monthly_rates_the_136_split_and_the_quiet_villages(october: tuple[Any, Clock]) -> None:
    app, _clock = october
    b = Browser(app.test_client())
    b.login("coord")
    page = b.text("/web/report?month=2026-10")
    assert rate(page, "acceptance") == ("50.0%", "1 / 2")  # 甲 in time, 乙 late; 丙 still within its limit
    assert "另有 1 件仍在期限内" in page
    assert rate(page, "closure") == ("50.0%", "1 / 2")  # 县本级一 on time, 县本级二 late
    assert rate(page, "participation") == ("100.0%", "1 / 1")
    assert rate(page, "satisfaction") == ("100.0%", "1 / 1")
    village = re.search(r'<tr id="level-village">(.*?)</tr>', page, re.S).group(1)
    assert "<td>1</td>" in village and "100.0%" in village and "达到目标" in village
    quiet = re.search(r'id="quiet-villages">(.*?)</p>', page, re.S).group(1)
    assert "二村" in quiet and "一村" not in quiet
    ranking = re.search(r'id="village-rank">(.*?)</table>', page, re.S).group(1)
    assert ranking.index("一村") < ranking.index("二村")
    september = b.text("/web/report?month=2026-09")
    assert rate(september, "closure") == ("—", "0 / 0")
    assert b.get("/web/report?month=2026-13").status_code == 400
    wb = openpyxl.load_workbook(io.BytesIO(b.get("/web/export/report.xlsx?month=2026-10").get_data()))
    assert wb.sheetnames[:3] == ["各项比率", "化解层级", "乡镇排名"]
    rates = {r[0]: r[1] for r in wb["各项比率"].iter_rows(min_row=2, values_only=True)}
    assert rates == {"及时受理率": "50.0%", "按期办结率": "50.0%", "参评率": "100.0%", "满意率": "100.0%"}
    assert [r[0] for r in wb["无新增信访的村"].iter_rows(min_row=2, values_only=True)] == ["二村"]


# ---- leaders and their handover, on the demo county ----

@pytest.fixture
def county(tmp_path: Path) -> County:
    return county_template().copy(tmp_path / "county")


@pytest.fixture
def app(county: County) -> Iterator[Any]:
    a = county.app()
    yield a
    close_app(a)


def test_a_leaders_handover_is_recorded_and_reaches_the_laptops(app: Any, county: County) -> None:
    b = Browser(app.test_client())
    b.login("coord")
    report = b.text("/web/report")
    assert LEADER in report and "领导离任交接清单" in report
    page = b.text(f"/web/handover?leader={LEADER}")
    numbers = re.findall(r'<td><a href="/web/cases/[0-9a-f]{32}">([^<]+)</a>', page)
    assert len(numbers) == 1
    assert b.post("/web/handover", {"leader": LEADER, "successor": LEADER}).status_code == 422
    resp = b.post("/web/handover", {"leader": LEADER, "successor": "刘副县长"})
    assert resp.status_code == 302
    assert numbers == re.findall(r'<td><a href="/web/cases/[0-9a-f]{32}">([^<]+)</a>',
                                 b.text("/web/handover?leader=刘副县长"))
    assert "该领导没有在办的包案案件" in b.text(f"/web/handover?leader={LEADER}")
    with sqlite3.connect(county.root / "server" / "server.db") as conn:
        rows = conn.execute("SELECT leader, ended_at, handed_over_to FROM leader_assignments ORDER BY created_stamp"
                            ).fetchall()
        logged = conn.execute("SELECT what FROM access_log WHERE action='handover'").fetchall()
    assert rows[0][0] == LEADER and rows[0][1] and rows[0][2] == "刘副县长"
    assert rows[-1][0] == "刘副县长" and rows[-1][1] is None
    assert logged == [(LEADER,)]
    assert "刘副县长" in b.text("/web/cases?leader=刘副县长")
    lap = county.laptop(1, clock=app.config["MINQING_CLOCK"])
    try:
        SyncAgent(lap, WsgiTransport(app)).sync()
        leaders = sorted((r["leader"], bool(r.get("ended_at")))
                         for r in lap.case_detail(lap.find_case(numbers[0]))["leader_assignments"])
        assert leaders == [("刘副县长", False), (LEADER, True)]
    finally:
        lap.close()
