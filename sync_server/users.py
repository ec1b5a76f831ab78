"""People who log in to the county server: coordinators, auditors (IT), administrators.

Passwords are hashed with Argon2id (argon2-cffi), a memory-hard function. The permission
to see the identity of people who report or accuse (检举控告) is separate from the role
(DOMAIN.md "Confidentiality").
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sync_server.errors import BadRequest, Conflict

ROLES = {"coordinator": "协调员", "auditor": "审计员(IT)", "admin": "管理员"}
USERNAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
_hasher = PasswordHasher()

USER_TABLE = """
CREATE TABLE IF NOT EXISTS users (
  username TEXT PRIMARY KEY, display_name TEXT, role TEXT NOT NULL, confidential INTEGER NOT NULL DEFAULT 0,
  password_hash TEXT NOT NULL, created_ms INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
"""


def add_user(conn: sqlite3.Connection, username: str, password: str, *, role: str, now_ms: int,
             display_name: str = "", confidential: bool = False) -> dict[str, Any]:
    if not USERNAME.fullmatch(username):
        raise BadRequest("用户名应为小写字母开头的 2-32 个字符 (username: 2-32 chars, lowercase, starting with a letter)",
                         code="user.bad_username")
    if role not in ROLES:
        raise BadRequest(f"角色应为 {', '.join(ROLES)} (unknown role {role!r})", code="user.bad_role")
    if len(password) < 10:
        raise BadRequest("密码至少 10 个字符 (the password needs at least 10 characters)", code="user.weak_password")
    conn.execute(USER_TABLE)
    if conn.execute("SELECT 1 FROM users WHERE username=?", (username,)).fetchone():
        raise Conflict(f"用户 {username} 已存在 (user exists)", code="user.exists")
    conn.execute(
        "INSERT INTO users(username, display_name, role, confidential, password_hash, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (username, display_name or username, role, int(confidential), _hasher.hash(password), now_ms),
    )
    return {"username": username, "role": role, "confidential": confidential}


def check_password(conn: sqlite3.Connection, username: str, password: str) -> dict[str, Any] | None:
    """The user row when the password is right and the user enabled; None otherwise."""
    conn.execute(USER_TABLE)
    row = conn.execute(
        "SELECT username, display_name, role, confidential, password_hash, disabled FROM users WHERE username=?",
        (username,),
    ).fetchone()
    if row is None:
        _hasher.hash(password)  # spend the same time as a real check
        return None
    try:
        _hasher.verify(row[4], password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row[5]:
        return None
    return {"username": row[0], "display_name": row[1], "role": row[2], "confidential": bool(row[3])}


def list_users(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    conn.execute(USER_TABLE)
    cols = ("username", "display_name", "role", "confidential", "created_ms", "disabled")
    return [dict(zip(cols, r, strict=True)) for r in conn.execute(f"SELECT {', '.join(cols)} FROM users ORDER BY username")]
