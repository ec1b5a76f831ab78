"""Who sees a reporter (检举控告), ID numbers and phones; and that each unmasked view is logged."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from tests.sync_server.coord_support import (
    ACCUSATION_SUMMARY,
    ACCUSED,
    REPORTER,
    REPORTER_ID,
    REPORTER_PHONE,
    Browser,
    County,
    close_app,
    county_template,
)

REPORTER_TRACES = (REPORTER, REPORTER_PHONE, REPORTER_ID, "东组8号", ACCUSATION_SUMMARY)


@pytest.fixture
def county(tmp_path: Path) -> County:
    return county_template().copy(tmp_path / "county")


@pytest.fixture
def app(county: County) -> Iterator[Any]:
    a = county.app()
    yield a
    close_app(a)


def access(county: County, action: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(county.root / "server" / "server.db") as conn:
        return conn.execute("SELECT username, case_id, what, detail, at_ms FROM access_log WHERE action=? ORDER BY id",
                            (action,)).fetchall()


def xlsx_text(data: bytes) -> str:
    wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    return "\n".join(" ".join(str(c) for c in row if c is not None) for ws in wb for row in ws.iter_rows(values_only=True))


def every_view(b: Browser, county: County) -> dict[str, str]:
    """Every page and export that could show the accusation, as text."""
    out = {}
    for url in ("/web/cases", "/web/cases?category=accusation", f"/web/cases?q={REPORTER[:2]}",
                f"/web/cases/{county.accusation}", "/web/conflicts", "/web/board", "/web/report"):
        out[url] = b.text(url)
    for what in ("cases", "conflicts", "board", "report"):
        out[f"{what}.csv"] = b.get(f"/web/export/{what}.csv").get_data().decode("utf-8-sig")
        out[f"{what}.xlsx"] = xlsx_text(b.get(f"/web/export/{what}.xlsx").get_data())
    out["cases-accusation.xlsx"] = xlsx_text(b.get("/web/export/cases.xlsx?category=accusation").get_data())
    return out


def test_without_the_permission_no_page_or_export_shows_the_reporter(app: Any, county: County) -> None:
    b = Browser(app.test_client())
    b.login("coord")
    views = every_view(b, county)
    for where, text in views.items():
        for trace in REPORTER_TRACES:
            assert trace not in text, f"{trace!r} leaked in {where}"
    case_page = views[f"/web/cases/{county.accusation}"]
    assert ACCUSED in case_page  # the accused is not protected
    assert "（保密）" in case_page and "检举控告类" in case_page
    assert "（保密）" in views["cases-accusation.xlsx"]
    assert "没有符合条件的案件" in views[f"/web/cases?q={REPORTER[:2]}"]  # a name search finds no reporter
    assert not access(county, "view_confidential") and not access(county, "export_confidential")


def test_with_the_permission_the_reporter_is_shown_and_every_view_is_logged(app: Any, county: County) -> None:
    b = Browser(app.test_client())
    b.login("secret")
    page = b.text(f"/web/cases/{county.accusation}")
    assert REPORTER in page and ACCUSATION_SUMMARY in page
    assert REPORTER_PHONE not in page and REPORTER_ID not in page  # numbers stay masked until shown
    seen = access(county, "view_confidential")
    assert [(r[0], r[1]) for r in seen] == [("secret", county.accusation)]
    listed = b.text(f"/web/cases?q={REPORTER[:2]}")
    assert REPORTER in listed
    assert county.accusation in json.loads(access(county, "list_confidential")[-1][3])["cases"]
    exported = b.get("/web/export/cases.csv?category=accusation").get_data().decode("utf-8-sig")
    assert REPORTER in exported
    (entry,) = access(county, "export_confidential")
    assert entry[0] == "secret" and entry[2] == "cases.csv" and county.accusation in json.loads(entry[3])["cases"]


def test_id_numbers_and_phones_are_shown_only_on_request_and_the_request_is_logged(app: Any, county: County) -> None:
    clock = app.config["MINQING_CLOCK"]
    b = Browser(app.test_client())
    b.login("secret")
    url = f"/web/cases/{county.accusation}"
    page = b.text(url)
    assert REPORTER_PHONE not in page and "139****5678" in page
    assert b.post(f"{url}/show-numbers").status_code == 302
    page = b.text(url)
    assert REPORTER_PHONE in page and REPORTER_ID in page and "已记录" in page
    (entry,) = access(county, "show_numbers")
    assert entry[0] == "secret" and entry[1] == county.accusation
    clock.advance(6 * 60)  # the grant lasts five minutes
    assert REPORTER_PHONE not in b.text(url)


def test_showing_numbers_never_shows_a_reporter_to_a_user_without_the_permission(app: Any, county: County) -> None:
    b = Browser(app.test_client())
    b.login("coord")
    url = f"/web/cases/{county.accusation}"
    b.text(url)
    b.post(f"{url}/show-numbers")
    page = b.text(url)
    assert REPORTER_PHONE not in page and REPORTER_ID not in page and REPORTER not in page
    assert "13700001111" in page  # the accused's phone: shown on request like any party's
