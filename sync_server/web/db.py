"""The coordinator web's own tables in server.db, its indexes, and its per-thread connections.

Tables (created at first use, ``CREATE ... IF NOT EXISTS``):

  ``web_sessions``    one row per logged-in browser: SHA-256 of the cookie's token (the
                      token itself is never stored), the user, the CSRF token, times,
                      pending flash messages and short-lived "show" grants (JSON)
  ``login_failures``  failed logins by (username, client address): count and lock time
  ``access_log``      who saw what, when: every unmasked view of a confidential identity
                      (检举控告 reporter) or of ID numbers and phones, every export, every
                      login, logout, refusal and account change (docs/coordinator.md)

Indexes on the replica's and the server's tables that only the web needs are added here
too (``WEB_INDEXES``): the replica module stays free of the web's reading habits.

Connections: pages read through one ``ServerStore`` per waitress thread, kept open between
requests (opening the store costs more than most pages' queries); writes of the server's
own ops go through ``SyncService`` on that store in one transaction, like the sync API.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from sync_server.store import ServerStore

WEB_TABLES = """
CREATE TABLE IF NOT EXISTS web_sessions (
  token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL, created_ms INTEGER NOT NULL,
  seen_ms INTEGER NOT NULL, ip TEXT, flash TEXT NOT NULL DEFAULT '[]', grants TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions(username);
CREATE TABLE IF NOT EXISTS login_failures (
  username TEXT NOT NULL, ip TEXT NOT NULL, count INTEGER NOT NULL, first_ms INTEGER NOT NULL,
  last_ms INTEGER NOT NULL, locked_until_ms INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (username, ip));
CREATE TABLE IF NOT EXISTS access_log (
  id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, username TEXT NOT NULL, action TEXT NOT NULL,
  case_id TEXT, what TEXT, ip TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS access_log_user ON access_log(username, at_ms);
CREATE INDEX IF NOT EXISTS access_log_case ON access_log(case_id);
"""

WEB_INDEXES = """
CREATE INDEX IF NOT EXISTS web_case_status_evaluated ON case_status(evaluated_ms);
CREATE INDEX IF NOT EXISTS web_cases_case_no ON cases(case_no);
CREATE INDEX IF NOT EXISTS web_parties_name ON parties(name);
CREATE INDEX IF NOT EXISTS web_alerts_related ON alerts(related_case);
CREATE INDEX IF NOT EXISTS web_conflicts_status_case ON conflicts(status, case_id);
"""

_ready: set[str] = set()
_ready_lock = threading.Lock()


def ensure_tables(conn: sqlite3.Connection, key: str) -> None:
    """Create the web's tables and indexes once per database file and process."""
    if key in _ready:
        return
    with _ready_lock:
        if key in _ready:
            return
        conn.executescript(WEB_TABLES)
        conn.executescript(WEB_INDEXES)
        _ready.add(key)


def forget_tables() -> None:
    """Tests that replace a database file under the same path call this."""
    with _ready_lock:
        _ready.clear()


class Stores:
    """One open ServerStore per thread and data folder, for the web's requests."""

    def __init__(self, data_dir: str | Path, clock: Any = None) -> None:
        self.data_dir = str(data_dir)
        self.clock = clock
        self._local = threading.local()
        self._all: list[ServerStore] = []
        self._lock = threading.Lock()

    def get(self) -> ServerStore:
        store: ServerStore | None = getattr(self._local, "store", None)
        if store is None:
            store = ServerStore(self.data_dir, **({"clock": self.clock} if self.clock else {}))
            ensure_tables(store.conn, str(Path(self.data_dir).resolve()))
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def drop(self) -> None:
        """Forget this thread's store (after a database error, the next request opens afresh)."""
        store = getattr(self._local, "store", None)
        self._local.store = None
        if store is not None:
            with self._lock:
                if store in self._all:
                    self._all.remove(store)
            try:
                store.close()
            except sqlite3.Error:
                pass

    def close_all(self) -> None:
        with self._lock:
            stores, self._all = self._all, []
        for s in stores:
            try:
                s.close()
            except sqlite3.Error:
                pass
