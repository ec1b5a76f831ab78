"""Bench: the deadline sweep on a county of 100,000 and 1,000,000 cases with 1% due.

The issue: *"make bench sweeps replicas of 100,000 and 1,000,000 cases with 1% due, and
prints the sweep time beside the time of the indexed query that finds the due cases in
the same run: the sweep's cost must grow with the due cases, not with all cases."*

* **Build** (not timed). ``ServerStore.init`` in a temp dir (real keys, real ledger), a
  county of 10 townships × 10 villages, one active device per village. Every case is a
  real ``create`` op applied through ``Replica.apply`` (folded, in batches of 5,000,
  ``synchronous=OFF`` while building). The 99% background cases are registered
  "today" at villages; their ``case_status`` row is the one ``Sweeper`` computes for the
  first of them (identical cases, identical status: next look in 4 days). The 1% due
  cases were registered 8 days ago and examined then by ``Sweeper.sweep_cases`` (so
  their rows are the sweep's own); their village limit (7 days) has now passed and the
  devices synced since, so each is due an overdue mark, a reminder letter and an
  escalation to its township. The op watermark is set past every op.
* **Query** (timed, median of 5): ``Sweeper.due_cases(now)``, the indexed range on
  ``case_status.next_at_ms`` that the sweep starts from.
* **Sweep** (timed, once): ``Sweeper.sweep(now)``: the query, then for each due case its
  ops, ``schema.obligations.sweep_ops``, the server change sets sealed and ledgered
  (200 cases a batch), the merge, the status rows.

The figure that matters is the sweep's time per due case at both sizes: if it stays
flat while the county grows tenfold, the sweep's cost follows the due cases.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from schema.obligations import ms_of
from schema.ops import SCHEMA_VERSION, Op
from schema.stamp import encode
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore
from sync_server.sweep import Sweeper

NOW = ms_of("2026-11-20T10:00:00+08:00")
DAY = 86_400_000
TOWNSHIPS, VILLAGES = 10, 10
BATCH = 5000


class FixedClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def _nodes() -> tuple[list[dict[str, Any]], list[str]]:
    rows = [{"code": "330102", "name": "示范县", "level": "county", "parent": ""}]
    villages = []
    for t in range(1, TOWNSHIPS + 1):
        town = f"330102{t:03d}"
        rows.append({"code": town, "name": f"乡镇{t}", "level": "township", "parent": "330102"})
        for v in range(1, VILLAGES + 1):
            code = f"{town}{v:03d}"
            rows.append({"code": code, "name": f"村{t}-{v}", "level": "village", "parent": town})
            villages.append(code)
    return rows, villages


def _device(village: str) -> str:
    return f"d{village[-9:]}000000"[:16]


def _create(i: int, at_ms: int, village: str) -> Op:
    case_id = f"{i:032x}"
    dev = _device(village)
    return Op(op_id=f"{i:031x}c", stamp=encode(at_ms + i % 1000, 0, dev), device=dev, author="bench",
              entity="case", entity_id=case_id, case_id=case_id, kind="create",
              values={"case_no": f"B-{i:07d}", "title": "邻里纠纷", "category": "dispute", "subject": "neighbour",
                      "channel": "visit", "origin_node": village, "received_at": _iso(at_ms),
                      "first_receiver": "bench", "level": "village", "node": village},
              base={}, occurred_at=_iso(at_ms), schema_version=SCHEMA_VERSION)


def _iso(ms: int) -> str:
    from schema.obligations import iso

    return iso(ms)


def build(root: Path, n_cases: int, due_share: float = 0.01) -> tuple[ServerStore, int]:
    clock = FixedClock(NOW - 8 * DAY)
    store = ServerStore.init(root / "server", clock=clock)
    rows, villages = _nodes()
    import_nodes(store, rows)
    with store.transaction():
        store.conn.executemany(
            "INSERT INTO devices(device_id, node, level, user, x25519, ed25519, enrolled_ms, last_contact_ms) "
            "VALUES (?, ?, 'village', 'bench', '00', '00', ?, ?)",
            [(_device(v), v, NOW - 30 * DAY, NOW - 3600_000) for v in villages])
    store.conn.execute("PRAGMA synchronous=OFF")
    n_due = int(n_cases * due_share)
    due_ids: list[str] = []
    ops: list[Op] = []
    for i in range(n_cases):
        due = i < n_due
        op = _create(i, NOW - 8 * DAY if due else NOW - 3600_000, villages[i % len(villages)])
        if due:
            due_ids.append(op.case_id)
        ops.append(op)
        if len(ops) >= BATCH:
            store.replica.apply(ops)
            ops = []
    if ops:
        store.replica.apply(ops)
    rules = store.rules()
    sweeper = Sweeper(SyncService(store, rules=rules), rules)
    # the due cases as the sweep examined them when they were registered
    sweeper.sweep_cases(due_ids, NOW - 8 * DAY + 3600_000)
    # the background: one examined for real, the identical rest given its row
    background = f"{n_due:032x}"
    sweeper.sweep_cases([background], NOW)
    row = store.conn.execute("SELECT next_at_ms, next_due, next_rule, colour, obligations, flags FROM case_status "
                             "WHERE case_id=?", (background,)).fetchone()
    with store.transaction():
        store.conn.executemany(
            "INSERT OR IGNORE INTO case_status(case_id, next_at_ms, next_due, next_rule, colour, obligations, flags, "
            "evaluated_ms, evaluated_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
            ((f"{i:032x}", *row, NOW) for i in range(n_due, n_cases)))
        store.set_meta("sweep_watermark", str(store.max_op_seq()))
    store.conn.execute("PRAGMA synchronous=FULL")
    store.conn.execute("ANALYZE")
    clock.ms = NOW
    return store, n_due


def run(sizes: list[int], *, directory: str | None = None) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="minqing-bench-sweep-", dir=directory) as tmp:
            t0 = time.perf_counter()
            store, n_due = build(Path(tmp), n)
            build_s = time.perf_counter() - t0
            rules = store.rules()
            sweeper = Sweeper(SyncService(store, rules=rules), rules)
            query = []
            found = 0
            for _ in range(5):
                q0 = time.perf_counter()
                found = len(sweeper.due_cases(NOW))
                query.append((time.perf_counter() - q0) * 1000)
            s0 = time.perf_counter()
            report = sweeper.sweep(NOW)
            sweep_ms = (time.perf_counter() - s0) * 1000
            again0 = time.perf_counter()
            second = sweeper.sweep(NOW)
            again_ms = (time.perf_counter() - again0) * 1000
            escalated = store.conn.execute("SELECT COUNT(*) FROM cases WHERE level='township'").fetchone()[0]
            store.close()
        results.append({"cases": n, "due": n_due, "found": found, "query_ms": statistics.median(query),
                        "sweep_ms": sweep_ms, "per_due_ms": sweep_ms / max(1, report.cases),
                        "examined": report.cases, "ops_written": report.ops_written, "escalated": escalated,
                        "second_ms": again_ms, "second_ops": second.ops_written, "build_s": build_s})
    return results


def report(results: list[dict[str, Any]]) -> None:
    print("== sweep: the deadline sweep vs the indexed query that finds the due cases ==")
    print(f"{'cases':>10} {'due':>7} {'query ms':>9} {'sweep ms':>10} {'per due ms':>10} {'ops':>7} "
          f"{'escalated':>9} {'2nd sweep':>10} {'build s':>8}")
    for r in results:
        print(f"{r['cases']:>10,} {r['due']:>7,} {r['query_ms']:>9.2f} {r['sweep_ms']:>10.0f} {r['per_due_ms']:>10.3f} "
              f"{r['ops_written']:>7,} {r['escalated']:>9,} {r['second_ms']:>7.0f} ms {r['build_s']:>8.0f}")
        assert r["found"] == r["due"] == r["examined"], "the index must find exactly the due cases"
        assert r["second_ops"] == 0, "a second sweep must write nothing"
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(f"cases x{b['cases'] / a['cases']:.0f}, due cases x{b['due'] / a['due']:.0f}: "
              f"sweep time x{b['sweep_ms'] / a['sweep_ms']:.1f}, per due case x{b['per_due_ms'] / a['per_due_ms']:.2f}, "
              f"index query x{b['query_ms'] / a['query_ms']:.1f}")
        print(f"sweep / its index query: {a['sweep_ms'] / a['query_ms']:.0f}x at {a['cases']:,}, "
              f"{b['sweep_ms'] / b['query_ms']:.0f}x at {b['cases']:,}")
