"""Bench: the caseload page (``GET /cases``) for a laptop holding 5,000 cases, against its bare SQL.

The issue: *"... and the time to render the caseload page for a village holding 5,000
cases beside the time of the bare SQL query behind it."*

* **Build** (not timed). ``FieldClient.init`` in a temp dir; ``bench.workload.generate``
  until it has made ``n_cases`` case creates; the ops of those cases' *case records*
  (create, transition, set, resolve, void, tag add/remove: a realistic spread of states,
  titles edited, some voided) are sealed with the client's own ``Sealer`` (titles,
  summaries, demands encrypted, as the client stores them) and applied straight to its
  replica with ``Replica.apply(..., allow_sealed=True)`` in batches of 500. Parties,
  visits and the other records are left out: the caseload query reads ``cases`` only.
  Then ``FieldClient.refresh_due()`` works out every case's ``case_due`` row (colour,
  next due date), as recording through ``FieldClient`` would have done op by op.
* **Page** (timed). ``field_client.web.create_app`` on that folder, unlocked the way
  ``tests/field_client/test_web.py`` does (GET ``/unlock``, POST the passphrase with the
  session's CSRF token), then ``GET /cases`` through Flask's test client, status 200
  checked: the whole request (session, the header's pending count, ``list_cases_page``:
  the stale ``case_due`` check, a COUNT and the page's SELECT joined to ``case_due`` with
  ORDER BY colour and next due and LIMIT 100, titles opened for the page; Jinja rendering). The first render (templates compiled)
  is reported apart; then ``renders`` more, p50 and p95.
* **Baseline** (timed, interleaved with the renders). The two queries the page runs for
  the same filter (the COUNT and the page's SELECT, ``fetchall``) on the same connection,
  nothing else.
* **Between them** (timed, interleaved): ``FieldClient.list_cases_page`` called directly,
  which splits the page's time into "the list" and "the rest".

Filters: the default page (all states, voided hidden, sorted by next due date) and
``?state=<s>`` for the most common open state after ``registered`` (a page of a few
hundred matching cases) and ``?state=registered`` (the largest).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import workload as W
from field_client import keystore
from field_client.store import FieldClient
from field_client.web import create_app

PASSPHRASE = "bench passphrase"
NODE = "330102101"
BATCH = 500
PER_PAGE = 100


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"  {msg}", file=sys.stderr, flush=True)


def case_ops(n_cases: int, seed: int) -> tuple[list[Any], int]:
    """The case-record ops of the first ``n_cases`` cases of a generated township year."""
    n_ops = int(n_cases / 0.078) + 2000
    while True:
        ops = W.generate(n_ops, seed)
        creates = [op.case_id for op in ops if op.entity == "case" and op.kind == "create"]
        if len(creates) >= n_cases:
            break
        n_ops = int(n_ops * 1.15)
    keep = set(creates[:n_cases])
    return [op for op in ops if op.entity == "case" and op.case_id in keep], n_ops


def build(path: Path, n_cases: int, seed: int, progress: bool) -> dict[str, Any]:
    _say(f"building a laptop with {n_cases} cases (not timed)", progress)
    t0 = time.perf_counter()
    ops, generated = case_ops(n_cases, seed)
    last_ms = max(int(op.stamp[:18]) for op in ops)
    clock_s = last_ms / 1000 + 86400  # "now" = the day after the last op
    client = FieldClient.init(path, PASSPHRASE, node=NODE, user="wangli", node_name="东村",
                              clock=lambda: clock_s)
    try:
        sealed = [client.sealer.seal_op(op) for op in ops]
        for i in range(0, len(sealed), BATCH):
            client.replica.apply(sealed[i : i + BATCH], allow_sealed=True)
        states = Counter(r[0] for r in client.replica.conn.execute("SELECT state FROM cases WHERE voided=0"))
        voided = client.replica.conn.execute("SELECT COUNT(*) FROM cases WHERE voided=1").fetchone()[0]
        n = client.replica.conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        sealed_titles = client.replica.conn.execute(
            "SELECT COUNT(*) FROM cases WHERE title LIKE 'enc1:%'").fetchone()[0]
        t_due = time.perf_counter()
        client.refresh_due()
        due_s = time.perf_counter() - t_due
        colours = Counter(r[0] for r in client.replica.conn.execute("SELECT colour FROM case_due"))
    finally:
        client.close()
    return {"cases": n, "ops": len(ops), "generated": generated, "states": dict(states), "voided": voided,
            "sealed_titles": sealed_titles, "clock_s": clock_s, "build_s": time.perf_counter() - t0,
            "due_s": due_s, "colours": dict(colours)}


def _pct(xs: Sequence[float], p: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _sql_for(state: str | None) -> tuple[str, str, list[Any]]:
    """(the COUNT, the first page's SELECT, their parameters) for a filter: the SQL of
    ``FieldClient.list_cases_page`` (checked against its rows)."""
    where, params = FieldClient._case_filter(state, None, None, False)
    return (f"SELECT COUNT(*) FROM cases c{where}", FieldClient.page_sql(where, filtered=bool(state)),
            [*params, PER_PAGE, 0])


def run(n_cases: int = 5000, *, renders: int = 20, seed: int = 1, progress: bool = True,
        directory: str | None = None) -> dict[str, Any]:
    keystore_n = keystore.SCRYPT_N
    keystore.SCRYPT_N = 2**12  # unlocking is not what is measured
    try:
        with tempfile.TemporaryDirectory(prefix="minqing-bench-", dir=directory) as tmp:
            data = Path(tmp) / "device"
            built = build(data, n_cases, seed, progress)
            return _measure(data, built, renders, seed, progress, directory)
    finally:
        keystore.SCRYPT_N = keystore_n


def _measure(data: Path, built: dict[str, Any], renders: int, seed: int, progress: bool,
             directory: str | None) -> dict[str, Any]:
    clock_s = built["clock_s"]
    app = create_app(data, test_config={"TESTING": True, "MINQING_CLOCK": lambda: clock_s})
    http = app.test_client()
    try:
        http.get("/unlock")
        with http.session_transaction() as s:
            token = s.get("csrf", "")
        r = http.post("/unlock", data={"passphrase": PASSPHRASE, "csrf_token": token})
        assert r.status_code == 302 and r.headers["Location"].endswith("/cases"), r.status_code
        client: FieldClient = app.extensions["minqing"].client
        open_states = {s: c for s, c in built["states"].items() if s not in ("registered", "closed", "final",
                                                                               "not_accepted")}
        second = max(open_states, key=lambda s: open_states[s]) if open_states else "accepted"
        filters: list[tuple[str, str | None]] = [("default", None), (f"state={second}", second),
                                                 ("state=registered", "registered")]
        out: dict[str, Any] = {**built, "renders": renders, "seed": seed,
                               "directory": directory or tempfile.gettempdir(), "filters": []}
        for label, state in filters:
            url = "/cases" + (f"?state={state}" if state else "")
            count_sql, sql, params = _sql_for(state)
            conn = client.replica.conn
            # one untimed check: the bare SELECT is what list_cases_page runs (same rows, same order)
            matching = conn.execute(count_sql, params[:-2]).fetchone()[0]
            bare = conn.execute(sql, params).fetchall()
            listed, total = client.list_cases_page(state=state, per_page=PER_PAGE)
            assert [r[0] for r in bare] == [r["id"] for r in listed] and total == matching, "the bare SQL drifted from list_cases_page"
            t0 = time.perf_counter()
            first = http.get(url)
            cold = time.perf_counter() - t0
            assert first.status_code == 200, first.status_code
            html = first.get_data(as_text=True)
            shown = html.count("<tr") - 1  # minus the header row
            page_s: list[float] = []
            sql_s: list[float] = []
            list_s: list[float] = []
            for _ in range(renders):
                t0 = time.perf_counter()
                resp = http.get(url)
                page_s.append(time.perf_counter() - t0)
                assert resp.status_code == 200
                t0 = time.perf_counter()
                conn.execute(count_sql, params[:-2]).fetchone()
                conn.execute(sql, params).fetchall()
                sql_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                client.list_cases_page(state=state, per_page=PER_PAGE)
                list_s.append(time.perf_counter() - t0)
            row: dict[str, Any] = {
                "label": label, "url": url, "matching": matching, "shown": shown, "html_bytes": len(html.encode()),
                "cold_s": cold,
                "page_p50": statistics.median(page_s), "page_p95": _pct(page_s, 0.95),
                "sql_p50": statistics.median(sql_s), "sql_p95": _pct(sql_s, 0.95),
                "list_p50": statistics.median(list_s), "list_p95": _pct(list_s, 0.95),
            }
            row["ratio"] = row["page_p50"] / row["sql_p50"]
            out["filters"].append(row)
            _say(f"{label}: page p50 {1000 * row['page_p50']:.1f} ms, SQL p50 {1000 * row['sql_p50']:.2f} ms",
                 progress)
        out["split"] = _split(client, clock_s)
        return out
    finally:
        app.extensions["minqing"].lock_all()


def _split(client: FieldClient, clock_s: float) -> dict[str, float]:
    """list_cases_page(default) taken apart: the stale check, COUNT, page SELECT, titles (one pass each)."""
    count_sql, sql, params = _sql_for(None)
    t0 = time.perf_counter()
    refreshed = client.refresh_due()
    t1 = time.perf_counter()
    client.replica.conn.execute(count_sql, params[:-2]).fetchone()
    t2 = time.perf_counter()
    cur = client.replica.conn.execute(sql, params)
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur]
    t3 = time.perf_counter()
    for row in rows:
        row["title"] = client.sealer.open_value("case", "title", row["title"])
    t4 = time.perf_counter()
    return {"rows": float(len(rows)), "refreshed": float(refreshed), "stale_check": t1 - t0, "count": t2 - t1,
            "page_select": t3 - t2, "decrypt_titles": t4 - t3}


def report(r: dict[str, Any], out: Any = None) -> None:
    w = (out or sys.stdout).write
    states = ", ".join(f"{s} {c}" for s, c in sorted(r["states"].items(), key=lambda kv: -kv[1]))
    w(f"caseload_page: a laptop holding {r['cases']} cases ({r['ops']} case-record ops from a generated "
      f"{r['generated']}-op township year, seed {r['seed']}; built in {r['build_s']:.1f} s, not timed); "
      f"{r['renders']} renders per filter, files in {r['directory']}\n")
    w(f"  not voided: {states}; voided {r['voided']}; titles sealed: {r['sealed_titles']}\n")
    colours = ", ".join(f"{c} {n}" for c, n in sorted(r["colours"].items(), key=lambda kv: -kv[1]))
    w(f"  case_due for every case worked out in {r['due_s']:.1f} s (not timed): {colours}\n")
    w(f"  {'filter':<22} {'match':>6} {'shown':>6} {'page p50':>9} {'p95':>8} {'SQL p50':>8} {'p95':>7} "
      f"{'page÷SQL':>9} {'list_cases p50':>15} {'1st page':>9} {'HTML':>8}\n")
    for f in r["filters"]:
        w(f"  {f['label']:<22} {f['matching']:>6} {f['shown']:>6} {1000 * f['page_p50']:>7.1f}ms "
          f"{1000 * f['page_p95']:>6.1f}ms {1000 * f['sql_p50']:>6.2f}ms {1000 * f['sql_p95']:>5.2f}ms "
          f"{f['ratio']:>8.1f}x {1000 * f['list_p50']:>13.1f}ms {1000 * f['cold_s']:>7.1f}ms "
          f"{f['html_bytes'] / 1024:>6.0f}KB\n")
    s = r["split"]
    parts = {k: v for k, v in s.items() if k not in ("rows", "refreshed")}
    total = sum(parts.values())
    w(f"  list_cases_page (default filter) taken apart, one pass, {int(s['rows'])} rows shown, "
      f"{int(s['refreshed'])} case_due rows refreshed: "
      + ", ".join(f"{k.replace('_', ' ')} {1000 * v:.2f} ms ({100 * v / total:.0f}%)" for k, v in parts.items())
      + "\n")
    w("  one render = list_cases_page: stale case_due rows refreshed (indexed), COUNT, one page of 100 joined "
      "to case_due and sorted in SQL by colour and next due, titles opened for that page\n")
