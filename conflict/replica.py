"""The replica: applies ops to a SQLite database through the pure fold.

The one module of ``conflict/`` that does I/O (``conflict/README.md``). Both the field
client and the county server use it, so they cannot fold differently. It holds no merge
rule of its own: every decision is ``conflict.fold``'s.

Tables (``docs/oplog.md``):
  ``ops``        the op log, the truth; ``seq`` is this replica's arrival order
  ``cases``, ``parties``, ``visits``, ... one per entity type: a cache of the fold
  ``conflicts``  concurrent edits and refused transitions, open or resolved
  ``meta``       format version

``apply`` validates every op first; if one is bad nothing is written (``OpsRejected``).
Then, in one transaction: new ops go into the log (a repeat is counted and ignored), and
each touched entity is folded: resumed from its stored state when the new ops sort after
everything folded so far, folded again from its whole op log when one sorts earlier
(a late op re-folds only its own entity).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from conflict.digest import bucket_digests, op_digest
from conflict.errors import OpIdReused, ReplicaBusy, ReplicaDamaged, ReplicaError
from conflict.fold import EntityFold, fold, sort_key
from schema.entities import CASE_LIFECYCLE_COLUMNS, ENTITIES, EntitySpec
from schema.ops import Op, canonical_json
from schema.validation import parse_ops

REPLICA_FORMAT = 1
# The case fold's generation: "2" since the lifecycle keeps ``decided_level`` (a replica
# opened with an older one folds its cases again once, ``Replica._refresh_case_folds``).
CASE_FOLDS = "2"
CHUNK = 500  # ids per IN (...) query
OP_COLUMNS = (
    "op_id", "stamp", "device", "author", "entity", "entity_id", "case_id",
    "kind", "vals", "base", "occurred_at", "schema_version",
)
CONFLICT_COLUMNS = (
    "id", "entity", "entity_id", "case_id", "field", "kind", "op_ids",
    "status", "resolved_by", "reason", "opened_stamp",
)
INT_LIFECYCLE = ("extended_days", "reopened")


def entity_columns(spec: EntitySpec) -> dict[str, type]:
    """The columns of an entity's table, in order, with their SQLite affinity."""
    cols: dict[str, type] = {"id": str, "case_id": str}
    for f in spec.fields:
        if not f.create_only:
            cols[f.name] = int if f.kind in ("int", "bool") else str
    if spec.name == "case":
        for c in CASE_LIFECYCLE_COLUMNS:
            cols[c] = int if c in INT_LIFECYCLE else str
    cols.update(
        voided=int, void_reason=str, created_stamp=str, updated_stamp=str,
        open_conflicts=int, extra=str, fold=str,
    )
    return cols


TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    spec.table: tuple(entity_columns(spec)) for spec in ENTITIES.values()
}


def translate_sqlite(exc: sqlite3.Error, path: str) -> ReplicaError:
    """The one place where sqlite3 exceptions become ReplicaErrors, with a sentence for people."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return ReplicaDamaged(
            f"数据库文件 {path} 已损坏或不是民情数据库，未做任何更改 (the database file {path} is damaged "
            f"or is not a Minqing replica; it has not been changed). 请从备份恢复或联系 IT.",
            details={"path": path, "sqlite": text},
        )
    if "locked" in text or "busy" in text:
        return ReplicaBusy(
            f"数据库 {path} 正被其他程序使用，请稍后再试 (in use by another program; try again)",
            details={"path": path, "sqlite": text},
        )
    return ReplicaError(f"数据库出错 (database error on {path}): {text}", details={"path": path, "sqlite": text})


def op_row(op: Op) -> tuple[Any, ...]:
    return (
        op.op_id, op.stamp, op.device, op.author, op.entity, op.entity_id, op.case_id,
        op.kind, canonical_json(op.values), canonical_json(op.base), op.occurred_at,
        op.schema_version,
    )


def row_to_op(row: Sequence[Any]) -> Op:
    """An Op from an ``ops`` row selected as ``OP_COLUMNS``."""
    return Op(
        op_id=row[0], stamp=row[1], device=row[2], author=row[3], entity=row[4],
        entity_id=row[5], case_id=row[6], kind=row[7], values=json.loads(row[8]),
        base=json.loads(row[9]), occurred_at=row[10], schema_version=row[11],
    )


def _chunks(items: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


@dataclass
class ApplyResult:
    """What one ``apply`` did."""

    applied: list[str] = field(default_factory=list)  # new op ids
    duplicates: int = 0
    entities: set[tuple[str, str]] = field(default_factory=set)
    cases: set[str] = field(default_factory=set)
    refolded: int = 0  # entities folded again from their whole log
    conflicts_opened: list[str] = field(default_factory=list)
    # with ``set_aside_reused``: ops whose id is already stored (or used earlier in the
    # batch) with other content, left out instead of refusing the batch (``op.id_reused``)
    reused: list[Op] = field(default_factory=list)


class Replica:
    """A SQLite replica: op log, materialised tables, conflicts."""

    def __init__(self, path: str | Path, *, create: bool = True, synchronous: str = "FULL") -> None:
        self.path = str(path)
        if not create and not Path(self.path).exists():
            raise ReplicaError(f"no replica at {self.path}", code="replica.missing")
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise translate_sqlite(exc, self.path) from exc
        try:
            self.conn.execute("PRAGMA busy_timeout=5000")
            self._prepare(create, synchronous)
            self._refresh_case_folds()
        except sqlite3.Error as exc:
            self.conn.close()
            raise translate_sqlite(exc, self.path) from exc
        except ReplicaError:
            self.conn.close()
            raise
        self.db = sqlite_utils.Database(self.conn)

    # ---- set-up ----

    def _prepare(self, create: bool, synchronous: str) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            try:
                row = self.conn.execute("SELECT value FROM meta WHERE key='replica_format'").fetchone()
            except sqlite3.OperationalError:
                row = None
            if row is None or int(row[0]) != REPLICA_FORMAT:
                raise ReplicaDamaged(
                    f"{self.path} has replica format {row and row[0]}, this program reads "
                    f"{REPLICA_FORMAT}; it has not been changed",
                    details={"path": self.path},
                )
        elif tables - {"sqlite_sequence"}:
            raise ReplicaDamaged(
                f"{self.path} is a database but not a Minqing replica; refusing to touch it",
                details={"path": self.path, "tables": sorted(tables)[:20]},
            )
        elif not create:
            raise ReplicaError(f"no replica at {self.path}", code="replica.missing")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA foreign_keys=OFF")
        if "meta" not in tables:
            with self._tx():
                self._create_schema()

    def _refresh_case_folds(self) -> None:
        """Fold again, once, the cases whose stored state predates ``decided_level``.

        The fold of such a case would resume from a state without it (``EntityFold.can_append``
        refolds it on its next op anyway), but until then the stored row differs from what a
        rebuild from the ops gives, and ``audit verify`` would call an upgraded replica
        tampered. Marked done in ``meta`` (``case_folds``), so later opens cost one lookup.
        """
        row = self.conn.execute("SELECT value FROM meta WHERE key='case_folds'").fetchone()
        if row is not None and row[0] == CASE_FOLDS:
            return
        table = ENTITIES["case"].table
        try:
            self._refold_cases_without_decided_level(table)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):  # a read-only copy is read as it is
                raise

    def _refold_cases_without_decided_level(self, table: str) -> None:
        with self._tx():
            ids = [r[0] for r in self.conn.execute(
                f"SELECT id FROM [{table}] WHERE json_type(fold, '$.life') = 'object' "
                "AND json_type(fold, '$.life.decided_level') IS NULL")]
            for chunk in _chunks(ids):
                self._write_folds([(fold("case", cid, self.ops_for_entity("case", cid)), True, self._conflict_ids(cid))
                                   for cid in chunk])
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('case_folds', ?)", (CASE_FOLDS,))

    def _create_schema(self) -> None:
        db = sqlite_utils.Database(self.conn)
        db.table("meta").create({"key": str, "value": str}, pk="key")
        db.table("meta").insert({"key": "replica_format", "value": str(REPLICA_FORMAT)})
        db.table("meta").insert({"key": "case_folds", "value": CASE_FOLDS})
        db.table("ops").create(
            {
                "seq": int, "op_id": str, "stamp": str, "device": str, "author": str,
                "entity": str, "entity_id": str, "case_id": str, "kind": str, "vals": str,
                "base": str, "occurred_at": str, "schema_version": int,
            },
            pk="seq",
            not_null={"op_id", "stamp", "entity", "entity_id", "case_id", "kind"},
        )
        db.table("ops").create_index(["op_id"], unique=True)
        db.table("ops").create_index(["entity_id", "stamp"])
        db.table("ops").create_index(["case_id", "stamp"])
        self._create_fold_tables(db)

    def _create_fold_tables(self, db: sqlite_utils.Database) -> None:
        for spec in ENTITIES.values():
            db.table(spec.table).create(entity_columns(spec), pk="id")
            if spec.name == "case":
                db.table(spec.table).create_index(["state"])
                db.table(spec.table).create_index(["level", "node"])
                db.table(spec.table).create_index(["origin_node"])
            else:
                db.table(spec.table).create_index(["case_id"])
        db.table("conflicts").create(
            {c: str for c in CONFLICT_COLUMNS}, pk="id", not_null={"entity_id", "status"}
        )
        db.table("conflicts").create_index(["case_id"])
        db.table("conflicts").create_index(["status"])
        db.table("conflicts").create_index(["entity_id"])

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction for callers that add their own tables' rows to an apply."""
        try:
            with self._tx():
                yield
        except sqlite3.Error as exc:
            raise translate_sqlite(exc, self.path) from exc

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- applying ops ----

    def apply(
        self, ops: Iterable[Op | dict[str, Any]], *, allow_sealed: bool = False
    ) -> ApplyResult:
        """Validate and apply ops in one transaction; a bad op rejects the whole batch."""
        parsed = parse_ops(list(ops), allow_sealed=allow_sealed)
        try:
            with self._tx():
                return self.apply_in_transaction(parsed)
        except sqlite3.Error as exc:
            raise translate_sqlite(exc, self.path) from exc

    def apply_in_transaction(self, parsed: Sequence[Op], *, set_aside_reused: bool = False) -> ApplyResult:
        """Apply already validated ops inside a transaction the caller holds.

        An op id already stored, or used earlier in ``parsed``, with other content refuses
        the batch (``OpIdReused``); with ``set_aside_reused`` that op alone is left out and
        listed in ``result.reused`` (the server holds it, so it blocks nothing behind it).
        """
        result = ApplyResult()
        batch: dict[str, Op] = {}
        for op in parsed:
            prev = batch.get(op.op_id)
            if prev is not None:
                if prev.content_key() == op.content_key():
                    result.duplicates += 1
                elif set_aside_reused:
                    result.reused.append(op)
                else:
                    raise OpIdReused(f"op id {op.op_id} used twice with different content")
            else:
                batch[op.op_id] = op
        stored = self._stored_ops(list(batch))
        new: list[Op] = []
        for op in batch.values():
            old = stored.get(op.op_id)
            if old is None:
                new.append(op)
            elif old.content_key() != op.content_key():
                if set_aside_reused:
                    result.reused.append(op)
                    continue
                raise OpIdReused(
                    f"op id {op.op_id} is already stored with different content",
                    details={"op_id": op.op_id},
                )
            else:
                result.duplicates += 1
        if not new:
            return result
        groups: dict[tuple[str, str], list[Op]] = defaultdict(list)
        for op in new:
            groups[op.entity_key].append(op)
        prior_counts = self._op_counts([eid for _, eid in groups])
        self.conn.executemany(
            f"INSERT INTO ops ({', '.join(OP_COLUMNS)}) VALUES ({', '.join('?' * len(OP_COLUMNS))})",
            [op_row(op) for op in new],
        )
        states = self._load_states(list(groups))
        folded: list[tuple[EntityFold, bool, set[str]]] = []
        for key, ops in groups.items():
            entity, entity_id = key
            ops.sort(key=sort_key)
            state = states.get(key)
            if state is not None:
                f = EntityFold.from_state(entity, entity_id, state)
                before = {c["id"] for c in f.conflicts}
                if f.can_append(ops[0]):
                    for op in ops:
                        f.apply(op)
                    folded.append((f, False, before))
                    continue
            elif prior_counts.get(entity_id, 0) == 0:
                folded.append((fold(entity, entity_id, ops), False, set()))
                continue
            before = self._conflict_ids(entity_id)
            f = fold(entity, entity_id, self.ops_for_entity(entity, entity_id))
            folded.append((f, True, before))
            result.refolded += 1
        self._write_folds(folded)
        result.applied = [op.op_id for op in new]
        result.entities = set(groups)
        result.cases = {op.case_id for op in new}
        for f, _, before in folded:
            result.conflicts_opened.extend(
                c["id"] for c in f.conflicts if c["status"] == "open" and c["id"] not in before
            )
        return result

    def _stored_ops(self, op_ids: list[str]) -> dict[str, Op]:
        found: dict[str, Op] = {}
        for chunk in _chunks(op_ids):
            q = f"SELECT {', '.join(OP_COLUMNS)} FROM ops WHERE op_id IN ({', '.join('?' * len(chunk))})"
            for row in self.conn.execute(q, list(chunk)):
                found[row[0]] = row_to_op(row)
        return found

    def _op_counts(self, entity_ids: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for chunk in _chunks(entity_ids):
            q = (
                "SELECT entity_id, COUNT(*) FROM ops WHERE entity_id IN "
                f"({', '.join('?' * len(chunk))}) GROUP BY entity_id"
            )
            counts.update(self.conn.execute(q, list(chunk)).fetchall())
        return counts

    def _load_states(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        by_entity: dict[str, list[str]] = defaultdict(list)
        for entity, entity_id in keys:
            by_entity[entity].append(entity_id)
        states: dict[tuple[str, str], dict[str, Any]] = {}
        for entity, ids in by_entity.items():
            table = ENTITIES[entity].table
            for chunk in _chunks(ids):
                q = f"SELECT id, fold FROM [{table}] WHERE id IN ({', '.join('?' * len(chunk))})"
                for entity_id, text in self.conn.execute(q, list(chunk)):
                    states[(entity, entity_id)] = json.loads(text)
        return states

    def _conflict_ids(self, entity_id: str) -> set[str]:
        rows = self.conn.execute("SELECT id FROM conflicts WHERE entity_id=?", (entity_id,))
        return {r[0] for r in rows}

    def _write_folds(self, folded: Iterable[tuple[EntityFold, bool, set[str]]]) -> None:
        rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        gone: dict[str, list[tuple[str]]] = defaultdict(list)
        clear: list[tuple[str]] = []
        conflicts: list[tuple[Any, ...]] = []
        for f, refolded, before in folded:
            table = f.spec.table
            row = f.row()
            if row is None:
                gone[table].append((f.entity_id,))
            else:
                rows[table].append(tuple(row[c] for c in TABLE_COLUMNS[table]))
            if refolded and before:
                clear.append((f.entity_id,))
            conflicts.extend(
                tuple(c[k] for k in CONFLICT_COLUMNS) for c in f.conflict_rows()
            )
        for table, ids in gone.items():
            self.conn.executemany(f"DELETE FROM [{table}] WHERE id=?", ids)
        for table, values in rows.items():
            cols = TABLE_COLUMNS[table]
            self.conn.executemany(
                f"INSERT OR REPLACE INTO [{table}] ({', '.join(cols)}) "
                f"VALUES ({', '.join('?' * len(cols))})",
                values,
            )
        if clear:
            self.conn.executemany("DELETE FROM conflicts WHERE entity_id=?", clear)
        if conflicts:
            self.conn.executemany(
                f"INSERT OR REPLACE INTO conflicts ({', '.join(CONFLICT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(CONFLICT_COLUMNS))})",
                conflicts,
            )

    # ---- rebuilding from the op log ----

    def _fold_all(self) -> Iterator[EntityFold]:
        cur = self.conn.execute(
            f"SELECT {', '.join(OP_COLUMNS)} FROM ops ORDER BY entity, entity_id, stamp, op_id"
        )
        key: tuple[str, str] | None = None
        current: EntityFold | None = None
        for row in cur:
            op = row_to_op(row)
            if op.entity_key != key:
                if current is not None:
                    yield current
                key = op.entity_key
                current = EntityFold(op.entity, op.entity_id)
            assert current is not None
            current.apply(op)
        if current is not None:
            yield current

    def rebuild(self) -> None:
        """Drop the materialised tables and fold the whole op log again."""
        try:
            with self._tx():
                for spec in ENTITIES.values():
                    self.conn.execute(f"DROP TABLE IF EXISTS [{spec.table}]")
                self.conn.execute("DROP TABLE IF EXISTS conflicts")
                self._create_fold_tables(sqlite_utils.Database(self.conn))
                batch: list[tuple[EntityFold, bool, set[str]]] = []
                for f in self._fold_all():
                    batch.append((f, False, set()))
                    if len(batch) >= 2000:
                        self._write_folds(batch)
                        batch = []
                self._write_folds(batch)
        except sqlite3.Error as exc:
            raise translate_sqlite(exc, self.path) from exc

    def verify_rebuild(self) -> list[str]:
        """Fold the op log in memory and compare with the tables; return the differences."""
        expected: dict[str, dict[str, tuple[Any, ...]]] = {t: {} for t in TABLE_COLUMNS}
        expected["conflicts"] = {}
        for f in self._fold_all():
            row = f.row()
            if row is not None:
                cols = TABLE_COLUMNS[f.spec.table]
                expected[f.spec.table][f.entity_id] = tuple(row[c] for c in cols)
            for c in f.conflict_rows():
                expected["conflicts"][c["id"]] = tuple(c[k] for k in CONFLICT_COLUMNS)
        differences: list[str] = []
        for table, rows in self.snapshot().items():
            live = {r[0]: r for r in rows}
            want = expected[table]
            for rid in sorted(set(live) | set(want)):
                if live.get(rid) != want.get(rid):
                    what = "missing" if rid not in live else "extra" if rid not in want else "differs"
                    differences.append(f"{table}/{rid}: {what}")
        return differences

    # ---- reading ----

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every materialised row, sorted: equal snapshots mean identical tables."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, cols in [*TABLE_COLUMNS.items(), ("conflicts", CONFLICT_COLUMNS)]:
            q = f"SELECT {', '.join(cols)} FROM [{table}] ORDER BY id"
            out[table] = [tuple(r) for r in self.conn.execute(q)]
        return out

    def op_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0])

    def op_pairs(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self.conn.execute("SELECT op_id, stamp FROM ops")]

    def digest(self) -> str:
        """The op-set digest (over op ids and stamps only)."""
        return op_digest(self.op_pairs())

    def bucket_digests(self) -> dict[int, str]:
        return bucket_digests(self.op_pairs())

    def ops(self, after_seq: int = 0, limit: int | None = None) -> list[tuple[int, Op]]:
        """Ops in this replica's arrival order, after ``after_seq``."""
        q = f"SELECT seq, {', '.join(OP_COLUMNS)} FROM ops WHERE seq > ? ORDER BY seq"
        params: list[Any] = [after_seq]
        if limit is not None:
            q += " LIMIT ?"
            params.append(limit)
        return [(r[0], row_to_op(r[1:])) for r in self.conn.execute(q, params)]

    def ops_for_entity(self, entity: str, entity_id: str) -> list[Op]:
        q = f"SELECT {', '.join(OP_COLUMNS)} FROM ops WHERE entity_id=? AND entity=? ORDER BY stamp, op_id"
        return [row_to_op(r) for r in self.conn.execute(q, (entity_id, entity))]

    def ops_for_case(self, case_id: str) -> list[Op]:
        q = f"SELECT {', '.join(OP_COLUMNS)} FROM ops WHERE case_id=? ORDER BY stamp, op_id"
        return [row_to_op(r) for r in self.conn.execute(q, (case_id,))]

    def has_op(self, op_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM ops WHERE op_id=?", (op_id,)).fetchone() is not None

    def max_stamp(self) -> str | None:
        row = self.conn.execute("SELECT MAX(stamp) FROM ops").fetchone()
        return row[0] if row else None

    def get(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        """The materialised row of one entity (set fields decoded), or None."""
        spec = ENTITIES[entity]
        cur = self.conn.execute(f"SELECT * FROM [{spec.table}] WHERE id=?", (entity_id,))
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([d[0] for d in cur.description], row, strict=True))
        for name in spec.set_fields:
            out[name] = json.loads(out[name]) if out[name] else []
        return out

    def fold_state(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            f"SELECT fold FROM [{ENTITIES[entity].table}] WHERE id=?", (entity_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def conflicts(self, *, status: str | None = None, case_id: str | None = None) -> list[dict[str, Any]]:
        q = f"SELECT {', '.join(CONFLICT_COLUMNS)} FROM conflicts WHERE 1=1"
        params: list[Any] = []
        if status is not None:
            q += " AND status=?"
            params.append(status)
        if case_id is not None:
            q += " AND case_id=?"
            params.append(case_id)
        rows = []
        for r in self.conn.execute(q + " ORDER BY opened_stamp, id", params):
            d = dict(zip(CONFLICT_COLUMNS, r, strict=True))
            d["op_ids"] = json.loads(d["op_ids"])
            rows.append(d)
        return rows
