"""Bench: apply a realistic op stream to a fresh replica, against plain SQLite inserts.

``run(n_ops)``:

1. generates ``n_ops`` ops (``bench.workload``) and puts them in arrival order, cut into
   batches of 500 (not timed);
2. times ``Replica.apply`` batch by batch on a fresh replica in a temporary directory
   (validation, op log, fold, materialised rows, conflicts; WAL, ``synchronous=FULL``);
3. times the baseline in the same run: a fresh SQLite file with the same pragmas and the
   same tables (the ``ops`` table and the entity tables, copied from the replica's own
   DDL, indexes included), ``executemany`` inserting the same rows: each batch's op rows
   (``conflict.replica.op_row``) plus the final entity rows the replica ended with (each
   row in the batch that delivered the entity's last op), one transaction per batch;
4. reports ops/s for both and the ratio replica / baseline against the 0.25 target.

The baseline's rows are prepared before its clock starts: it measures what SQLite costs
to store the same data, the replica's figure is everything ``apply`` does.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import workload
from conflict.replica import OP_COLUMNS, TABLE_COLUMNS, Replica, op_row
from schema.entities import ENTITIES
from schema.ops import Op
from schema.validation import parse_ops

TARGET = 0.25  # replica rate / baseline rate, from the issue
BATCH = 500
TABLE_ENTITY = {spec.table: name for name, spec in ENTITIES.items()}


def _progress(label: str, done: int, total: int, started: float) -> None:
    """A progress line on stderr: rewritten in place on a terminal, every 20% otherwise."""
    rate = done / max(time.perf_counter() - started, 1e-9)
    line = f"  {label}: {done:>7}/{total} ops  {rate:8.0f} ops/s"
    if sys.stderr.isatty():
        print("\r" + line, end="\n" if done >= total else "", file=sys.stderr, flush=True)
    elif done >= total or done * 5 // total != (done - BATCH * 10) * 5 // total:
        print(line, file=sys.stderr, flush=True)


def _apply_all(replica: Replica, arrived: Sequence[Sequence[Op]], n_ops: int,
               progress: bool) -> tuple[float, Counter[str]]:
    info: Counter[str] = Counter()
    done = 0
    t0 = time.perf_counter()
    for i, batch in enumerate(arrived):
        result = replica.apply(batch)
        info["refolded"] += result.refolded
        info["conflicts_opened"] += len(result.conflicts_opened)
        done += len(batch)
        if progress and (i % 10 == 9 or done == n_ops):
            _progress("replica ", done, n_ops, t0)
    return time.perf_counter() - t0, info


def _baseline_db(path: Path, replica: Replica) -> sqlite3.Connection:
    """A plain SQLite file with the replica's pragmas and the same ops and entity tables."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    tables = ("ops", *TABLE_COLUMNS)
    marks = ", ".join("?" * len(tables))
    ddl = replica.conn.execute(
        f"SELECT sql FROM sqlite_master WHERE tbl_name IN ({marks}) AND sql IS NOT NULL "
        "ORDER BY type = 'index', name",
        tables,
    ).fetchall()
    for (sql,) in ddl:
        conn.execute(sql)
    # the same shape: the columns the replica writes, in its order
    op_cols = [r[1] for r in conn.execute("PRAGMA table_info(ops)")]
    assert op_cols == ["seq", *OP_COLUMNS], op_cols
    for table, cols in TABLE_COLUMNS.items():
        got = [r[1] for r in conn.execute(f"PRAGMA table_info([{table}])")]
        assert tuple(got) == cols, (table, got)
    return conn


def _baseline_rows(replica: Replica, arrived: Sequence[Sequence[Op]]
                   ) -> tuple[list[list[tuple[Any, ...]]], list[dict[str, list[tuple[Any, ...]]]], int]:
    """Per batch: the op rows, and the final entity rows whose last op came in that batch."""
    last_batch: dict[tuple[str, str], int] = {}
    for i, batch in enumerate(arrived):
        for op in batch:
            last_batch[op.entity_key] = i
    op_rows = [[op_row(op) for op in batch] for batch in arrived]
    entity_rows: list[dict[str, list[tuple[Any, ...]]]] = [{} for _ in arrived]
    n_entity_rows = 0
    for table, cols in TABLE_COLUMNS.items():
        entity = TABLE_ENTITY[table]
        for row in replica.conn.execute(f"SELECT {', '.join(cols)} FROM [{table}] ORDER BY rowid"):
            entity_rows[last_batch[(entity, row[0])]].setdefault(table, []).append(tuple(row))
            n_entity_rows += 1
    return op_rows, entity_rows, n_entity_rows


def _insert_all(conn: sqlite3.Connection, op_rows: Sequence[Sequence[tuple[Any, ...]]],
                entity_rows: Sequence[dict[str, list[tuple[Any, ...]]]], n_ops: int,
                progress: bool) -> float:
    op_sql = f"INSERT INTO ops ({', '.join(OP_COLUMNS)}) VALUES ({', '.join('?' * len(OP_COLUMNS))})"
    table_sql = {
        t: f"INSERT INTO [{t}] ({', '.join(c)}) VALUES ({', '.join('?' * len(c))})"
        for t, c in TABLE_COLUMNS.items()
    }
    done = 0
    t0 = time.perf_counter()
    for i, (rows, by_table) in enumerate(zip(op_rows, entity_rows, strict=True)):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(op_sql, rows)
        for table, values in by_table.items():
            conn.executemany(table_sql[table], values)
        conn.execute("COMMIT")
        done += len(rows)
        if progress and (i % 10 == 9 or done == n_ops):
            _progress("baseline", done, n_ops, t0)
    return time.perf_counter() - t0


def _timed(label: str, fn: Callable[[], Any], progress: bool) -> tuple[Any, float]:
    if progress:
        print(f"  {label} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(n_ops: int = 100_000, *, seed: int = 1, batch_size: int = BATCH, repeat: int = 3,
        verify: bool = True, progress: bool = True, profile: int = 0,
        directory: str | None = None) -> dict[str, Any]:
    """Run the bench ``repeat`` times on the same ops; return the figures (``report`` prints).

    Each round uses fresh database files (in ``directory``, default the system temp dir);
    even rounds time the replica first, odd rounds the baseline first. The figures are
    medians; the ratio is the median of the rounds' ratios. ``profile`` > 0 runs the
    first round's replica step under cProfile and keeps its top ``profile`` entries by
    cumulative time in ``result["profile"]`` (that round then includes the profiler's
    overhead, and is left out of the medians when there are other rounds).
    """
    ops, gen_s = _timed(f"generating {n_ops} ops", lambda: workload.generate(n_ops, seed), progress)
    arrived = workload.batches(ops, batch_size, seed)
    rounds: list[dict[str, float]] = []
    first: dict[str, Any] = {}
    prof = cProfile.Profile() if profile else None
    for k in range(repeat):
        if progress:
            print(f"  round {k + 1}/{repeat}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="minqing-bench-", dir=directory) as tmp:
            times = _round(k, Path(tmp), arrived, n_ops, first, verify, progress,
                           prof if k == 0 else None)
        rounds.append(times)
    counted = [r for r in rounds if not r["profiled"]] or rounds
    replica_s = statistics.median(r["replica_s"] for r in counted)
    baseline_s = statistics.median(r["baseline_s"] for r in counted)
    ratio = statistics.median(r["ratio"] for r in counted)
    replica_cpu_s = statistics.median(r["replica_cpu_s"] for r in counted)
    baseline_cpu_s = statistics.median(r["baseline_cpu_s"] for r in counted)
    result: dict[str, Any] = {
        "ops": n_ops,
        "seed": seed,
        "batch_size": batch_size,
        "batches": len(arrived),
        "repeat": repeat,
        "rounds": rounds,
        "directory": directory or tempfile.gettempdir(),
        "generate_s": gen_s,
        "replica_s": replica_s,
        "replica_ops_per_s": n_ops / replica_s,
        "baseline_s": baseline_s,
        "baseline_ops_per_s": n_ops / baseline_s,
        "replica_cpu_s": replica_cpu_s,
        "baseline_cpu_s": baseline_cpu_s,
        "cpu_ratio": baseline_cpu_s / replica_cpu_s,
        "baseline_rows": n_ops + first["entity_rows_count"],
        "entity_rows": first["entity_rows_count"],
        "ratio": ratio,
        "target": TARGET,
        "meets_target": ratio >= TARGET,
        "validation_only_s": first["validation_only_s"],
        "refolded": first["refolded"],
        "conflicts_opened": first["conflicts_opened"],
        "conflicts": first["conflicts"],
        "mix": dict(workload.categories(ops)),
        "verify_differences": first["verify_differences"],
        "verify_s": first["verify_s"],
    }
    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(profile)
        result["profile"] = out.getvalue()
    return result


def _round(k: int, tmp: Path, arrived: Sequence[Sequence[Op]], n_ops: int,
           first: dict[str, Any], verify: bool, progress: bool,
           prof: cProfile.Profile | None) -> dict[str, float]:
    """One round on fresh files; round 0 also fills ``first`` (the baseline's rows...)."""
    times: dict[str, float] = {"profiled": float(prof is not None)}
    replica = Replica(tmp / "replica.db")
    base: sqlite3.Connection | None = None

    def replica_step() -> Counter[str]:
        c0 = time.process_time()
        times["replica_s"], info = _apply_all(replica, arrived, n_ops, progress)
        times["replica_cpu_s"] = time.process_time() - c0
        return info

    def baseline_step(conn: sqlite3.Connection) -> None:
        c0 = time.process_time()
        times["baseline_s"] = _insert_all(
            conn, first["op_rows"], first["entity_rows"], n_ops, progress)
        times["baseline_cpu_s"] = time.process_time() - c0

    try:
        if k == 0:
            if prof is not None:
                prof.enable()
            info = replica_step()
            if prof is not None:
                prof.disable()
            first.update(_first_round_facts(replica, arrived, info, verify, progress))
            base = _baseline_db(tmp / "baseline.db", replica)
            baseline_step(base)
        else:  # alternate which side goes first
            base = _baseline_db(tmp / "baseline.db", replica)
            if k % 2:
                baseline_step(base)
                replica_step()
            else:
                replica_step()
                baseline_step(base)
        assert base.execute("SELECT COUNT(*) FROM ops").fetchone()[0] == n_ops
        assert replica.op_count() == n_ops
    finally:
        if base is not None:
            base.close()
        replica.close()
    times["ratio"] = times["baseline_s"] / times["replica_s"]
    return times


def _first_round_facts(replica: Replica, arrived: Sequence[Sequence[Op]],
                       info: Counter[str], verify: bool, progress: bool) -> dict[str, Any]:
    """What the first round learns (untimed): the baseline's rows, conflicts, a verify."""
    op_rows, entity_rows, n_entity_rows = _baseline_rows(replica, arrived)
    conflicts = Counter(f"{c['kind']}.{c['status']}" for c in replica.conflicts())
    differences: list[str] | None = None
    verify_s = 0.0
    if verify:
        differences, verify_s = _timed("verify_rebuild", replica.verify_rebuild, progress)
    return {
        "op_rows": op_rows,
        "entity_rows": entity_rows,
        "entity_rows_count": n_entity_rows,
        "conflicts": dict(conflicts),
        "refolded": info["refolded"],
        "conflicts_opened": info["conflicts_opened"],
        "validation_only_s": _validation_only(arrived),
        "verify_differences": None if differences is None else len(differences),
        "verify_s": verify_s,
    }


def _validation_only(arrived: Sequence[Sequence[Op]]) -> float:
    """Time ``parse_ops`` alone over the same batches (what ``apply`` spends validating)."""
    t0 = time.perf_counter()
    for batch in arrived:
        parse_ops(list(batch))
    return time.perf_counter() - t0


def report(r: dict[str, Any], out: Any = None) -> None:
    """Print the figures as a small table."""
    w = (out or sys.stdout).write
    w(f"replica_apply: {r['ops']} ops in batches of {r['batch_size']} ({r['batches']} "
      f"transactions each), seed {r['seed']}, median of {len(r['rounds'])} round(s), "
      f"files in {r['directory']}\n")
    w(f"  {'':<24} {'ops':>8} {'seconds':>8} {'ops/s':>8}   {'cpu s':>7}\n")
    w(f"  {'replica  Replica.apply':<24} {r['ops']:>8} {r['replica_s']:>8.2f} "
      f"{r['replica_ops_per_s']:>8.0f}   {r['replica_cpu_s']:>7.2f}\n")
    w(f"  {'baseline executemany':<24} {r['ops']:>8} {r['baseline_s']:>8.2f} "
      f"{r['baseline_ops_per_s']:>8.0f}   {r['baseline_cpu_s']:>7.2f}\n")
    verdict = "meets" if r["meets_target"] else "BELOW"
    w(f"  ratio replica/baseline (ops/s): {r['ratio']:.3f}  ({verdict} the target {r['target']})"
      f"   [by cpu time: {r['cpu_ratio']:.3f}]\n")
    if len(r["rounds"]) > 1:
        each = "; ".join(
            f"{x['replica_s']:.2f} s / {x['baseline_s']:.2f} s = {x['ratio']:.3f}"
            + (" (profiled, not counted)" if x["profiled"] else "")
            for x in r["rounds"]
        )
        w(f"  rounds (replica / baseline = ratio): {each}\n")
    w(f"  baseline rows: {r['ops']} op rows + {r['entity_rows']} entity rows, same tables, "
      f"same indexes, same pragmas\n")
    w(f"  validation alone (parse_ops over the same batches, timed apart): "
      f"{r['validation_only_s']:.2f} s = {100 * r['validation_only_s'] / r['replica_s']:.0f}% "
      f"of the replica's time\n")
    conflicts = ", ".join(f"{k} {v}" for k, v in sorted(r["conflicts"].items()))
    w(f"  workload: {r['refolded']} entity refolds (ops arriving after later-stamped ops), "
      f"conflicts: {conflicts}\n")
    mix = ", ".join(f"{k} {100 * v / r['ops']:.1f}%" for k, v in
                    sorted(r["mix"].items(), key=lambda kv: -kv[1]))
    w(f"  mix: {mix}\n")
    if r["verify_differences"] is not None:
        state = "ok" if r["verify_differences"] == 0 else f"{r['verify_differences']} DIFFERENCES"
        w(f"  verify_rebuild after round 1: {state} ({r['verify_s']:.1f} s, not timed)\n")
    w(f"  generating the ops took {r['generate_s']:.1f} s (not timed)\n")
    if "profile" in r:
        w("\n" + r["profile"])
