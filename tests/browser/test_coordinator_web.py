"""The county coordinator's day in a real browser (Debian's headless Chromium).

The county server (``create_app`` over a copy of the test county, ``coord_support``) is
served for real on 127.0.0.1; laptops sync with it over HTTP through ``SyncAgent``.
Screenshots of each main page go to ``test-output/screenshots/coord-*.png``.
"""

from __future__ import annotations

import io
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from field_client.sync import HttpTransport, SyncAgent
from tests.sync_server.coord_support import (
    ACCUSATION_SUMMARY,
    PASSWORD,
    REPORTER,
    REPORTER_PHONE,
    Clock,
    County,
    close_app,
    county_template,
)

pytestmark = pytest.mark.browser


@dataclass
class Live:
    url: str
    county: County
    clock: Clock
    app: Any


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    county = county_template().copy(tmp_path / "county")
    clock = county.clock()
    app = county.app(clock)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="county-web-under-test", daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{server.server_port}", county, clock, app)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        close_app(app)


def shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"coord-{name}.png"), full_page=True)


def fits_the_screen(page: Any) -> None:
    width, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width <= client, f"{page.url}: content {width}px wide in a {client}px window"


def log_in(page: Any, base: str, user: str, password: str = PASSWORD) -> None:
    page.goto(base + "/web/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login-submit")


def total(page: Any) -> int:
    return int(page.inner_text("#total-count"))


def test_log_in_filter_open_a_case_resolve_a_conflict_and_the_laptop_gets_it(
        page: Any, live: Live, screenshots: Path) -> None:
    base = live.url
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/web/login"))
    assert "登录县代办中心" in page.inner_text("h1")
    shot(page, screenshots, "01-login")
    log_in(page, base, "coord")
    expect(page).to_have_url(re.compile(r"/web/cases$"))
    everything = total(page)
    assert everything > 20 and page.locator("tr.case-row").count() == everything
    fits_the_screen(page)
    shot(page, screenshots, "02-caseload")

    # filter: one township, then its cases in handling; the option's count is the rows shown
    option = page.locator("#f-township option[value='330102100']")
    township_count = int(option.get_attribute("data-count"))
    page.select_option("#f-township", "330102100")
    page.click("#apply")
    expect(page.locator("#total-count")).to_have_text(str(township_count))
    assert page.locator("tr.case-row").count() == township_count < everything
    state_count = int(page.locator("#f-state option[value='in_handling']").get_attribute("data-count"))
    page.select_option("#f-state", "in_handling")
    page.click("#apply")
    expect(page.locator("#total-count")).to_have_text(str(state_count))
    assert page.locator("tr.case-row").count() == state_count
    assert all(t == "东镇 · 东镇东村" or t.startswith("东镇") for t in page.locator("tr.case-row td:nth-child(4)")
               .all_inner_texts())
    shot(page, screenshots, "03-caseload-filtered")

    # the conflict queue: the two laptops' titles for one case
    page.click("#nav-conflicts")
    expect(page.locator("h1")).to_have_text("待处理冲突")
    card = page.locator("article.conflict", has=page.locator("text=水渠纠纷（赵芳记录）")).first
    expect(card).to_contain_text("li.ming")
    expect(card).to_contain_text("zhao.fang")
    fits_the_screen(page)
    shot(page, screenshots, "04-conflicts")
    case_href = card.locator("h3 a").get_attribute("href")
    conflict_id = card.get_attribute("id")[2:]

    # the case page: the whole timeline, the conflict marked where it happened
    page.goto(base + case_href)
    expect(page.locator("#timeline")).to_contain_text("服务器接收时间")
    assert page.locator("tr.tl-conflict").count() >= 2
    fits_the_screen(page)
    shot(page, screenshots, "05-case")

    # resolve from the case page: choose the grid worker's title
    card = page.locator(f"#c-{conflict_id}")
    card.locator("tr", has=page.locator("text=zhao.fang")).locator("input[type=radio]").check()
    card.locator(f"#resolve-{conflict_id}").click()
    expect(page.locator(".flash")).to_contain_text("冲突已处理")
    expect(page.locator("#case-title")).to_have_text("水渠纠纷（赵芳记录）")
    expect(page.locator("#timeline tr.tl-resolve")).to_contain_text("县服务器")  # written by the server

    # laptop 1 (李明, who wrote the other title) syncs with the server over HTTP
    lap = live.county.laptop(1, clock=live.clock)
    try:
        SyncAgent(lap, HttpTransport(base)).sync()
        detail = lap.case_detail(case_href.rsplit("/", 1)[1])
        assert detail["case"]["title"] == "水渠纠纷（赵芳记录）"
        assert [c["status"] for c in detail["conflicts"] if c["id"] == conflict_id] == ["resolved"]
    finally:
        lap.close()

    # the other main pages, for a person to look at
    for name, nav in (("06-board", "#nav-board"), ("07-report", "#nav-report")):
        page.click(nav)
        page.wait_for_load_state()
        fits_the_screen(page)
        shot(page, screenshots, name)
    assert page.locator("svg").count() == 0  # the report has tables only
    page.click("#nav-board")
    assert page.locator("svg#chart-towns pattern").count() == 5
    page.click("#lang-switch")
    expect(page.locator("h1")).to_have_text("Warnings at a glance")
    shot(page, screenshots, "08-board-english")


def test_a_reporter_stays_hidden_without_the_permission_and_is_logged_with_it(
        page: Any, live: Live, screenshots: Path) -> None:
    base, accusation = live.url, live.county.accusation
    log_in(page, base, "coord")
    page.goto(base + "/web/cases?category=accusation")
    assert REPORTER not in page.content()
    page.goto(base + f"/web/cases/{accusation}")
    content = page.content()
    assert REPORTER not in content and ACCUSATION_SUMMARY not in content and "（保密）" in content
    shot(page, screenshots, "09-case-confidential-masked")
    with page.expect_download() as info:
        page.goto(base + "/web/cases?category=accusation")
        page.click("#export-xlsx")
    data = Path(info.value.path()).read_bytes()
    cells = [str(c) for row in openpyxl.load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True)
             for c in row if c is not None]
    assert cells and not any(REPORTER in c for c in cells)
    page.click("#logout")

    log_in(page, base, "secret")
    page.goto(base + f"/web/cases/{accusation}")
    expect(page.locator("#fact-summary")).to_have_text(ACCUSATION_SUMMARY)
    assert REPORTER_PHONE not in page.content()
    page.click("#show-numbers")
    expect(page.locator("#party-table")).to_contain_text(REPORTER_PHONE)
    shot(page, screenshots, "10-case-confidential-permitted")
    page.click("#logout")

    log_in(page, base, "audit")
    page.goto(base + "/web/access-log?username=secret")
    log_table = page.locator("#access-table")
    expect(log_table.locator("tr.act-view_confidential")).to_have_count(2)  # the page, and again after "show"
    expect(log_table.locator("tr.act-show_numbers")).to_have_count(1)
    shot(page, screenshots, "11-access-log")
    with sqlite3.connect(live.county.root / "server" / "server.db") as conn:
        rows = conn.execute("SELECT username, case_id FROM access_log WHERE action='view_confidential'").fetchall()
    assert rows == [("secret", accusation)] * 2


def test_an_export_holds_exactly_the_rows_the_filtered_page_counts(page: Any, live: Live) -> None:
    base = live.url
    log_in(page, base, "coord")
    page.select_option("#f-colour", "red")
    page.click("#apply")
    shown = total(page)
    numbers = page.locator("a.case-link").all_inner_texts()
    assert shown == len(numbers) > 0
    with page.expect_download() as info:
        page.click("#export-xlsx")
    data = Path(info.value.path()).read_bytes()
    rows = list(openpyxl.load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True))
    assert rows[0][:2] == ("案件编号", "事由")
    assert len(rows) - 1 == shown and sorted(r[0] for r in rows[1:]) == sorted(numbers)
    assert {r[10] for r in rows[1:]} == {"红色"}


def test_a_form_without_its_token_is_refused_and_ten_wrong_passwords_throttle(
        page: Any, live: Live, screenshots: Path) -> None:
    base = live.url
    log_in(page, base, "coord")
    expect(page).to_have_url(re.compile(r"/web/cases$"))
    resp = page.request.post(base + "/web/logout", form={})  # the browser's cookies, no token
    assert resp.status == 400 and "web.csrf" in resp.text()
    page.goto(base + "/web/cases")
    expect(page).to_have_url(re.compile(r"/web/cases$"))  # still logged in: the forged form did nothing
    page.click("#logout")

    for i in range(10):
        log_in(page, base, "coord", f"not-the-password-{i}")
    expect(page.locator("#login-error")).to_contain_text("密码错误次数过多")
    log_in(page, base, "coord")  # the right password, too soon
    expect(page.locator("#login-error")).to_contain_text("登录已锁定")
    expect(page).to_have_url(re.compile(r"/web/login"))
    shot(page, screenshots, "12-login-throttled")
