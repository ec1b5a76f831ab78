"""The caseload: the in-memory index gives exactly what plain SQL gives, counts included,
and stays right as ops merge and the sweep changes colours; the page and its exports agree."""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from bench import workload as W
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore
from sync_server.sweep import Sweeper
from sync_server.web import caseload
from sync_server.web.caseindex import DIMS, CaseIndex, Nodes, Query
from tests.sync_server.coord_support import Browser, County, close_app, county_template

N_OPS = 3000
MORE_OPS = 4500


class FixedClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def workload_nodes() -> list[dict[str, str]]:
    rows = [{"code": W.COUNTY_NODE, "name": "示范县", "level": "county", "parent": ""},
            {"code": W.TOWNSHIP_NODE, "name": "东乡", "level": "township", "parent": W.COUNTY_NODE},
            {"code": "330102900", "name": "西乡", "level": "township", "parent": W.COUNTY_NODE}]
    for i, name in enumerate(W.VILLAGES):
        rows.append({"code": f"330102{i + 1:03d}", "name": name, "level": "village", "parent": W.TOWNSHIP_NODE})
    return rows


@pytest.fixture(scope="module")
def generated() -> list[Any]:
    return W.generate(MORE_OPS, 7)


@pytest.fixture
def store(tmp_path: Path, generated: list[Any]) -> Iterator[ServerStore]:
    first = generated[:N_OPS]
    now = max(int(op.stamp[:18]) for op in first) + 86_400_000
    st = ServerStore.init(tmp_path / "server", clock=FixedClock(now))
    import_nodes(st, workload_nodes())
    for i in range(0, len(first), 500):
        st.replica.apply(first[i : i + 500])
    rules = st.rules()
    Sweeper(SyncService(st, rules=rules), rules).sweep(now)
    yield st
    st.close()


def reference(st: ServerStore, nodes: Nodes, filters: dict[str, str], sort: str = "case_no",
              limit: int | None = 50, offset: int = 0) -> tuple[int, list[str]]:
    rows_q, count_q, params = caseload.reference_sql(filters, nodes, sort=sort, limit=limit, offset=offset)
    total = st.conn.execute(count_q, params).fetchone()[0]
    return total, [r[0] for r in st.conn.execute(rows_q, params)]


def combos(index: CaseIndex, rng: random.Random, n: int) -> list[dict[str, str]]:
    values = {d: sorted(index.bits[d]) for d in DIMS}
    out: list[dict[str, str]] = [{}]
    for d in DIMS:
        for v in values[d]:
            out.append({d: v})
    while len(out) < n:
        dims = rng.sample([d for d in DIMS if values[d]], rng.choice([2, 2, 3, 4]))
        out.append({d: rng.choice(values[d]) for d in dims})
    return out


def check(st: ServerStore, index: CaseIndex, filters: dict[str, str], *, facets: bool = False) -> None:
    res = index.select(Query(dict(filters), None, "case_no"), offset=0, limit=50, facets=facets)
    total, ids = reference(st, index.nodes, filters)
    assert res.total == total, filters
    assert res.ids == ids, filters
    if facets:
        for d in DIMS:
            others = {k: v for k, v in filters.items() if k != d}
            assert res.counts[d]["*"] == reference(st, index.nodes, others, limit=0)[0], (filters, d)
            for v, n in res.counts[d].items():
                if v != "*":
                    assert n == reference(st, index.nodes, {**others, d: v}, limit=0)[0], (filters, d, v)


@pytest.mark.parametrize("many", [64, 2])  # 2: every dimension counted by walking its cases
def test_the_index_gives_what_plain_sql_gives_for_every_filter(store: ServerStore, many: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from sync_server.web import caseindex

    monkeypatch.setattr(caseindex, "MANY_VALUES", many)
    index = CaseIndex()
    index.refresh(store.conn)
    n_cases = store.conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    assert index.n == n_cases > 150
    assert len(index.bits["colour"]) >= 3 and len(index.bits["state"]) >= 6 and len(index.bits["village"]) >= 6
    assert index.bits["leader"] and index.bits["conflicts"].get("1") and index.bits["voided"].get("1")
    rng = random.Random(3)
    for i, filters in enumerate(combos(index, rng, 160)):
        check(store, index, filters, facets=i % 8 == 0)


@pytest.mark.parametrize("sort", ["received", "due", "colour", "updated"])
def test_every_sort_pages_through_the_same_cases_as_sql(store: ServerStore, sort: str) -> None:
    index = CaseIndex()
    index.refresh(store.conn)
    for filters in ({}, {"township": W.TOWNSHIP_NODE, "conflicts": "0"}):
        total = index.select(Query(filters, None, sort), limit=0, facets=False).total
        ours = [cid for off in range(0, total, 37)
                for cid in index.select(Query(filters, None, sort), offset=off, limit=37, facets=False).ids]
        _, theirs = reference(store, index.nodes, filters, sort=sort, limit=None)
        assert sorted(ours) == sorted(theirs) and len(ours) == len(set(ours)) == total
        if sort == "colour":  # reds first, then by due date: as SQL orders them
            colour = {r[0]: r[1] for r in store.conn.execute("SELECT case_id, colour FROM case_status")}
            rank = {"red": 0, "orange": 1, "yellow": 2, "blue": 3, "green": 4}
            seq = [rank[colour.get(c, "green")] for c in ours]
            assert seq == sorted(seq)


def test_the_index_follows_new_ops_and_the_sweep_without_building_again(store: ServerStore,
                                                                       generated: list[Any]) -> None:
    index = CaseIndex()
    index.refresh(store.conn)
    assert index.stats["builds"] == 1
    rest = generated[N_OPS:]
    for i in range(0, len(rest), 500):
        store.replica.apply(rest[i : i + 500])
    index.refresh(store.conn)
    assert index.stats["builds"] == 1 and index.stats["updates"] >= 1
    rng = random.Random(5)
    for filters in combos(index, rng, 60):
        check(store, index, filters)
    # later: the sweep turns colours by the clock alone; the index reads every status row again
    later = store.now_ms() + 40 * 86_400_000
    rules = store.rules()
    before = dict(store.conn.execute("SELECT colour, COUNT(*) FROM case_status GROUP BY colour").fetchall())
    Sweeper(SyncService(store, rules=rules), rules).sweep(later)
    after = dict(store.conn.execute("SELECT colour, COUNT(*) FROM case_status GROUP BY colour").fetchall())
    assert before != after
    index.refresh(store.conn)
    assert index.stats["builds"] == 1 and index.stats["status_reloads"] >= 1
    for filters in combos(index, rng, 60):
        check(store, index, filters)


# ---- the page and its export, over the demo county ----

@pytest.fixture
def county(tmp_path: Path) -> County:
    return county_template().copy(tmp_path / "county")


@pytest.fixture
def app(county: County) -> Iterator[Any]:
    a = county.app()
    yield a
    close_app(a)


def test_the_filter_counts_are_the_rows_they_give(app: Any) -> None:
    b = Browser(app.test_client())
    b.login("coord")
    page = b.text("/web/cases")
    total = int(re.search(r'id="total-count">(\d+)<', page).group(1))
    assert total == page.count('class="case-row') > 20
    select = re.search(r'<select id="f-state" name="state">(.*?)</select>', page, re.S).group(1)
    options = re.findall(r'<option value="(\w+)"[^>]*data-count="(\d+)"', select)
    assert sum(int(n) for _, n in options) == total
    for value, n in options:
        sub = b.text(f"/web/cases?state={value}")
        assert int(re.search(r'id="total-count">(\d+)<', sub).group(1)) == int(n) == sub.count('class="case-row')


def test_the_export_holds_exactly_the_rows_the_filtered_page_counts(app: Any) -> None:
    b = Browser(app.test_client())
    b.login("coord")
    for query in ("", "township=330102100", "township=330102100&state=in_handling", "colour=red", "overdue=1",
                  "q=330102203"):
        page = b.text(f"/web/cases?{query}")
        total = int(re.search(r'id="total-count">(\d+)<', page).group(1))
        numbers = re.findall(r'class="case-link">([^<]+)<', page)
        wb = openpyxl.load_workbook(io.BytesIO(b.get(f"/web/export/cases.xlsx?{query}").get_data()), read_only=True)
        rows = list(wb.active.iter_rows(values_only=True))
        assert rows[0][0] == "案件编号" and len(rows) - 1 == total, query
        assert sorted(r[0] for r in rows[1:]) == sorted(numbers), query  # all on one page here
        csv_text = b.get(f"/web/export/cases.csv?{query}").get_data().decode("utf-8-sig")
        assert len(csv_text.strip().splitlines()) - 1 == total


def test_pages_cut_the_caseload_and_the_last_page_is_the_end(app: Any) -> None:
    from sync_server.web import caseload as cl

    old = cl.PAGE_SIZE
    cl.PAGE_SIZE = 10
    try:
        b = Browser(app.test_client())
        b.login("coord")
        first = b.text("/web/cases?sort=case_no")
        total = int(re.search(r'id="total-count">(\d+)<', first).group(1))
        seen = []
        for n in range(1, (total + 9) // 10 + 1):
            seen += re.findall(r'class="case-link">([^<]+)<', b.text(f"/web/cases?sort=case_no&page={n}"))
        assert len(seen) == total == len(set(seen)) and seen == sorted(seen)
        beyond = b.text("/web/cases?sort=case_no&page=999")
        assert re.findall(r'class="case-link">([^<]+)<', beyond) == seen[(total - 1) // 10 * 10:]
    finally:
        cl.PAGE_SIZE = old


def test_search_by_case_number_and_by_name(app: Any, county: County) -> None:
    b = Browser(app.test_client())
    b.login("coord")
    page = b.text("/web/cases?q=330102203")
    numbers = re.findall(r'class="case-link">([^<]+)<', page)
    assert numbers and all("330102203" in n for n in numbers)
    import sqlite3

    with sqlite3.connect(county.root / "server" / "server.db") as conn:
        name, case_no = conn.execute(
            "SELECT p.name, c.case_no FROM parties p JOIN cases c ON c.id = p.case_id "
            "WHERE p.role = 'respondent' AND c.category != 'accusation' ORDER BY c.case_no LIMIT 1").fetchone()
    found = b.text(f"/web/cases?q={name[:2]}")
    assert case_no in re.findall(r'class="case-link">([^<]+)<', found)
