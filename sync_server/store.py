"""The county server's storage: the replica plus the server's own tables, in one SQLite file.

One file so that appending an envelope to the ledger, merging its ops and recording the
device's contact happen in **one transaction** (docs/sync.md). Storage stays behind
this module and ``conflict.replica`` (DESIGN.md "Running it").

Server tables:
  ``nodes``          jurisdiction: code, name, level, parent
  ``devices``        enrolled laptops: keys, node, status, last contact, clock offset
  ``enroll_codes``   one-time enrollment tokens (hashes only)
  ``ledger``         every accepted envelope as received, hash-chained (sync_server.ledger)
  ``quarantine``     ops held back with a reason, releasable
  ``refusals``       every refused attempt, with its code
  ``device_cases``   which cases each device has been sent, at which cursor
  ``server_meta``    the server's HLC and settings
  ``case_status``    each case's obligations, colour and next due time, kept by the sweep
                     (sync_server.sweep; docs/deadlines.md); ``next_at_ms`` is the index
                     the sweep reads instead of scanning every case
  ``ledger_ops``     which replica ``ops.seq`` range each ledger entry merged (so an op's
                     receipt time is its entry's ``received_ms``)
  ``person_keys``    keyed hashes of parties' normalised ID numbers / name+phone, for
                     repeat and skip-level detection (never the raw number)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conflict.replica import Replica
from schema.rules import Rules, default_rules, default_rules_text, load_rules_file
from schema.stamp import Stamp, parse
from sync_server import keys as server_keys
from sync_server.errors import ConfigError

DB_FILE = "server.db"
RULES_FILE = "rules.toml"  # the county's deadline and warning rules (schema/county_rules.toml)

SERVER_TABLES = """
CREATE TABLE IF NOT EXISTS server_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS nodes (
  code TEXT PRIMARY KEY, name TEXT NOT NULL, level TEXT NOT NULL, parent TEXT);
CREATE INDEX IF NOT EXISTS nodes_parent ON nodes(parent);
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY, node TEXT NOT NULL, level TEXT NOT NULL, user TEXT,
  x25519 TEXT NOT NULL, ed25519 TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'active',
  enrolled_ms INTEGER, revoked_ms INTEGER, revoked_reason TEXT, app_version TEXT,
  last_contact_ms INTEGER, last_seq INTEGER NOT NULL DEFAULT 0,
  clock_offset_ms INTEGER, erase_sent_ms INTEGER, replaced_by TEXT, bundle_after INTEGER);
CREATE TABLE IF NOT EXISTS enroll_codes (
  token_hash TEXT PRIMARY KEY, node TEXT NOT NULL, user TEXT, created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL, used_ms INTEGER, used_by TEXT);
CREATE TABLE IF NOT EXISTS ledger (
  ledger_seq INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, kind TEXT NOT NULL,
  device TEXT NOT NULL, device_seq INTEGER NOT NULL, sha256 TEXT NOT NULL,
  prev_hash TEXT NOT NULL, hash TEXT NOT NULL, envelope BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_device_seq ON ledger(device, device_seq)
  WHERE kind = 'device';
CREATE TABLE IF NOT EXISTS quarantine (
  id INTEGER PRIMARY KEY, op_id TEXT, ledger_seq INTEGER, device TEXT, case_id TEXT,
  code TEXT NOT NULL, message TEXT NOT NULL, op TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'held',
  held_ms INTEGER NOT NULL, released_ms INTEGER, released_by TEXT);
CREATE INDEX IF NOT EXISTS quarantine_status ON quarantine(status, code);
CREATE INDEX IF NOT EXISTS quarantine_case ON quarantine(case_id);
CREATE TABLE IF NOT EXISTS refusals (
  id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, device TEXT, device_seq INTEGER,
  code TEXT NOT NULL, message TEXT NOT NULL, size INTEGER, carrier TEXT);
CREATE INDEX IF NOT EXISTS refusals_device ON refusals(device, at_ms);
CREATE TABLE IF NOT EXISTS device_cases (
  device_id TEXT NOT NULL, case_id TEXT NOT NULL, sent_cursor INTEGER NOT NULL,
  PRIMARY KEY (device_id, case_id));
CREATE TABLE IF NOT EXISTS case_status (
  case_id TEXT PRIMARY KEY, next_at_ms INTEGER, next_due TEXT, next_rule TEXT,
  colour TEXT NOT NULL DEFAULT 'green', overdue INTEGER NOT NULL DEFAULT 0,
  awaiting_sync INTEGER NOT NULL DEFAULT 0, backlog INTEGER NOT NULL DEFAULT 0,
  obligations TEXT NOT NULL DEFAULT '[]', flags TEXT NOT NULL DEFAULT '[]', evaluated_ms INTEGER,
  evaluated_seq INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS case_status_next ON case_status(next_at_ms) WHERE next_at_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS case_status_colour ON case_status(colour);
CREATE TABLE IF NOT EXISTS person_keys (key TEXT NOT NULL, case_id TEXT NOT NULL, party_id TEXT NOT NULL,
  PRIMARY KEY (key, case_id, party_id));
CREATE INDEX IF NOT EXISTS person_keys_case ON person_keys(case_id);
CREATE TABLE IF NOT EXISTS ledger_ops (ledger_seq INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_ops_first ON ledger_ops(first_seq);
CREATE TABLE IF NOT EXISTS op_flags (op_id TEXT NOT NULL, flag TEXT NOT NULL, at_ms INTEGER,
  PRIMARY KEY (op_id, flag));
"""


def now_ms() -> int:
    return int(time.time() * 1000)


class ServerStore:
    """The server's database and keys for one data folder."""

    def __init__(self, data_dir: str | Path, *, clock: Any = time.time) -> None:
        self.data_dir = Path(data_dir)
        if not (self.data_dir / DB_FILE).exists():
            raise ConfigError(
                f"{self.data_dir} 不是服务器数据目录，请先运行 sync-server init "
                f"(no server here; run sync-server init --data {self.data_dir})",
                code="server.not_initialised",
            )
        self.keys = server_keys.load(self.data_dir)
        self.replica = Replica(self.data_dir / DB_FILE, create=False, synchronous="FULL")
        self.conn = self.replica.conn
        self.conn.executescript(SERVER_TABLES)
        self.clock = clock

    @classmethod
    def init(cls, data_dir: str | Path, **kw: Any) -> ServerStore:
        data = Path(data_dir)
        if (data / DB_FILE).exists() or (data / server_keys.KEYFILE).exists():
            raise ConfigError(f"{data} 已经是服务器数据目录 (already a server data folder); 不会覆盖")
        data.mkdir(parents=True, exist_ok=True)
        server_keys.create(data)
        Replica(data / DB_FILE).close()
        rules_path = data / RULES_FILE
        if not rules_path.exists():
            rules_path.write_text(default_rules_text(), encoding="utf-8")
        return cls(data, **kw)

    def close(self) -> None:
        self.replica.close()

    def rules(self) -> Rules:
        """The county's rules (data folder's rules.toml, else the defaults); RulesInvalid if bad."""
        path = self.data_dir / RULES_FILE
        return load_rules_file(path) if path.exists() else default_rules()

    def max_op_seq(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ops").fetchone()[0])

    def note_merged(self, ledger_seq: int, before: int) -> None:
        """Record that ledger entry ``ledger_seq`` merged the ops after seq ``before`` (if any)."""
        after = self.max_op_seq()
        if after > before:
            self.conn.execute("INSERT OR REPLACE INTO ledger_ops(ledger_seq, first_seq, last_seq) VALUES (?, ?, ?)",
                              (ledger_seq, before + 1, after))

    def received_ms(self, case_id: str) -> dict[str, int]:
        """op id -> when the server received it (its ledger entry), for one case's ops."""
        q = ("SELECT o.op_id, (SELECT l.received_ms FROM ledger_ops lo JOIN ledger l ON l.ledger_seq = lo.ledger_seq "
             "WHERE lo.first_seq <= o.seq ORDER BY lo.first_seq DESC LIMIT 1) FROM ops o WHERE o.case_id = ?")
        return {r[0]: r[1] for r in self.conn.execute(q, (case_id,)) if r[1] is not None}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.replica.transaction():
            yield

    # ---- meta ----

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM server_meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO server_meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def hlc_last(self) -> Stamp | None:
        text = self.meta("hlc_last")
        return parse(text) if text else None

    # ---- jurisdiction ----

    def node(self, code: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT code, name, level, parent FROM nodes WHERE code=?", (code,)).fetchone()
        return dict(zip(("code", "name", "level", "parent"), row, strict=True)) if row else None

    def subtree(self, code: str) -> set[str]:
        rows = self.conn.execute(
            "WITH RECURSIVE t(code) AS (SELECT ? UNION SELECT n.code FROM nodes n JOIN t ON n.parent = t.code) "
            "SELECT code FROM t",
            (code,),
        )
        return {r[0] for r in rows}

    def ancestors(self, code: str) -> list[dict[str, Any]]:
        out = []
        seen = set()
        node = self.node(code)
        while node is not None and node["code"] not in seen:
            seen.add(node["code"])
            out.append(node)
            node = self.node(node["parent"]) if node["parent"] else None
        return out

    def nodes_list(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT code, name, level, parent FROM nodes ORDER BY code")
        return [dict(zip(("code", "name", "level", "parent"), r, strict=True)) for r in cur]

    # ---- devices ----

    def device(self, device_id: str) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM devices WHERE device_id=?", (device_id,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None

    def devices(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM devices ORDER BY node, device_id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    def log_refusal(
        self, code: str, message: str, *, device: str | None = None, device_seq: int | None = None,
        size: int | None = None, carrier: str | None = None,
    ) -> None:
        """Record a refused attempt (its own small transaction unless one is open)."""
        self.conn.execute(
            "INSERT INTO refusals(at_ms, device, device_seq, code, message, size, carrier) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.now_ms(), device, device_seq, code, message[:500], size, carrier),
        )

    def refusals(self, device: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT id, at_ms, device, device_seq, code, message, size, carrier FROM refusals"
        params: tuple[Any, ...] = ()
        if device:
            q += " WHERE device=?"
            params = (device,)
        cols = ("id", "at_ms", "device", "device_seq", "code", "message", "size", "carrier")
        return [dict(zip(cols, r, strict=True)) for r in self.conn.execute(q + " ORDER BY id", params)]

    # ---- quarantine ----

    def quarantined(
        self, status: str | None = "held", *, code: str | None = None, case_ids: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Held (or all) ops, optionally only those of one code and of some cases (indexed)."""
        q = ("SELECT id, op_id, ledger_seq, device, case_id, code, message, op, status, held_ms, "
             "released_ms, released_by FROM quarantine WHERE 1=1")
        params: list[Any] = []
        if status:
            q += " AND status=?"
            params.append(status)
        if code:
            q += " AND code=?"
            params.append(code)
        if case_ids is not None:
            ids = list(case_ids)
            if not ids:
                return []
            q += f" AND case_id IN ({', '.join('?' * len(ids))})"
            params.extend(ids)
        cols = ("id", "op_id", "ledger_seq", "device", "case_id", "code", "message", "op", "status",
                "held_ms", "released_ms", "released_by")
        rows = []
        for r in self.conn.execute(q + " ORDER BY id", params):
            d = dict(zip(cols, r, strict=True))
            d["op"] = json.loads(d["op"])
            rows.append(d)
        return rows

    def hold(self, items: Iterable[tuple[dict[str, Any], str, str]], ledger_seq: int | None, device: str) -> None:
        """Quarantine raw ops with (code, message)."""
        now = self.now_ms()
        self.conn.executemany(
            "INSERT INTO quarantine(op_id, ledger_seq, device, case_id, code, message, op, held_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    str(raw.get("op_id"))[:64] if isinstance(raw, dict) else None,
                    ledger_seq,
                    device,
                    str(raw.get("case_id"))[:64] if isinstance(raw, dict) else None,
                    code,
                    message[:500],
                    # whole: a cut text is no JSON (every reader of the quarantine failed on it),
                    # and a release merges the op as it came (its envelope is at most 64 MiB)
                    json.dumps(raw, ensure_ascii=False, default=str),
                    now,
                )
                for raw, code, message in items
            ],
        )
