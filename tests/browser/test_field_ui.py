"""A mediator's afternoon in a real browser: unlock, register, visit, mediate, close, list."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from field_client.store import FieldClient
from field_client.web import create_app
from tests.field_client.web_support import (
    BAD_ID,
    GOOD_ID,
    NODE,
    NODE_NAME,
    PASSPHRASE,
    USER,
    Clock,
    case_values,
)

pytestmark = pytest.mark.browser


def fits_the_screen(page: Any) -> None:
    """No horizontal scrollbar at 1366x768."""
    width, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width <= 1366 and width <= client, f"{page.url}: content {width}px wide in a {client}px window"


def shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def unlock(page: Any, base: str) -> None:
    page.goto(base + "/")
    page.fill("#passphrase", PASSPHRASE)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/cases$"))


def test_register_record_a_visit_and_a_mediation_close_and_find_it_in_the_list(
    page: Any, live_server: str, screenshots: Path
) -> None:
    base = live_server
    page.goto(base + "/")
    assert page.url.endswith("/unlock")
    assert "解锁本机" in page.inner_text("h1")
    fits_the_screen(page)
    shot(page, screenshots, "01-unlock")

    page.fill("#passphrase", "not the passphrase")
    page.click("button[type=submit]")
    expect(page.locator("#passphrase-error")).to_contain_text("口令不对")
    page.fill("#passphrase", PASSPHRASE)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/cases$"))
    assert page.inner_text("#pending").split()[-1] == "0"

    # register a case with two parties
    page.click("text=登记新案件 >> nth=0")
    page.wait_for_url(re.compile(r"/cases/new$"))
    page.fill("#f-title", "宅基地边界纠纷")
    page.select_option("#f-category", "dispute")
    page.select_option("#f-subject", "neighbour")
    page.select_option("#f-channel", "visit")
    page.fill("#f-people_count", "2")
    page.fill("#f-summary", "张建国反映邻居李秀英建房占用其宅基地约半米。")
    page.fill("#f-demands", "恢复原界址")
    page.fill("#f-p0-name", "张建国")
    page.fill("#f-p0-id_number", GOOD_ID)
    page.fill("#f-p0-phone", "13812345678")
    page.fill("#f-p0-address", "东村东组3号")
    page.select_option("#f-p1-role", "respondent")
    page.fill("#f-p1-name", "李秀英")
    page.fill("#f-p1-phone", "13998765432")
    fits_the_screen(page)
    shot(page, screenshots, "02-new-case")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))
    case_url = page.url
    assert "案件已登记" in page.inner_text(".flash")
    parties = page.inner_text("#parties")
    assert "张建国" in parties and "李秀英" in parties and "138****5678" in parties and GOOD_ID not in parties

    # a visit
    page.click("#add-visit")
    page.wait_for_url(re.compile(r"/visit/new$"))
    page.select_option("#f-kind", "home")
    page.fill("#f-place", "张建国家")
    page.fill("#f-summary", "上门察看现场，双方界址有争议。")
    fits_the_screen(page)
    page.click("#submit")
    page.wait_for_url(case_url + "#timeline")
    assert "上门察看现场" in page.inner_text("#timeline")

    # accept and start, then a mediation with an agreement
    for action, state in (("accept", "已受理"), ("start", "办理中")):
        page.click(f"#act-{action}")
        page.wait_for_url(re.compile(f"/transition/{action}$"))
        fits_the_screen(page)
        page.click("#submit")
        page.wait_for_url(case_url)
        assert page.inner_text("#case-state") == state

    page.click("#add-mediation")
    page.wait_for_url(re.compile(r"/mediation/new$"))
    page.select_option("#f-kind", "people")
    page.fill("#f-place", "村调解室")
    for box in page.query_selector_all("input[name=parties]"):
        box.check()
    page.select_option("#f-outcome", "agreement")
    page.select_option("#f-agreement_form", "written")
    page.fill("#f-facts", "李秀英建房越界约半米。")
    page.fill("#f-terms", "李秀英拆除越界部分，按原界址重新立界，费用双方各半。")
    page.fill("#f-performance", "十日内拆除并立界，村委会到场见证。")
    page.fill("#f-performance_due", "2026-12-02")
    fits_the_screen(page)
    shot(page, screenshots, "04-mediation-form")
    page.click("#submit")
    page.wait_for_url(case_url + "#timeline")
    timeline = page.inner_text("#timeline")
    assert "调解记录" in timeline and "书面协议" in timeline and "张建国、李秀英" in timeline
    assert "十日内拆除并立界" in timeline

    # only allowed transitions are offered; close by the agreement
    offered = [el.get_attribute("id") for el in page.query_selector_all("#actions a.btn")]
    assert "act-close_by_agreement" in offered and "act-accept" not in offered
    page.click("#act-close_by_agreement")
    page.wait_for_url(re.compile(r"/transition/close_by_agreement$"))
    page.fill("#f-reason", "双方达成书面调解协议")
    page.click("#submit")
    page.wait_for_url(case_url)
    assert page.inner_text("#case-state") == "已办结"
    assert int(page.inner_text("#pending").split()[-1]) == 8  # case, 2 parties, visit, 3 steps, mediation
    fits_the_screen(page)
    shot(page, screenshots, "05-case")

    page.click("#mask-toggle")
    page.wait_for_url(case_url + "?show=1")
    assert GOOD_ID in page.inner_text("#parties")
    fits_the_screen(page)

    # the caseload, filtered by state
    page.click("nav >> text=我的案件")
    page.wait_for_url(re.compile(r"/cases$"))
    assert "宅基地边界纠纷" in page.inner_text("#case-list")
    page.select_option("#filter-state", "closed")
    page.click(".filters button")
    page.wait_for_url(re.compile(r"state=closed"))
    assert "宅基地边界纠纷" in page.inner_text("#case-list")
    assert "已办结" in page.inner_text("#case-list")
    fits_the_screen(page)
    shot(page, screenshots, "06-cases")
    page.select_option("#filter-state", "accepted")
    page.click(".filters button")
    page.wait_for_url(re.compile(r"state=accepted"))
    assert page.query_selector("#case-list") is None

    # lock
    page.click(".btn-lock")
    page.wait_for_url(re.compile(r"/unlock$"))
    page.goto(case_url)
    assert "/unlock" in page.url


def test_an_invalid_form_shows_the_error_inline_and_keeps_what_was_typed(
    page: Any, live_server: str, screenshots: Path
) -> None:
    unlock(page, live_server)
    page.goto(live_server + "/cases/new")
    page.fill("#f-title", "拖欠农民工工资")
    page.select_option("#f-category", "complaint")
    page.select_option("#f-subject", "wage_arrears")
    page.select_option("#f-channel", "phone")
    page.fill("#f-summary", "六名工人反映工程款拖欠三个月。")
    page.fill("#f-p0-name", "王德华")
    page.fill("#f-p0-id_number", BAD_ID)
    page.fill("#f-p0-phone", "13812345678")
    page.click("#submit")
    page.wait_for_selector("#f-p0-id_number-error")
    error = page.inner_text("#f-p0-id_number-error")
    assert re.search(r"[\u4e00-\u9fff]", error) and "校验" in error
    assert page.is_visible("#form-errors")
    assert page.input_value("#f-title") == "拖欠农民工工资"
    assert page.input_value("#f-summary") == "六名工人反映工程款拖欠三个月。"
    assert page.input_value("#f-category") == "complaint"
    assert page.input_value("#f-p0-name") == "王德华"
    assert page.input_value("#f-p0-id_number") == BAD_ID
    assert page.input_value("#f-p0-phone") == "13812345678"
    fits_the_screen(page)
    shot(page, screenshots, "03-new-case-error")

    page.fill("#f-p0-id_number", GOOD_ID)
    page.click("#submit")
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))
    assert "案件已登记" in page.inner_text(".flash")

    # English is one click away, and back
    page.click("#lang-switch")
    expect(page.locator("header")).to_contain_text("My cases")
    assert page.inner_text("#case-state") == "Registered"
    fits_the_screen(page)
    shot(page, screenshots, "07-case-english")
    page.click("#lang-switch")
    expect(page.locator("header")).to_contain_text("我的案件")


# ---- due dates and colours (docs/deadlines.md "On the laptop") ----


@pytest.fixture
def clocked_server(tmp_path: Path) -> Iterator[tuple[str, Any, Clock]]:
    """The web UI on 127.0.0.1 over a fresh device whose clock the test moves."""
    clock = Clock()
    data = tmp_path / "data"
    FieldClient.init(data, PASSPHRASE, node=NODE, user=USER, node_name=NODE_NAME, clock=clock).close()
    app = create_app(data, test_config={"MINQING_CLOCK": clock})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web-under-test", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app, clock
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.extensions["minqing"].lock_all()


def caseload_rows(page: Any) -> list[tuple[str, str, str]]:
    """(title, colour badge text, badge background colour) of each caseload row, top to bottom."""
    return [
        (row.query_selector(".c-title a").inner_text(), row.query_selector(".colour").inner_text(),
         row.query_selector(".colour").evaluate("el => getComputedStyle(el).backgroundColor"))
        for row in page.query_selector_all("#case-list tbody tr")
    ]


def test_the_caseload_shows_each_case_s_colour_and_sorts_by_urgency_as_the_clock_moves(
    page: Any, clocked_server: tuple[str, Any, Clock], screenshots: Path
) -> None:
    base, app, clock = clocked_server
    unlock(page, base)
    fc: FieldClient = app.extensions["minqing"].client
    with app.extensions["minqing"].lock:
        fc.new_case(case_values(title="甲村宅基地纠纷"), [])  # due 11-29
        clock.advance(3 * 86400)
        fc.new_case(case_values(title="乙村重复来访", tags=["repeat"]), [])  # yellow from the start, due 12-02
        fc.new_case(case_values(title="丙村新纠纷"), [])  # green
    page.goto(base + "/cases")
    rows = caseload_rows(page)
    assert [(t, c) for t, c, _ in rows] == [("乙村重复来访", "黄色"), ("甲村宅基地纠纷", "蓝色"), ("丙村新纠纷", "绿色")]
    assert len({bg for _, _, bg in rows}) == 3  # three colours drawn, each also named
    assert page.inner_text("#filter-sort option:checked").startswith("最紧急的在前")
    fits_the_screen(page)
    shot(page, screenshots, "08-caseload-colours")

    clock.advance(5 * 86400)  # 11-30: 甲 is overdue, 乙 still yellow, 丙 within 7 days
    page.reload()
    rows = caseload_rows(page)
    assert [(t, c) for t, c, _ in rows] == [("甲村宅基地纠纷", "橙色"), ("乙村重复来访", "黄色"), ("丙村新纠纷", "黄色")]
    due = page.inner_text("#case-list tbody tr:first-child .c-due")
    assert "2026-11-29 23:59" in due and "村级办理时限(7日)" in due

    page.click("text=甲村宅基地纠纷")
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))
    assert page.inner_text("#case-colour") == "预警：橙色"
    village = page.inner_text("#deadlines li[data-rule=village_handling]")
    assert "已超期" in village and "自收件" in village
    fits_the_screen(page)
    shot(page, screenshots, "09-case-deadlines")
