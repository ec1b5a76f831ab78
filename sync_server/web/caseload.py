"""The merged caseload: filters from the request, the index's answer, the rows of one page.

``parse_query`` reads the request's arguments; ``search`` turns the search box into
case positions (case number substring, or a party's name from its start); ``page``
asks the ``CaseIndex`` for the total, the page and the counts, then reads the page's rows
(and only those) from the replica by primary key. ``reference_sql`` is the same filter
written as one plain SQL query over the replica's tables: the tests check the index
against it, and the bench times it as "the bare SQL query".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync_server.web.caseindex import BOOL_DIMS, DIMS, SORTS, CaseIndex, Nodes, Query, Result
from sync_server.web.privacy import ACCUSATION, Viewer

PAGE_SIZE = 50
NONE = "-"  # in a URL: the empty value (no township: a county case; no leader)
MAX_SEARCH = 100

ROW_SQL = (
    "SELECT c.id, c.case_no, c.title, c.category, c.subject, c.state, c.level, c.node, c.origin_node, "
    "c.received_at, c.open_conflicts, c.voided, c.people_count, s.colour, s.next_due, s.next_rule, s.overdue, "
    "s.awaiting_sync, s.backlog FROM cases c LEFT JOIN case_status s ON s.case_id = c.id"
)
ROW_COLUMNS = ("id", "case_no", "title", "category", "subject", "state", "level", "node", "origin_node",
               "received_at", "open_conflicts", "voided", "people_count", "colour", "next_due", "next_rule",
               "overdue", "awaiting_sync", "backlog")


def url_value(value: str) -> str:
    return value if value else NONE


def index_value(text: str) -> str:
    return "" if text == NONE else text


def parse_query(args: Mapping[str, Any]) -> tuple[dict[str, str], str, str, int]:
    """(filters in index values, search text, sort, page number) from request arguments."""
    filters: dict[str, str] = {}
    for d in DIMS:
        raw = str(args.get(d, "") or "").strip()
        if not raw:
            continue
        if d in BOOL_DIMS and raw not in ("0", "1"):
            continue
        filters[d] = index_value(raw)[:100]
    q = str(args.get("q", "") or "").strip()[:MAX_SEARCH]
    sort = str(args.get("sort", "") or "received")
    if sort not in SORTS:
        sort = "received"
    try:
        page = max(1, min(100_000, int(str(args.get("page", "1")))))
    except ValueError:
        page = 1
    return filters, q, sort, page


def search(conn: sqlite3.Connection, index: CaseIndex, text: str, viewer: Viewer) -> list[int]:
    """Positions of the cases whose number contains ``text`` or with a party whose name starts
    with it. A reporter in an accusation case is found only by a user who may see them."""
    text = text.strip()
    if not text:
        return []
    found: set[int] = set()
    upper = text.upper()
    with index.lock:
        for p, no in enumerate(index.sortkeys["case_no"]):
            if no and upper in no.upper():
                found.add(p)
        pos = dict(index.pos)
    q = ("SELECT p.case_id, p.role, c.category FROM parties p JOIN cases c ON c.id = p.case_id "
         "WHERE p.voided = 0 AND p.name >= ? AND p.name < ?")
    for case_id, role, category in conn.execute(q, (text, text + "\U0010ffff")):
        if category == ACCUSATION and role != "respondent" and not viewer.confidential:
            continue
        at = pos.get(case_id)
        if at is not None:
            found.add(at)
    return sorted(found)


@dataclass
class Page:
    """One caseload page: what the template and the exports need."""

    filters: dict[str, str]
    q: str
    sort: str
    page: int
    total: int
    rows: list[dict[str, Any]]
    counts: dict[str, dict[str, int]]
    pages: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def rows_for(conn: sqlite3.Connection, ids: Sequence[str], index: CaseIndex) -> list[dict[str, Any]]:
    """The display rows of these cases, in the given order, with petitioners and leaders."""
    if not ids:
        return []
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        marks = ", ".join("?" * len(chunk))
        for r in conn.execute(f"{ROW_SQL} WHERE c.id IN ({marks})", chunk):
            out[r[0]] = dict(zip(ROW_COLUMNS, r, strict=True))
        for case_id, pid, name, role in conn.execute(
                f"SELECT case_id, id, name, role FROM parties WHERE voided = 0 AND case_id IN ({marks}) "
                "ORDER BY created_stamp, id", chunk):
            row = out.get(case_id)
            if row is not None:
                row.setdefault("parties", []).append({"id": pid, "name": name, "role": role})
    rows = []
    with index.lock:
        for case_id in ids:
            row = out.get(case_id)
            if row is None:
                continue
            p = index.pos.get(case_id)
            leaders = index.vals["leader"][p] if p is not None else ("",)
            row["leaders"] = [x for x in leaders if x]
            township, village = index.nodes.place(row["origin_node"])
            row["township"], row["village"] = township, village
            row["township_name"] = index.nodes.name(township)
            row["village_name"] = index.nodes.name(village)
            row["node_name"] = index.nodes.name(row["node"])
            row["colour"] = row["colour"] or "green"
            row.setdefault("parties", [])
            rows.append(row)
    return rows


def page(conn: sqlite3.Connection, index: CaseIndex, args: Mapping[str, Any], viewer: Viewer,
         *, size: int = PAGE_SIZE) -> Page:
    """Refresh the index, filter, count, and read one page of rows (one read transaction)."""
    filters, q, sort, number = parse_query(args)
    conn.execute("BEGIN")
    try:
        index.refresh(conn)
        positions = search(conn, index, q, viewer) if q else None
        query = Query(filters, positions, sort)
        res: Result = index.select(query, offset=(number - 1) * size, limit=size)
        if res.total and (number - 1) * size >= res.total:  # past the end: the last page
            number = (res.total - 1) // size + 1
            res = index.select(query, offset=(number - 1) * size, limit=size)
        rows = rows_for(conn, res.ids, index)
    finally:
        conn.execute("COMMIT")
    return Page(filters, q, sort, number, res.total, rows, res.counts, pages=max(1, -(-res.total // size)))


def all_rows(conn: sqlite3.Connection, index: CaseIndex, args: Mapping[str, Any], viewer: Viewer) -> Page:
    """Every row the filtered caseload counts (for exports), in the page's order."""
    filters, q, sort, _ = parse_query(args)
    conn.execute("BEGIN")
    try:
        index.refresh(conn)
        positions = search(conn, index, q, viewer) if q else None
        ids = index.all_ids(Query(filters, positions, sort))
        rows = rows_for(conn, ids, index)
    finally:
        conn.execute("COMMIT")
    return Page(filters, q, sort, 1, len(ids), rows, {})


# ---- the same filter as plain SQL (tests and the bench) ----

def node_codes(nodes: Nodes, dim: str, value: str) -> list[str]:
    """The origin nodes that count under a township or village filter value."""
    out = []
    for code in nodes.rows:
        township, village = nodes.place(code)
        if (dim == "township" and township == value) or (dim == "village" and village == value):
            out.append(code)
    return sorted(out)


def reference_sql(filters: Mapping[str, str], nodes: Nodes, *, sort: str = "received",
                  limit: int | None = PAGE_SIZE, offset: int = 0,
                  case_ids: Iterable[str] | None = None) -> tuple[str, str, list[Any]]:
    """(rows query, count query, parameters): the caseload filter written directly in SQL."""
    where = ["1=1"]
    params: list[Any] = []
    for d, v in filters.items():
        if d in ("township", "village"):
            if d == "township" and v == "":
                codes = [c for c in nodes.rows if nodes.place(c)[0] == ""]
            elif d == "village" and v == "":
                codes = [c for c in nodes.rows if nodes.place(c)[1] == ""]
            else:
                codes = node_codes(nodes, d, v)
            extra = " OR c.origin_node NOT IN (SELECT code FROM nodes)" if v == "" else ""
            where.append(f"(c.origin_node IN ({', '.join('?' * len(codes)) or 'NULL'}){extra})")
            params.extend(codes)
        elif d in ("state", "category", "subject", "level"):
            where.append(f"c.{d} = ?")
            params.append(v)
        elif d == "colour":
            where.append("COALESCE(s.colour, 'green') = ?")
            params.append(v)
        elif d in ("overdue", "awaiting", "backlog"):
            col = {"overdue": "overdue", "awaiting": "awaiting_sync", "backlog": "backlog"}[d]
            where.append(f"(COALESCE(s.{col}, 0) != 0) = ?")
            params.append(int(v))
        elif d == "conflicts":
            where.append("(COALESCE(c.open_conflicts, 0) > 0) = ?")
            params.append(int(v))
        elif d == "voided":
            where.append("c.voided = ?")
            params.append(int(v))
        elif d == "leader":
            sub = ("SELECT 1 FROM leader_assignments la WHERE la.case_id = c.id AND la.voided = 0 "
                   "AND la.ended_at IS NULL")
            if v == "":
                where.append(f"NOT EXISTS ({sub})")
            else:
                where.append(f"EXISTS ({sub} AND la.leader = ?)")
                params.append(v)
    if "voided" not in filters:
        where.append("c.voided = 0")
    if case_ids is not None:
        ids = list(case_ids)
        where.append(f"c.id IN ({', '.join('?' * len(ids)) or 'NULL'})")
        params.extend(ids)
    cond = " AND ".join(where)
    order = {
        "received": "c.received_at DESC",
        "due": "s.next_due IS NULL, s.next_due",
        "colour": ("CASE COALESCE(s.colour, 'green') WHEN 'red' THEN 0 WHEN 'orange' THEN 1 WHEN 'yellow' THEN 2 "
                   "WHEN 'blue' THEN 3 ELSE 4 END, COALESCE(s.next_due, '~')"),
        "case_no": "c.case_no",
        "updated": "COALESCE(c.updated_stamp, c.created_stamp) DESC",
    }.get(sort, "c.received_at DESC")
    rows = f"{ROW_SQL} WHERE {cond} ORDER BY {order}"
    if limit is not None:
        rows += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    count = f"SELECT COUNT(*) FROM cases c LEFT JOIN case_status s ON s.case_id = c.id WHERE {cond}"
    return rows, count, params
