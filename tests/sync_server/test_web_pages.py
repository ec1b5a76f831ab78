"""The coordinator web's pages: the 一图 and its SVG, error pages, headers, and both languages."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from schema.lifecycle import OPEN_STATES
from sync_server import web
from tests.sync_server.coord_support import Browser, County, close_app, county_template

PKG = Path(web.__file__).parent
PO = PKG / "translations" / "zh" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
CJK = re.compile(r"[\u3400-\u9fff]")
PAGES = ("/web/cases", "/web/conflicts", "/web/board", "/web/report")


@pytest.fixture
def county(tmp_path: Path) -> County:
    return county_template().copy(tmp_path / "county")


@pytest.fixture
def app(county: County) -> Iterator[Any]:
    a = county.app()
    yield a
    close_app(a)


def test_the_board_counts_open_cases_by_township_and_colour_as_the_sweep_left_them(app: Any, county: County) -> None:
    with sqlite3.connect(county.root / "server" / "server.db") as conn:
        towns = {r[0]: r[1] for r in conn.execute("SELECT code, name FROM nodes WHERE level='township'")}
        parent = {r[0]: r[1] for r in conn.execute("SELECT code, parent FROM nodes")}
        want: Counter[tuple[str, str]] = Counter()
        marks = ", ".join(f"'{s}'" for s in OPEN_STATES)
        for origin, colour in conn.execute(
                f"SELECT c.origin_node, COALESCE(s.colour, 'green') FROM cases c LEFT JOIN case_status s "
                f"ON s.case_id = c.id WHERE c.voided = 0 AND c.state IN ({marks})"):
            town = origin if origin in towns else parent.get(origin)
            want[(towns[town], colour)] += 1
    b = Browser(app.test_client())
    b.login("coord")
    page = b.text("/web/board")
    table = re.search(r'id="township-table">(.*?)</table>', page, re.S).group(1)
    colours = ("red", "orange", "yellow", "blue", "green")
    for row in re.findall(r"<tr><td>(.*?)</tr>", table, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.split(r"</td>\s*<td>", row)]
        name = cells[0]
        assert [int(x) for x in cells[1:6]] == [want[(name, c)] for c in colours], name
        assert int(cells[6]) == sum(want[(name, c)] for c in colours)
    assert sum(want.values()) == int(re.search(r'id="open-total">(\d+)<', page).group(1)) > 0
    # the chart: drawn here, one pattern per colour, numbers on the segments, no script
    svg = re.search(r'<svg[^>]*id="chart-towns".*?</svg>', page, re.S).group(0)
    for c in colours:
        assert f'id="chart-towns-p-{c}"' in svg
    assert svg.count('class="seg ') == sum(1 for v in want.values() if v)
    assert "<script" not in page and "http://" not in svg.replace("http://www.w3.org/2000/svg", "")
    for pattern in ("<circle", 'd="M0 3H6"', 'd="M-1 1L1 -1'):
        assert pattern in svg  # dots, lines and hatching: readable in black and white


def test_pages_send_no_traceback_and_the_security_headers(app: Any) -> None:
    b = Browser(app.test_client())
    b.login("coord")
    for url in PAGES:
        resp = b.get(url)
        assert resp.status_code == 200
        assert "script-src 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Frame-Options"] == "DENY"
    resp = b.get("/web/cases/" + "0" * 32)
    text = resp.get_data(as_text=True)
    assert resp.status_code == 404 and "县服务器上没有这个案件" in text and "Traceback" not in text
    resp = b.get("/web/no-such-page")
    assert resp.status_code == 404 and "没有这个页面" in resp.get_data(as_text=True)
    api = b.get("/api/v1/no-such-thing")  # the API keeps its JSON errors
    assert api.status_code == 404 and api.json["ok"] is False and api.json["error"]["code"] == "sync.not_found"


def test_an_unexpected_error_is_a_sentence_with_a_reference(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync_server.web import board

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(board, "units", broken)
    b = Browser(app.test_client())
    b.login("coord")
    resp = b.get("/web/board")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 500 and "服务器内部出错" in text and 'id="error-ref"' in text
    assert "boom" not in text and "Traceback" not in text


# ---- languages ----

def extracted() -> dict[str, str]:
    found: dict[str, str] = {}
    for py in sorted(PKG.glob("*.py")):
        for _l, msgid, _c, _x in extract_from_file("python", str(py), keywords={"_": None, "N_": None}):
            found[str(msgid)] = py.name
    for path in sorted((PKG / "templates" / "coord").glob("*.html")):
        for _l, msgid, _c, _x in extract_from_file("jinja2.ext:babel_extract", str(path)):
            found[str(msgid)] = path.name
    return found


def catalogue() -> dict[str, Any]:
    with PO.open("rb") as fh:
        return {m.id: m for m in read_po(fh) if m.id}


def test_every_string_has_a_chinese_translation_with_its_placeholders() -> None:
    found = extracted()
    assert len(found) > 250
    cat = catalogue()
    missing = sorted(f"{where}: {msgid!r}" for msgid, where in found.items()
                     if msgid not in cat or not cat[msgid].string or cat[msgid].fuzzy)
    assert missing == [], "untranslated (add them to messages.po):\n" + "\n".join(missing)
    for msgid, m in cat.items():
        assert set(PLACEHOLDER.findall(str(m.string))) == set(PLACEHOLDER.findall(str(msgid))), msgid
    stale = sorted(set(cat) - set(found))
    assert stale == [], f"strings no longer used: {stale}"


def test_no_template_holds_text_outside_the_translation_calls() -> None:
    allowed = {"CSV", "Excel", "XLSX", "English", "中文"}
    for path in sorted((PKG / "templates" / "coord").glob("*.html")):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", " ", text, flags=re.S)
        text = re.sub(r"<[^>]+>", " ", text)
        words = set(re.findall(r"[A-Za-z]{2,}|[\u3400-\u9fff]+", text)) - allowed
        assert not words, f"{path.name}: literal text {sorted(words)}"


def test_english_pages_hold_no_chinese_of_ours_and_chinese_pages_no_english(app: Any, county: County) -> None:
    cat = catalogue()
    chinese_of_ours = {str(m.string) for m in cat.values() if len(CJK.findall(str(m.string))) >= 4}
    english_of_ours = {str(k) for k in cat if len(str(k).split()) >= 3 and "%(" not in str(k)}
    b = Browser(app.test_client())
    b.login("coord")
    urls = [*PAGES, f"/web/cases/{county.accusation}"]
    for url in urls:
        page = b.text(url)
        leaked = sorted(e for e in english_of_ours if e in page)
        assert not leaked, f"{url} (zh): {leaked[:5]}"
    assert b.get("/web/lang/en?next=/web/cases").status_code == 302
    for url in urls:
        page = b.text(url)
        assert 'lang="en"' in page
        leaked = sorted(z for z in chinese_of_ours if z in page)
        assert not leaked, f"{url} (en): {leaked[:5]}"
    assert "The merged caseload" in b.text("/web/cases")
    resp = b.get("/web/cases/" + "0" * 32)
    assert "There is no such case on the county server." in resp.get_data(as_text=True)
