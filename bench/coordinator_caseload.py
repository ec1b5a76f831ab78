"""Bench: the coordinator's caseload page on a county of 200,000 cases, against its bare SQL.

The issue: *"loads a county of 200,000 cases and 2,000,000 ops ... and prints, in one run,
the server time per caseload page (p50 and p95 over common filters) beside the time of
the bare SQL query for the same filter. Target: the page within 3x of its query."*

* **Build** (not timed; its stages are printed). One township's year of casework from
  ``bench.workload.generate`` (six village laptops and the township's, concurrent edits,
  refused transitions, voids, leaders, evaluations), about 20,000 cases (2,000 with
  ``--quick``), applied to a real ``ServerStore`` with ``Replica.apply`` in batches of
  5,000, then the real deadline sweep (``Sweeper.sweep``) over it: alerts, escalations,
  letters and every case's ``case_status``. Then the township is **copied nine times**
  into nine more townships of the same county (a county of ten townships, 60 villages):
  every row of the op log, of the fold tables, of ``conflicts`` and ``case_status`` is
  copied with its ids renamed (each 32-hex id has its last byte XORed with the copy's
  number; conflict ids, which are hashes of what opened them, are derived again from the
  renamed parts, as the fold derives them), its node codes moved to the copy's township
  and villages, and its case numbers given the copy's prefix. Stamps and devices stay.
  The copies are therefore exactly what folding their renamed ops gives; ``--verify``
  checks it with ``Replica.verify_rebuild`` (slow at full size). Each village gets an
  enrolled laptop whose last contact lies 0-5 days back. Then ``ANALYZE``.
* **Page** (timed). ``sync_server.app.create_app`` on that folder, a coordinator logged
  in through the login form (Flask's test client), then ``GET /web/cases?<filter>``: the
  whole request (session lookup, the caseload index's freshness check, filtering, the
  counts for every option of the ten filters, the page's 50 rows read by primary key,
  masking, Jinja). The first request builds the in-memory index (reported apart);
  ``renders`` timed renders per filter, p50 and p95.
* **Bare SQL** (timed, interleaved with the renders): ``caseload.reference_sql`` for the
  same filter, the plain query a page without the index would run: the page's 50 rows
  (``LIMIT 50``, same order) and the ``COUNT(*)`` of the matching cases, on its own
  connection, ``fetchall``. The bench checks that its count equals the page's.
* **After a merge** (timed): 200 more ops merged through ``Replica.apply``, then the
  first render (the index catches up with the touched cases), against a render with
  nothing new.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import workload as W
from conflict.fold import conflict_id
from sync_server import ops_log
from sync_server.app import create_app
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore
from sync_server.sweep import Sweeper
from sync_server.users import add_user
from sync_server.web import caseload
from sync_server.web.caseindex import Nodes

COPIES = 10
FULL_TEMPLATE_CASES = 20_000
QUICK_TEMPLATE_CASES = 2_000
APPLY_BATCH = 5000
PASSWORD = "bench-password-1"
TEMPLATE_VILLAGES = [f"330102{i + 1:03d}" for i in range(len(W.VILLAGES))]
COPY_TABLES = ("cases", "parties", "visits", "mediations", "notices", "leader_assignments", "evaluations",
               "notes", "alerts")


class FixedClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"  {msg}", file=sys.stderr, flush=True)


def township(k: int) -> str:
    return f"3301021{k:02d}"  # copy 0: 330102100, the template's own


def village(k: int, i: int) -> str:
    return f"3301020{k}{i + 1}"  # copy 0: 330102001..006, the template's own


def nodes_rows() -> list[dict[str, str]]:
    rows = [{"code": W.COUNTY_NODE, "name": "示范县", "level": "county", "parent": ""}]
    for k in range(COPIES):
        rows.append({"code": township(k), "name": f"第{k + 1}镇", "level": "township", "parent": W.COUNTY_NODE})
        for i, name in enumerate(W.VILLAGES):
            rows.append({"code": village(k, i), "name": f"{k + 1}镇{name}", "level": "village",
                         "parent": township(k)})
    return rows


def template_ops(n_cases: int, seed: int) -> tuple[list[Any], int]:
    n_ops = int(n_cases / 0.0795)
    while True:
        ops = W.generate(n_ops, seed)
        creates = sum(1 for op in ops if op.entity == "case" and op.kind == "create")
        if creates >= n_cases:
            return ops, n_ops
        n_ops = int(n_ops * n_cases / max(1, creates)) + 500


class Renamer:
    """Renames one copy's values: ids, node codes, case numbers (module docstring)."""

    def __init__(self, k: int, conflict_ids: dict[str, str]) -> None:
        self.k = k
        self.conflicts = conflict_ids
        self.nodes = {W.TOWNSHIP_NODE: township(k), **{v: village(k, i) for i, v in enumerate(TEMPLATE_VILLAGES)}}
        # one pass over a text: a 32-hex id, a node code, or a case number
        self.pattern = re.compile(
            r"(?<![0-9a-f])([0-9a-f]{32})(?![0-9a-f])"
            r"|(?<![0-9])(" + "|".join(map(re.escape, self.nodes)) + r")(?![0-9])"
            r"|(?<![0-9A-Za-z])([VT])0(?=\d\d-[0-9a-z]{4}-\d{4}-\d{4})")
        self._case_prefix = {"V": f"V{k}", "T": f"T{k}"}

    def hexid(self, x: str) -> str:
        got = self.conflicts.get(x)
        if got is not None:
            return got
        return x[:30] + f"{int(x[30:], 16) ^ self.k:02x}"

    def _one(self, m: re.Match[str]) -> str:
        if m.group(1):
            return self.hexid(m.group(1))
        if m.group(2):
            return self.nodes[m.group(2)]
        return self._case_prefix[m.group(3)]

    def text(self, s: Any) -> Any:
        if not isinstance(s, str) or not s:
            return s
        return self.pattern.sub(self._one, s)

    def column(self, name: str) -> Any:
        """The renaming for one column: ids directly, stamps and devices unchanged, text by the pattern."""
        if name in ("id", "op_id", "entity_id", "case_id", "resolved_by"):
            return lambda v: self.hexid(v) if isinstance(v, str) and len(v) == 32 else self.text(v)
        if name in ("stamp", "device", "author", "created_stamp", "updated_stamp", "opened_stamp", "occurred_at",
                    "kind", "entity", "state", "category", "subject", "colour", "status", "field", "role",
                    "schema_version", "voided", "seq"):
            return lambda v: v
        return self.text


def conflict_map(conn: sqlite3.Connection, k: int) -> dict[str, str]:
    """Old conflict id -> the id the fold derives from the renamed entity and ops."""
    plain = Renamer(k, {})
    out = {}
    for cid, entity, entity_id, field, kind, op_ids in conn.execute(
            "SELECT id, entity, entity_id, field, kind, op_ids FROM conflicts"):
        ids = json.loads(op_ids)
        if kind == "invalid_transition":
            out[cid] = conflict_id(entity, plain.hexid(entity_id), "transition", plain.hexid(ids[0]))
        else:
            out[cid] = conflict_id(entity, plain.hexid(entity_id), field, plain.hexid(ids[0]), plain.hexid(ids[1]))
    return out


def _renamed(r: Renamer, cols: list[str], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    fns = [r.column(c) for c in cols]
    return [tuple(f(v) for f, v in zip(fns, row, strict=True)) for row in rows]


def rename_copy(db_path: str, top_seq: int, k: int) -> tuple[int, dict[str, tuple[list[str], list[Any]]]]:
    """Copy 0's rows renamed as township ``k`` (in a worker process: its own read-only connection,
    which sees only the committed template while the main process writes the copies)."""
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA query_only=1")
    try:
        r = Renamer(k, conflict_map(conn, k))
        out: dict[str, tuple[list[str], list[Any]]] = {}
        cols = [d[1] for d in conn.execute("PRAGMA table_info(ops)")][1:]  # all but seq
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM ops WHERE seq <= ? ORDER BY seq", (top_seq,)).fetchall()
        out["ops"] = (cols, _renamed(r, cols, rows))
        for table in (*COPY_TABLES, "conflicts", "case_status"):
            cols = [d[1] for d in conn.execute(f"PRAGMA table_info([{table}])")]
            out[table] = (cols, _renamed(r, cols, conn.execute(f"SELECT {', '.join(cols)} FROM [{table}]").fetchall()))
        return k, out
    finally:
        conn.close()


def copy_townships(store: ServerStore, top_seq: int, t0: float, progress: bool) -> int:
    """Townships 2..COPIES: renamed by worker processes (one per CPU), written here in one transaction."""
    import functools
    import multiprocessing
    import os

    workers = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2, COPIES - 1))
    job = functools.partial(rename_copy, str(store.replica.path), top_seq)
    written = 0
    with multiprocessing.get_context("spawn").Pool(workers) as pool, store.transaction():
        for k, tables in pool.imap(job, range(1, COPIES)):
            for table, (cols, rows) in tables.items():
                store.conn.executemany(
                    f"INSERT INTO [{table}] ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
                written += len(rows)
            _say(f"copied the township as 第{k + 1}镇 ({time.perf_counter() - t0:.0f} s)", progress)
        store.set_meta("sweep_watermark", str(store.max_op_seq()))
    return written


def build(root: Path, n_cases: int, seed: int, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    ops, generated = template_ops(n_cases, seed)
    _say(f"generated {len(ops):,} ops for one township ({time.perf_counter() - t0:.0f} s)", progress)
    last_ms = max(int(op.stamp[:18]) for op in ops)
    now = last_ms + 86_400_000
    clock = FixedClock(now)
    store = ServerStore.init(root / "server", clock=clock)
    import_nodes(store, nodes_rows())
    rng = random.Random(seed)
    with store.transaction():
        store.conn.executemany(
            "INSERT INTO devices(device_id, node, level, user, x25519, ed25519, enrolled_ms, last_contact_ms) "
            "VALUES (?, ?, 'village', 'bench', '00', '00', ?, ?)",
            [(f"b{k}{i}{'0' * 13}"[:16], village(k, i), now - 365 * 86_400_000,
              now - rng.randint(0, 5 * 86_400_000)) for k in range(COPIES) for i in range(len(W.VILLAGES))])
        add_user(store.conn, "coord", PASSWORD, role="coordinator", now_ms=now)
    store.conn.execute("PRAGMA synchronous=OFF")
    t1 = time.perf_counter()
    for i in range(0, len(ops), APPLY_BATCH):
        store.replica.apply(ops[i : i + APPLY_BATCH])
    _say(f"applied them ({time.perf_counter() - t1:.0f} s)", progress)
    t1 = time.perf_counter()
    rules = store.rules()
    report = Sweeper(SyncService(store, rules=rules), rules).sweep(now)
    _say(f"swept {report.cases:,} cases, {report.ops_written:,} server ops ({time.perf_counter() - t1:.0f} s)",
         progress)
    conn = store.conn
    top = store.max_op_seq()
    rows = copy_townships(store, top, time.perf_counter(), progress)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("ANALYZE")
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM [{t}]").fetchone()[0] for t in ("ops", "cases", "case_status",
                                                                                     "conflicts", "parties")}
    size = (root / "server" / "server.db").stat().st_size
    store.close()
    return {"now": now, "template_ops": len(ops), "generated": generated, "swept": report.cases,
            "sweep_ops": report.ops_written, "counts": counts, "db_bytes": size, "copied_rows": rows,
            "build_s": time.perf_counter() - t0}


def verify(root: Path) -> list[str]:
    from conflict.replica import Replica

    rep = Replica(root / "server" / "server.db", create=False)
    try:
        return rep.verify_rebuild()
    finally:
        rep.close()


def _pct(xs: Sequence[float], p: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def filters_for(conn: sqlite3.Connection) -> list[tuple[str, dict[str, str]]]:
    """The common filters: what a coordinator clicks first."""
    leader = conn.execute("SELECT leader, COUNT(*) n FROM leader_assignments WHERE voided=0 AND ended_at IS NULL "
                          "GROUP BY leader ORDER BY n DESC LIMIT 1").fetchone()
    out: list[tuple[str, dict[str, str]]] = [
        ("default (open and closed, newest first)", {}),
        ("township", {"township": township(3)}),
        ("township + state in handling", {"township": township(3), "state": "in_handling"}),
        ("village", {"village": village(5, 2)}),
        ("colour red", {"colour": "red"}),
        ("overdue", {"overdue": "1"}),
        ("awaiting sync", {"awaiting": "1"}),
        ("category dispute + level village", {"category": "dispute", "level": "village"}),
        ("open conflicts", {"conflicts": "1"}),
        ("overdue, next deadline first", {"overdue": "1", "sort": "due"}),
    ]
    if leader:
        out.append(("leader", {"leader": leader[0]}))
    return out


def run(*, quick: bool = False, renders: int = 20, seed: int = 1, progress: bool = True,
        directory: str | None = None, check: bool = False) -> dict[str, Any]:
    """Build the county (or reuse the one kept in ``$MINQING_BENCH_COORD_KEEP``) and measure."""
    import os

    n_cases = QUICK_TEMPLATE_CASES if quick else FULL_TEMPLATE_CASES
    keep = os.environ.get("MINQING_BENCH_COORD_KEEP")
    if keep:  # the build takes minutes at full size: keep it to measure again
        root = Path(keep) / f"county-{n_cases}-{seed}"
        marker = root / "built.json"
        if marker.exists():
            _say(f"reusing the county built in {root}", progress)
            built = json.loads(marker.read_text())
        else:
            root.mkdir(parents=True, exist_ok=True)
            built = build(root, n_cases, seed, progress)
            marker.write_text(json.dumps(built))
        return _measure(root, built, renders, progress)
    with tempfile.TemporaryDirectory(prefix="minqing-bench-coord-", dir=directory) as tmp:
        root = Path(tmp)
        _say(f"building a county of {COPIES} townships x ~{n_cases:,} cases (not timed)", progress)
        built = build(root, n_cases, seed, progress)
        if check:
            t0 = time.perf_counter()
            built["verify"] = verify(root)
            built["verify_s"] = time.perf_counter() - t0
            _say(f"verify_rebuild: {len(built['verify'])} differences ({built['verify_s']:.0f} s)", progress)
        return _measure(root, built, renders, progress)


def _measure(root: Path, built: dict[str, Any], renders: int, progress: bool) -> dict[str, Any]:
    clock = FixedClock(built["now"])
    # The server's JSON request log is written as in production (its cost is in the page
    # time) but to /dev/null, so the figures are not buried under a line per request.
    ops_log.configure_logging(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the bench
    app = create_app(root / "server", {"MINQING_CLOCK": clock, "TESTING": True})
    http = app.test_client()
    page = http.get("/web/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    r = http.post("/web/login", data={"username": "coord", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302, r.status_code
    bare = sqlite3.connect(root / "server" / "server.db")
    bare.execute("PRAGMA query_only=1")
    nodes = Nodes.load(bare)
    out: dict[str, Any] = {**built, "renders": renders, "filters": []}
    try:
        t0 = time.perf_counter()
        first = http.get("/web/cases")
        out["first_s"] = time.perf_counter() - t0
        assert first.status_code == 200
        index = app.extensions["minqing_coord_index"]
        out["index_build_s"] = index.stats["build_s"]
        out["index_cases"] = index.n
        for label, args in filters_for(bare):
            query = "&".join(f"{k}={v}" for k, v in args.items())
            url = "/web/cases" + (f"?{query}" if query else "")
            filters = {k: v for k, v in args.items() if k != "sort"}
            rows_q, count_q, params = caseload.reference_sql(filters, nodes, sort=args.get("sort", "received"))
            t0 = time.perf_counter()
            resp = http.get(url)
            cold = time.perf_counter() - t0
            html = resp.get_data(as_text=True)
            assert resp.status_code == 200, resp.status_code
            shown = int(re.search(r'id="total-count">(\d+)<', html).group(1))  # type: ignore[union-attr]
            sql_total = bare.execute(count_q, params).fetchone()[0]
            assert shown == sql_total, (label, shown, sql_total)
            page_s: list[float] = []
            sql_s: list[float] = []
            for _ in range(renders):
                t0 = time.perf_counter()
                resp = http.get(url)
                page_s.append(time.perf_counter() - t0)
                assert resp.status_code == 200
                t0 = time.perf_counter()
                bare.execute(rows_q, params).fetchall()
                bare.execute(count_q, params).fetchone()
                sql_s.append(time.perf_counter() - t0)
            row = {"label": label, "url": url, "matching": shown, "cold_s": cold, "html_bytes": len(html.encode()),
                   "page_p50": statistics.median(page_s), "page_p95": _pct(page_s, 0.95),
                   "sql_p50": statistics.median(sql_s), "sql_p95": _pct(sql_s, 0.95)}
            row["ratio"] = row["page_p50"] / row["sql_p50"]
            out["filters"].append(row)
            _say(f"{label}: {shown:,} cases, page p50 {1000 * row['page_p50']:.1f} ms, "
                 f"SQL p50 {1000 * row['sql_p50']:.1f} ms", progress)
        out["after_merge"] = _after_merge(root, http, clock)
    finally:
        bare.close()
        app.extensions["minqing_coord_stores"].close_all()
    return out


def _after_merge(root: Path, http: Any, clock: FixedClock) -> dict[str, Any]:
    """The first render after 200 more ops merged, beside a render with nothing new."""
    import os

    store = ServerStore(root / "server", clock=clock)
    try:
        rows = store.conn.execute("SELECT id, case_id, fold FROM cases WHERE voided=0 ORDER BY id LIMIT 200").fetchall()
        from conflict.author import make_op
        from schema.obligations import iso

        last = store.hlc_last()
        ops = []
        for cid, _case, fold_text in rows:
            win = json.loads(fold_text)["win"].get("people_count")
            op, last = make_op(last=last, wall_ms=clock.ms, device=store.keys.node_id, author="bench",
                               op_id=os.urandom(16).hex(),
                               entity="case", entity_id=cid, case_id=cid, kind="set",
                               values={"people_count": 3}, base={"people_count": win[0] if win else None},
                               occurred_at=iso(clock.ms))
            ops.append(op)
        store.replica.apply(ops)
    finally:
        store.close()
    t0 = time.perf_counter()
    assert http.get("/web/cases").status_code == 200
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert http.get("/web/cases").status_code == 200
    steady = time.perf_counter() - t0
    return {"ops": len(ops), "first_s": first, "steady_s": steady}


def report(r: dict[str, Any]) -> None:
    c = r["counts"]
    print("== coordinator: the county caseload page vs its bare SQL ==")
    print(f"county: {c['cases']:,} cases, {c['ops']:,} ops, {c['parties']:,} parties, {c['conflicts']:,} conflicts, "
          f"{c['case_status']:,} status rows; server.db {r['db_bytes'] / 2**30:.2f} GiB; build {r['build_s']:.0f} s "
          f"(one township generated: {r['template_ops']:,} ops; swept {r['swept']:,} cases, {r['sweep_ops']:,} "
          f"server ops; copied x{COPIES - 1}: {r['copied_rows']:,} rows)")
    if "verify" in r:
        print(f"verify_rebuild of the whole county: {len(r['verify'])} differences ({r['verify_s']:.0f} s)")
    print(f"first request (builds the caseload index of {r['index_cases']:,} cases in "
          f"{r['index_build_s']:.2f} s): {r['first_s']:.2f} s; then {r['renders']} renders per filter")
    print(f"{'filter':<42} {'cases':>8} {'page p50':>9} {'page p95':>9} {'SQL p50':>9} {'SQL p95':>9} "
          f"{'page/SQL':>9}")
    for f in r["filters"]:
        print(f"{f['label']:<42} {f['matching']:>8,} {1000 * f['page_p50']:>7.1f}ms {1000 * f['page_p95']:>7.1f}ms "
              f"{1000 * f['sql_p50']:>7.1f}ms {1000 * f['sql_p95']:>7.1f}ms {f['ratio']:>8.2f}x")
    pages = [f["page_p50"] for f in r["filters"]]
    sqls = [f["sql_p50"] for f in r["filters"]]
    worst = max(r["filters"], key=lambda f: f["ratio"])
    print(f"over the filters: page p50 {1000 * statistics.median(pages):.1f} ms, p95 "
          f"{1000 * _pct([x for f in r['filters'] for x in (f['page_p95'],)], 0.95):.1f} ms; bare SQL p50 "
          f"{1000 * statistics.median(sqls):.1f} ms; worst page/SQL {worst['ratio']:.2f}x ({worst['label']})")
    target = all(f["ratio"] <= 3 for f in r["filters"])
    print(f"target (page within 3x of its query): {'met' if target else 'NOT met'}")
    a = r["after_merge"]
    print(f"after a merge of {a['ops']} ops: first render {1000 * a['first_s']:.1f} ms (the index catches up), "
          f"next {1000 * a['steady_s']:.1f} ms")
