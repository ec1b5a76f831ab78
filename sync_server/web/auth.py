"""Who is logged in, what they may do, and the trail of what they saw.

* **Passwords**: Argon2id (``sync_server.users``), never stored or logged in the clear.
* **Sessions**: the browser holds a random token in a cookie (HttpOnly, SameSite=Lax,
  Secure when the request came over https or the server is told so); the server keeps
  only its SHA-256 in ``web_sessions``, with the user, a CSRF token, pending messages and
  short-lived "show" grants. A session ends on logout, after ``IDLE_MS`` without a
  request, ``ABSOLUTE_MS`` after login, or when the user is disabled.
* **Throttling**: failed logins are counted per (username, client address); from the
  ``THROTTLE_AFTER``-th on, that pair is locked for 30 s, doubling with each further
  failure up to an hour; and any username with ``USER_CAP`` failures within the hour from
  all addresses together is locked too (guessing from many machines). While locked, the
  password is not even checked. A success clears the pair.
* **CSRF**: every form carries a token: the session's, or before login the value of a
  login cookie (double submit). A POST without the right token is refused (400).
* **Roles** (``ROLE_PERMISSIONS``): a coordinator does the casework; an auditor (IT) reads
  the access log; an administrator manages accounts and reads the access log. The
  permission to see reporters' identities (检举控告, ``confidential``) is separate from
  the role.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from sync_server.users import USER_TABLE

SESSION_COOKIE = "minqing_county_session"
LOGIN_COOKIE = "minqing_county_login"
IDLE_MS = 2 * 3600 * 1000
ABSOLUTE_MS = 12 * 3600 * 1000
SEEN_EVERY_MS = 60 * 1000  # write the session's last-seen time at most once a minute
THROTTLE_AFTER = 5
BASE_LOCK_MS = 30 * 1000
MAX_LOCK_MS = 3600 * 1000
USER_CAP = 20  # failures within an hour for one username, from all addresses
FAILURE_KEEP_MS = 24 * 3600 * 1000
GRANT_MS = 5 * 60 * 1000  # how long an explicit "show" lasts

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "coordinator": frozenset({"casework", "resolve", "export"}),
    "auditor": frozenset({"access_log"}),
    "admin": frozenset({"accounts", "access_log"}),
}


@dataclass(frozen=True)
class User:
    """The person behind a session."""

    username: str
    display_name: str
    role: str
    confidential: bool  # may see the identity of people who report or accuse (检举控告)

    def can(self, permission: str) -> bool:
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())


@dataclass
class Session:
    token_hash: str
    user: User
    csrf: str
    created_ms: int
    seen_ms: int
    flash: list[list[str]]
    grants: dict[str, int]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_user(conn: sqlite3.Connection, username: str) -> User | None:
    conn.execute(USER_TABLE)
    row = conn.execute("SELECT username, display_name, role, confidential, disabled FROM users WHERE username=?",
                       (username,)).fetchone()
    if row is None or row[4]:
        return None
    return User(row[0], row[1] or row[0], row[2], bool(row[3]))


# ---- sessions ----

def start_session(conn: sqlite3.Connection, user: User, ip: str, now_ms: int) -> str:
    """A new session for ``user``; returns the cookie's token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO web_sessions(token_hash, username, csrf, created_ms, seen_ms, ip) VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash(token), user.username, secrets.token_urlsafe(24), now_ms, now_ms, ip[:64]),
    )
    conn.execute("DELETE FROM web_sessions WHERE seen_ms < ? OR created_ms < ?",
                 (now_ms - IDLE_MS, now_ms - ABSOLUTE_MS))
    return token


def find_session(conn: sqlite3.Connection, token: str | None, now_ms: int) -> Session | None:
    """The live session for a cookie's token, or None (expired ones are removed)."""
    if not token or len(token) > 200:
        return None
    h = token_hash(token)
    row = conn.execute("SELECT username, csrf, created_ms, seen_ms, flash, grants FROM web_sessions "
                       "WHERE token_hash=?", (h,)).fetchone()
    if row is None:
        return None
    username, csrf, created, seen, flash, grants = row
    if seen < now_ms - IDLE_MS or created < now_ms - ABSOLUTE_MS:
        conn.execute("DELETE FROM web_sessions WHERE token_hash=?", (h,))
        return None
    user = load_user(conn, username)
    if user is None:  # disabled or removed since
        conn.execute("DELETE FROM web_sessions WHERE token_hash=?", (h,))
        return None
    if now_ms - seen >= SEEN_EVERY_MS:
        conn.execute("UPDATE web_sessions SET seen_ms=? WHERE token_hash=?", (now_ms, h))
        seen = now_ms
    live = {k: v for k, v in json.loads(grants or "{}").items() if v > now_ms}
    return Session(h, user, csrf, created, seen, json.loads(flash or "[]"), live)


def end_session(conn: sqlite3.Connection, session: Session) -> None:
    conn.execute("DELETE FROM web_sessions WHERE token_hash=?", (session.token_hash,))


def end_sessions_of(conn: sqlite3.Connection, username: str) -> None:
    conn.execute("DELETE FROM web_sessions WHERE username=?", (username,))


def save_flash(conn: sqlite3.Connection, session: Session) -> None:
    conn.execute("UPDATE web_sessions SET flash=? WHERE token_hash=?",
                 (json.dumps(session.flash, ensure_ascii=False), session.token_hash))


def grant(conn: sqlite3.Connection, session: Session, key: str, now_ms: int) -> None:
    """Let this session see ``key`` (e.g. a case's ID numbers and phones) for ``GRANT_MS``."""
    session.grants[key] = now_ms + GRANT_MS
    conn.execute("UPDATE web_sessions SET grants=? WHERE token_hash=?",
                 (json.dumps(session.grants), session.token_hash))


def csrf_ok(sent: str | None, expected: str | None) -> bool:
    return bool(sent and expected and hmac.compare_digest(str(sent), str(expected)))


# ---- throttling ----

def locked_for_ms(conn: sqlite3.Connection, username: str, ip: str, now_ms: int) -> int:
    """How long this (username, address) must still wait before a password is checked; 0: not locked."""
    key = username.strip().lower()[:64]
    row = conn.execute("SELECT locked_until_ms FROM login_failures WHERE username=? AND ip=?",
                       (key, ip[:64])).fetchone()
    wait = max(0, (row[0] if row else 0) - now_ms)
    total = conn.execute("SELECT COALESCE(SUM(count), 0), MAX(last_ms) FROM login_failures "
                         "WHERE username=? AND last_ms > ?", (key, now_ms - 3600 * 1000)).fetchone()
    if total[0] >= USER_CAP:
        wait = max(wait, total[1] + MAX_LOCK_MS - now_ms)
    return wait


def record_failure(conn: sqlite3.Connection, username: str, ip: str, now_ms: int) -> int:
    """Count a failed login; returns the lock now applied to the pair (ms, 0 for none)."""
    key = username.strip().lower()[:64]
    row = conn.execute("SELECT count FROM login_failures WHERE username=? AND ip=?", (key, ip[:64])).fetchone()
    count = (row[0] if row else 0) + 1
    lock = 0
    if count >= THROTTLE_AFTER:
        lock = min(MAX_LOCK_MS, BASE_LOCK_MS * 2 ** (count - THROTTLE_AFTER))
    conn.execute(
        "INSERT INTO login_failures(username, ip, count, first_ms, last_ms, locked_until_ms) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(username, ip) DO UPDATE SET count=excluded.count, last_ms=excluded.last_ms, "
        "locked_until_ms=excluded.locked_until_ms",
        (key, ip[:64], count, now_ms, now_ms, now_ms + lock if lock else 0),
    )
    conn.execute("DELETE FROM login_failures WHERE last_ms < ?", (now_ms - FAILURE_KEEP_MS,))
    return lock


def clear_failures(conn: sqlite3.Connection, username: str, ip: str | None = None) -> None:
    key = username.strip().lower()[:64]
    if ip is None:
        conn.execute("DELETE FROM login_failures WHERE username=?", (key,))
    else:
        conn.execute("DELETE FROM login_failures WHERE username=? AND ip=?", (key, ip[:64]))


# ---- the access log ----

def log_access(conn: sqlite3.Connection, now_ms: int, username: str, action: str, *, case_id: str | None = None,
               what: str | None = None, ip: str | None = None, detail: Any = None) -> None:
    """Append to ``access_log`` (in the caller's transaction, or its own statement)."""
    conn.execute(
        "INSERT INTO access_log(at_ms, username, action, case_id, what, ip, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now_ms, username[:64], action, case_id, what, (ip or "")[:64],
         json.dumps(detail, ensure_ascii=False) if detail is not None else None),
    )


ACCESS_COLUMNS = ("id", "at_ms", "username", "action", "case_id", "what", "ip", "detail")


def access_entries(conn: sqlite3.Connection, *, username: str | None = None, action: str | None = None,
                   limit: int | None = 200, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    where = " WHERE 1=1"
    params: list[Any] = []
    if username:
        where += " AND username=?"
        params.append(username)
    if action:
        where += " AND action=?"
        params.append(action)
    total = int(conn.execute("SELECT COUNT(*) FROM access_log" + where, params).fetchone()[0])
    q = f"SELECT {', '.join(ACCESS_COLUMNS)} FROM access_log{where} ORDER BY id DESC"
    if limit is not None:
        q += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    rows = [dict(zip(ACCESS_COLUMNS, r, strict=True)) for r in conn.execute(q, params)]
    return total, rows
