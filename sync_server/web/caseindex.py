"""The caseload index: every case's filter values as bitmaps, kept in memory by the web.

Why: the caseload page filters 200,000 cases on ten dimensions and shows, beside each
filter option, how many cases it would give **with the other filters applied**. In SQL
that is one ``GROUP BY`` per dimension over the filtered set, and the replica's ``cases``
rows are wide (each carries its fold state), so a filter without an index reads the
whole table. Here each (dimension, value) is a Python ``int`` used as a bitmap with one
bit per case (200,000 cases: 25 KB); a filter is an OR of its values' bitmaps, the
matching set the AND of the filters, and a facet count ``(bitmap & others).bit_count()``:
a few microseconds each, all in C.

Positions: each case gets a position (its bit) the first time it is seen; ``ids`` maps
back. Sort orders are lists of positions, re-sorted when a sort key of some case changed.

Freshness (``refresh``, called at the start of every caseload request, inside one read
transaction so the counts and the rows agree):

* cases with ops past the op watermark (``ops.seq``): their rows are read again; every
  change to ``cases``, ``parties`` and ``leader_assignments`` comes from ops;
* their ``case_status`` rows are read again for a minute after (the sweep that runs after
  a merge writes them just after the merge commits);
* every ``case_status`` row is read again when the sweep has finished a pass
  (``server_meta.sweep_last_report`` changed): the clock alone changes colours;
* the jurisdiction (``nodes``) changed: everything is built again.

The index holds no personal data: codes, enum values, leaders' names, dates, case numbers.
"""

from __future__ import annotations

import bisect
import re
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schema.enums import COLOUR_ORDER

# The filter dimensions, in the order the page shows them.
DIMS: tuple[str, ...] = (
    "township", "village", "state", "category", "subject", "level", "colour", "overdue",
    "awaiting", "backlog", "leader", "conflicts", "voided",
)
BOOL_DIMS = frozenset({"overdue", "awaiting", "backlog", "conflicts", "voided"})
SORTS: tuple[str, ...] = ("received", "due", "colour", "case_no", "updated")
RECHECK_S = 60.0
MAX_MOVES = 2000  # sort-key changes in one refresh moved in place; beyond: sort again when asked
MANY_VALUES = 64  # a dimension with more values is counted by walking its cases (leaders)
EXTRACT_MAX = 20_000  # matches taken out and sorted directly when no sort order is built yet  # how long a case's status row is read again after its ops changed
CHUNK = 500

_NONZERO = re.compile(rb"[^\x00]")


def _ms(text: Any) -> int:
    if not text:
        return 0
    try:
        return int(datetime.fromisoformat(str(text)).timestamp() * 1000)
    except ValueError:
        return 0


def bits_of(positions: Iterable[int], n: int) -> int:
    """A bitmap with the given positions set."""
    buf = bytearray((n + 7) // 8)
    for p in positions:
        buf[p >> 3] |= 1 << (p & 7)
    return int.from_bytes(buf, "little")


def positions_of(mask: int, n: int) -> list[int]:
    """The set positions of a bitmap, ascending (scans for non-zero bytes in C)."""
    data = mask.to_bytes((n + 7) // 8 or 1, "little")
    out = []
    for m in _NONZERO.finditer(data):
        i = m.start()
        b = data[i]
        base = i << 3
        for k in range(8):
            if b >> k & 1:
                out.append(base + k)
    return out


@dataclass
class Nodes:
    """The jurisdiction as the index needs it: each code's township and village."""

    rows: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)  # code -> name, level, parent

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> Nodes:
        return cls({r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT code, name, level, parent FROM nodes")})

    def name(self, code: str | None) -> str:
        if not code:
            return ""
        row = self.rows.get(code)
        return row[0] if row else code

    def level(self, code: str | None) -> str | None:
        row = self.rows.get(code or "")
        return row[1] if row else None

    def place(self, code: str | None) -> tuple[str, str]:
        """(township, village) of a node: a grid counts under its village; a township's own
        cases have no village; the county's have neither."""
        township = village = ""
        seen = 0
        cur = code
        while cur and seen < 8:
            row = self.rows.get(cur)
            if row is None:
                break
            level = row[1]
            if level == "village" and not village:
                village = cur
            elif level == "township":
                township = cur
                break
            cur = row[2]
            seen += 1
        return township, village

    def children(self, code: str, level: str) -> list[str]:
        return sorted(c for c, (_, lv, parent) in self.rows.items() if parent == code and lv == level)

    def of_level(self, level: str) -> list[str]:
        return sorted(c for c, (_, lv, _) in self.rows.items() if lv == level)

    def signature(self) -> tuple[tuple[str, str, str | None], ...]:
        return tuple(sorted((c, lv, p) for c, (_, lv, p) in self.rows.items()))


CASE_SQL = (
    "SELECT c.id, c.origin_node, c.state, c.category, c.subject, c.level, c.voided, c.open_conflicts, "
    "c.received_at, c.case_no, c.updated_stamp, c.created_stamp FROM cases c"
)
STATUS_SQL = "SELECT case_id, colour, overdue, awaiting_sync, backlog, next_due FROM case_status"
LEADER_SQL = "SELECT case_id, leader FROM leader_assignments WHERE voided=0 AND ended_at IS NULL"


@dataclass
class Query:
    """What a caseload request asks: one value per filter (absent: any), a search, a sort."""

    filters: dict[str, str] = field(default_factory=dict)
    search_positions: list[int] | None = None  # None: no search
    sort: str = "received"

    def key(self) -> tuple[Any, ...]:
        return (tuple(sorted(self.filters.items())), self.sort)


@dataclass
class Result:
    """What the index answers: the total, the page's case ids, the counts per filter option."""

    total: int
    ids: list[str]
    counts: dict[str, dict[str, int]]


class CaseIndex:
    """The caseload of one server in memory, as bitmaps (see the module's docstring)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.built = False
        self.n = 0
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.vals: dict[str, list[Any]] = {d: [] for d in DIMS}
        self.bits: dict[str, dict[str, int]] = {d: {} for d in DIMS}
        self.sortkeys: dict[str, list[Any]] = {s: [] for s in SORTS}
        self.orders: dict[str, list[tuple[Any, int]]] = {}  # sort -> [(key, position)], sorted
        self._moves: dict[str, int] = {}
        self._some: dict[str, int] = {}  # per many-valued dimension: the cases with a value
        self.present = 0  # bitmap of positions that hold a case
        self.nodes = Nodes()
        self.seq_mark = 0
        self.sweep_mark: str | None = None
        self.nodes_sig: tuple[Any, ...] | None = None
        self.recheck: dict[str, float] = {}
        self.stats: dict[str, float] = {"builds": 0, "build_s": 0.0, "updates": 0, "status_reloads": 0}

    # ---- keeping it fresh ----

    def refresh(self, conn: sqlite3.Connection) -> None:
        """Bring the index up to what ``conn`` sees (call inside the request's read transaction)."""
        with self.lock:
            top = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ops").fetchone()[0])
            row = conn.execute("SELECT value FROM server_meta WHERE key='sweep_last_report'").fetchone()
            sweep_mark = row[0] if row else None
            nodes = Nodes.load(conn)
            sig = nodes.signature()
            if not self.built or sig != self.nodes_sig or top < self.seq_mark:
                self._build(conn, nodes, sig, top, sweep_mark)
                return
            self.nodes = nodes  # names may change without the tree changing
            now = self.clock()
            self._moves = {}
            changed: set[str] = set()
            if top > self.seq_mark:
                # by the primary key's range (DISTINCT would send SQLite through a whole index)
                changed = {r[0] for r in conn.execute("SELECT case_id FROM ops WHERE seq > ?", (self.seq_mark,))}
                for cid in changed:
                    self.recheck[cid] = now + RECHECK_S
            self.recheck = {c: t for c, t in self.recheck.items() if t > now}
            status_all = sweep_mark != self.sweep_mark
            if changed:
                self._update_cases(conn, sorted(changed))
            if status_all:
                self._update_status(conn, None)
            elif self.recheck:
                self._update_status(conn, sorted(self.recheck))
            self.seq_mark = top
            self.sweep_mark = sweep_mark

    def _build(self, conn: sqlite3.Connection, nodes: Nodes, sig: tuple[Any, ...], top: int,
               sweep_mark: str | None) -> None:
        t0 = time.perf_counter()
        self.nodes = nodes
        self.nodes_sig = sig
        self.ids = []
        self.pos = {}
        self.vals = {d: [] for d in DIMS}
        self.sortkeys = {s: [] for s in SORTS}
        status = {r[0]: r[1:] for r in conn.execute(STATUS_SQL)}
        leaders: dict[str, list[str]] = defaultdict(list)
        for case_id, leader in conn.execute(LEADER_SQL):
            leaders[case_id].append(leader or "")
        groups: dict[str, dict[str, list[int]]] = {d: defaultdict(list) for d in DIMS}
        for row in conn.execute(CASE_SQL):
            p = len(self.ids)
            self.ids.append(row[0])
            self.pos[row[0]] = p
            values, keys = self._row_values(row, status.get(row[0]), leaders.get(row[0]))
            for d in DIMS:
                v = values[d]
                self.vals[d].append(v)
                if d == "leader":
                    for item in v:
                        groups[d][item].append(p)
                else:
                    groups[d][v].append(p)
            for s in SORTS:
                self.sortkeys[s].append(keys[s])
        self.n = len(self.ids)
        self.bits = {d: {v: bits_of(ps, self.n) for v, ps in groups[d].items()} for d in DIMS}
        self._some = {}
        self.present = (1 << self.n) - 1
        self.orders = {}
        self.recheck = {}
        self.seq_mark = top
        self.sweep_mark = sweep_mark
        self.built = True
        self.stats["builds"] += 1
        self.stats["build_s"] = time.perf_counter() - t0

    def _row_values(self, row: Sequence[Any], st: Sequence[Any] | None,
                    leaders: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        (_cid, origin, state, category, subject, level, voided, conflicts, received, case_no,
         updated, created) = row
        township, village = self.nodes.place(origin)
        colour, overdue, awaiting, backlog, next_due = st if st is not None else ("green", 0, 0, 0, None)
        colour = colour or "green"
        values = {
            "township": township, "village": village, "state": state or "", "category": category or "",
            "subject": subject or "", "level": level or "", "colour": colour,
            "overdue": "1" if overdue else "0", "awaiting": "1" if awaiting else "0",
            "backlog": "1" if backlog else "0",
            "leader": tuple(sorted(set(leaders))) if leaders else ("",),
            "conflicts": "1" if conflicts else "0", "voided": "1" if voided else "0",
        }
        keys = {
            "received": -_ms(received),
            "due": (0, next_due) if next_due else (1, ""),
            "colour": (-COLOUR_ORDER.get(colour, 0), next_due or "~"),
            "case_no": case_no or "",
            "updated": -_stamp_ms(updated or created),
        }
        return values, keys

    def _set(self, p: int, values: Mapping[str, Any], keys: Mapping[str, Any]) -> None:
        for d in DIMS:
            old = self.vals[d][p]
            new = values[d]
            if old == new:
                continue
            bit = 1 << p
            table = self.bits[d]
            olds = () if old is None else old if d == "leader" else (old,)
            news = new if d == "leader" else (new,)
            for v in olds:
                if v not in news and v in table:
                    table[v] &= ~bit
                    if not table[v]:
                        del table[v]
            for v in news:
                if v not in olds:
                    table[v] = table.get(v, 0) | bit
            self.vals[d][p] = new
            self._some.pop(d, None)
        for s in SORTS:
            old_key = self.sortkeys[s][p]
            if old_key != keys[s]:
                self.sortkeys[s][p] = keys[s]
                order = self.orders.get(s)
                if order is not None:
                    self._moves[s] = self._moves.get(s, 0) + 1
                    if self._moves[s] > MAX_MOVES:  # many changed: sort again when next asked
                        self.orders.pop(s, None)
                    else:  # a few: move the case within the sorted order
                        i = bisect.bisect_left(order, (old_key, p))
                        if i < len(order) and order[i] == (old_key, p):
                            del order[i]
                        bisect.insort(order, (keys[s], p))

    def _grow(self, case_id: str) -> int:
        p = self.n
        self.ids.append(case_id)
        self.pos[case_id] = p
        for d in DIMS:
            self.vals[d].append(None)
        for s in SORTS:
            self.sortkeys[s].append(None)
        self.n += 1
        self.present |= 1 << p
        self.orders.clear()  # a new case: sort again when next asked
        return p

    def _update_cases(self, conn: sqlite3.Connection, case_ids: list[str]) -> None:
        self.stats["updates"] += 1
        for i in range(0, len(case_ids), CHUNK):
            chunk = case_ids[i : i + CHUNK]
            marks = ", ".join("?" * len(chunk))
            status = {r[0]: r[1:] for r in conn.execute(f"{STATUS_SQL} WHERE case_id IN ({marks})", chunk)}
            leaders: dict[str, list[str]] = defaultdict(list)
            for case_id, leader in conn.execute(f"{LEADER_SQL} AND case_id IN ({marks})", chunk):
                leaders[case_id].append(leader or "")
            for row in conn.execute(f"{CASE_SQL} WHERE c.id IN ({marks})", chunk):
                p = self.pos.get(row[0])
                if p is None:
                    p = self._grow(row[0])
                values, keys = self._row_values(row, status.get(row[0]), leaders.get(row[0]))
                self._set(p, values, keys)

    def _update_status(self, conn: sqlite3.Connection, case_ids: list[str] | None) -> None:
        """Read case_status rows again (all of them when ``case_ids`` is None)."""
        if case_ids is None:
            self.stats["status_reloads"] += 1
            rows: Iterable[Sequence[Any]] = conn.execute(STATUS_SQL)
            seen: set[int] = set()
            for r in rows:
                p = self.pos.get(r[0])
                if p is not None:
                    seen.add(p)
                    self._set_status(p, r[1:])
            for p in range(self.n):  # a status row removed (never by the sweep, but a restore might)
                if p not in seen and self.vals["colour"][p] != "green":
                    self._set_status(p, None)
            return
        for i in range(0, len(case_ids), CHUNK):
            chunk = case_ids[i : i + CHUNK]
            marks = ", ".join("?" * len(chunk))
            for r in conn.execute(f"{STATUS_SQL} WHERE case_id IN ({marks})", chunk):
                p = self.pos.get(r[0])
                if p is not None:
                    self._set_status(p, r[1:])

    def _set_status(self, p: int, st: Sequence[Any] | None) -> None:
        colour, overdue, awaiting, backlog, next_due = st if st is not None else ("green", 0, 0, 0, None)
        colour = colour or "green"
        values = {d: self.vals[d][p] for d in DIMS}
        values.update(colour=colour, overdue="1" if overdue else "0", awaiting="1" if awaiting else "0",
                      backlog="1" if backlog else "0")
        keys = {s: self.sortkeys[s][p] for s in SORTS}
        keys.update(due=(0, next_due) if next_due else (1, ""),
                    colour=(-COLOUR_ORDER.get(colour, 0), next_due or "~"))
        self._set(p, values, keys)

    # ---- answering ----

    def mask(self, dim: str, value: str) -> int:
        return self.bits[dim].get(value, 0)

    def _filter_masks(self, q: Query) -> dict[str, int]:
        masks = {d: self.mask(d, v) for d, v in q.filters.items() if d in DIMS}
        if "voided" not in masks:
            masks["voided"] = self.bits["voided"].get("0", 0)  # voided cases only when asked for
        if q.search_positions is not None:
            masks["_search"] = bits_of(q.search_positions, self.n)
        return masks

    def select(self, q: Query, *, offset: int = 0, limit: int = 50, facets: bool = True) -> Result:
        """The total, the case ids of one page, and the counts per filter option."""
        with self.lock:
            masks = self._filter_masks(q)
            full = self.present
            for m in masks.values():
                full &= m
            total = full.bit_count()
            counts: dict[str, dict[str, int]] = {}
            if facets:
                for d in DIMS:
                    others = self.present
                    for k, m in masks.items():
                        if k != d:
                            others &= m
                    if len(self.bits[d]) > MANY_VALUES:
                        counts[d] = self._count_many(d, others)
                    else:
                        counts[d] = {v: c for v, b in self.bits[d].items() if (c := (b & others).bit_count())}
                    if d == "voided":  # its "any" option is the default: voided cases hidden
                        others &= self.bits["voided"].get("0", 0)
                    counts[d]["*"] = others.bit_count()
            ids = [self.ids[p] for p in self._page(full, total, q.sort, offset, limit)]
            return Result(total, ids, counts)

    def _count_many(self, d: str, others: int) -> dict[str, int]:
        """Counts for a dimension with many values (leaders): walk the cases that have any
        value but the empty one, instead of one AND per value."""
        some = self._some.get(d)
        if some is None:
            some = 0
            for v, b in self.bits[d].items():
                if v:
                    some |= b
            self._some[d] = some
        counts: dict[str, int] = {}
        vals = self.vals[d]
        for p in positions_of(others & some, self.n):
            for v in vals[p] if d == "leader" else (vals[p],):
                if v:
                    counts[v] = counts.get(v, 0) + 1
        empty = (self.bits[d].get("", 0) & others).bit_count()
        if empty:
            counts[""] = empty
        return counts

    def all_ids(self, q: Query) -> list[str]:
        """Every matching case id in the sort order (exports)."""
        with self.lock:
            masks = self._filter_masks(q)
            full = self.present
            for m in masks.values():
                full &= m
            return [self.ids[p] for p in self._page(full, full.bit_count(), q.sort, 0, None)]

    def _order(self, sort: str) -> list[tuple[Any, int]]:
        order = self.orders.get(sort)
        if order is None:
            keys = self.sortkeys[sort]
            order = sorted(zip(keys, range(self.n), strict=True))
            self.orders[sort] = order
        return order

    def _page(self, mask: int, total: int, sort: str, offset: int, limit: int | None) -> list[int]:
        if total == 0 or offset >= total:
            return []
        want = total - offset if limit is None else min(limit, total - offset)
        if sort not in SORTS:
            sort = "received"
        keys = self.sortkeys[sort]
        walk = (offset + want) * self.n / total  # how far down the sort order the page lies
        if walk > total and not (total > EXTRACT_MAX and sort not in self.orders):
            ps = positions_of(mask, self.n)  # few: take them out and sort them
            ps.sort(key=lambda p: (keys[p], p))
            return ps[offset : offset + want]
        data = mask.to_bytes((self.n + 7) // 8, "little")  # many: walk the sort order
        out: list[int] = []
        skip = offset
        for _key, p in self._order(sort):
            if data[p >> 3] >> (p & 7) & 1:
                if skip:
                    skip -= 1
                    continue
                out.append(p)
                if len(out) >= want:
                    break
        return out

    # ---- what the board (一图) counts ----

    def count(self, **filters: str) -> int:
        with self.lock:
            m = self.present
            for d, v in filters.items():
                m &= self.mask(d, v)
            return m.bit_count()

    def values(self, dim: str) -> list[str]:
        with self.lock:
            return sorted(self.bits[dim])


def _stamp_ms(stamp: str | None) -> int:
    """The wall milliseconds of an HLC stamp (``{ms:018d}.{counter}.{node}``)."""
    try:
        return int(stamp[:18]) if stamp else 0
    except ValueError:
        return 0
