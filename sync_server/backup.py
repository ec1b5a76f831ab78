"""Backup and restore of a server data folder (docs/audit.md "Backup and restore").

``backup(data_dir, dest)`` copies the database with SQLite's online backup API
(``sqlite3.Connection.backup``) in **one step**: one read transaction, so the copy is one
consistent moment of the database while the server goes on serving (WAL readers do not
block writers). The keys (``server_keys.json``), the rules and every other file of the
folder are copied beside it, and ``BACKUP.json`` records what the copy holds: the
ledger's head (sequence and hash), the op count and op-set digest, the SHA-256 of every
file. The destination folder is created mode 0700: it holds the server's private keys.

``restore(src, data_dir)`` checks the backup (manifest hashes, ``PRAGMA integrity_check``),
refuses a folder that a running server holds (``serve.lock``) and a folder that is not
empty unless ``force`` (then the old content is moved aside, never deleted), and writes
the copy back. It starts a new **epoch**: the ops the server held after the backup are
gone, so a laptop's pull cursor from before the restore may point past what the server
now numbers. Answers carry the epoch; a request from an older epoch is served from the
restore point (``effective_after``), and the laptop takes the new cursor as it is. Change
sets the server lost are found by the laptops themselves: every answer carries the
device's ``seq_status`` (sync_server.lifecycle), and a laptop resends what the server
no longer holds. The ledger's unique ``(device, seq)`` and the replica's op-id dedupe
make sure nothing is merged twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conflict.digest import op_digest
from sync_server import __version__, ledger
from sync_server.errors import ServerError
from sync_server.store import DB_FILE

MANIFEST = "BACKUP.json"
FORMAT = 1
SKIP = {DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal", "serve.lock", MANIFEST}
EPOCH_KEY = "epoch"
EPOCHS_KEY = "epochs"  # JSON list of {"epoch", "until_seq", "restored_ms"}: the epochs a restore ended


class BackupError(ServerError):
    """A backup or restore that cannot be done; ``code`` says why (``backup.*``)."""

    code = "backup.failed"
    status = 400


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    """Every file of a folder except the database's own and the lock, relative paths sorted."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name not in SKIP
                  and not p.name.endswith(".part"))


def _empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def describe_db(conn: sqlite3.Connection) -> dict[str, Any]:
    """What a server database holds, for the manifest and the restore report."""
    seq, head = ledger.head(conn)
    pairs = conn.execute("SELECT op_id, stamp FROM ops")
    return {
        "ledger_head": {"ledger_seq": seq, "hash": head},
        "max_op_seq": int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ops").fetchone()[0]),
        "op_digest": op_digest(pairs),
        "devices": int(conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0]),
    }


def backup(data_dir: str | Path, dest: str | Path, *, now_ms: Callable[[], int] | None = None) -> dict[str, Any]:
    """A consistent copy of a (possibly serving) data folder in ``dest`` (new or empty)."""
    src, out = Path(data_dir), Path(dest)
    db = src / DB_FILE
    if not db.exists():
        raise BackupError(f"{src} 不是服务器数据目录 (no server data folder here)", code="server.not_initialised")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise BackupError("备份目录不能在数据目录里面 (the backup folder must lie outside the data folder)",
                          code="backup.inside_data")
    if not _empty(out):
        raise BackupError(f"{out} 不是空目录，不会覆盖 (the backup folder is not empty; nothing was written)",
                          code="backup.dest_not_empty", details={"dest": str(out)})
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    part = out / (DB_FILE + ".part")
    source = sqlite3.connect(db, timeout=30)
    try:
        source.execute("PRAGMA busy_timeout=30000")
        target = sqlite3.connect(part)
        try:
            source.backup(target)  # one step: one read transaction, one consistent snapshot
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            check = target.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"备份副本校验失败 (the copy fails integrity_check: {check})", code="backup.corrupt")
            facts = describe_db(target)
        finally:
            target.close()
    except sqlite3.Error as exc:
        part.unlink(missing_ok=True)
        raise BackupError(f"读取数据库失败 (cannot read the database: {exc})", code="backup.sqlite") from exc
    finally:
        source.close()
    part.replace(out / DB_FILE)
    copied = []
    for rel in _files(src):
        target_path = out / rel
        target_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target_path)
        copied.append(str(rel))
    files = {str(rel): _sha256(out / rel) for rel in [Path(DB_FILE), *map(Path, copied)]}
    created = now_ms() if now_ms else int(time.time() * 1000)
    manifest = {
        "format": FORMAT, "created_ms": created, "app_version": __version__, "source": str(src.resolve()),
        **facts, "files": files,
    }
    _write_json(out / MANIFEST, manifest)
    return {"ok": True, "dest": str(out), "seconds": round(time.perf_counter() - t0, 3),
            "bytes": sum((out / f).stat().st_size for f in files), **manifest}


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def check_backup(src: str | Path) -> dict[str, Any]:
    """The manifest of a backup folder whose files all match it, or BackupError naming the one that does not."""
    folder = Path(src)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{folder} 不是有效的备份（缺少或损坏 {MANIFEST}）(not a backup folder: {exc})",
                          code="backup.not_a_backup") from exc
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{MANIFEST} 格式不对 (unknown backup format)", code="backup.not_a_backup")
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file() or _sha256(path) != digest:
            raise BackupError(f"备份文件 {name} 缺失或已改变 (the backup's file {name} is missing or changed)",
                              code="backup.damaged", details={"file": name})
    conn = sqlite3.connect(f"file:{folder / DB_FILE}?mode=ro", uri=True)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    if check != "ok":
        raise BackupError(f"备份数据库校验失败 (integrity_check: {check})", code="backup.damaged")
    return dict(manifest)


def restore(src: str | Path, data_dir: str | Path, *, force: bool = False,
            now_ms: Callable[[], int] | None = None) -> dict[str, Any]:
    """Bring a backup back into ``data_dir`` and start a new epoch (see the module docstring)."""
    from sync_server.ops_log import lock_held

    source, data = Path(src), Path(data_dir)
    manifest = check_backup(source)
    if data.exists() and data.resolve() == source.resolve():
        raise BackupError("备份目录和数据目录是同一个 (the backup and the data folder are the same)",
                          code="backup.same_folder")
    pid = lock_held(data) if data.exists() else None
    if pid is not None:
        raise BackupError(f"服务器正在使用 {data}（进程 {pid}），请先停止 sync-server serve "
                          f"(a running server holds this data folder; stop it first)",
                          code="backup.server_running", details={"pid": pid})
    moved_to = None
    if not _empty(data):
        if not force:
            raise BackupError(f"{data} 不是空目录；确认要覆盖请加 --force，原有内容会被移到旁边保存 "
                              f"(the data folder is not empty; add --force to replace it: its content is kept aside)",
                              code="backup.data_not_empty", details={"data": str(data)})
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved_to = data.with_name(f"{data.name}.before-restore-{stamp}")
        n = 1
        while moved_to.exists():
            n += 1
            moved_to = data.with_name(f"{data.name}.before-restore-{stamp}-{n}")
        data.rename(moved_to)
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    for name in manifest["files"]:
        if name == DB_FILE:
            continue
        target = data / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target)
    part = data / (DB_FILE + ".part")
    from_conn = sqlite3.connect(f"file:{source / DB_FILE}?mode=ro", uri=True)
    to_conn = sqlite3.connect(part)
    try:
        from_conn.backup(to_conn)
        to_conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        from_conn.close()
        to_conn.close()
    part.replace(data / DB_FILE)
    restored_ms = now_ms() if now_ms else int(time.time() * 1000)
    conn = sqlite3.connect(data / DB_FILE)
    try:
        conn.execute("BEGIN IMMEDIATE")
        facts = describe_db(conn)
        epoch = new_epoch(conn, until_seq=facts["max_op_seq"], restored_ms=restored_ms,
                          backup_created_ms=manifest.get("created_ms"))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {"ok": True, "data": str(data), "from": str(source), "backup_created_ms": manifest.get("created_ms"),
            "moved_aside": str(moved_to) if moved_to else None, "epoch": epoch, **facts}


# ---- epochs: pull cursors across a restore ----


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM server_meta WHERE key=?", (key,)).fetchone()
    return row[0] if row else None


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT INTO server_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                 (key, value))


def current_epoch(conn: sqlite3.Connection) -> str:
    """The server's epoch: ``"0"`` until the first restore, then a new random id per restore."""
    return _meta(conn, EPOCH_KEY) or "0"


def history(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    text = _meta(conn, EPOCHS_KEY)
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def new_epoch(conn: sqlite3.Connection, *, until_seq: int, restored_ms: int,
              backup_created_ms: int | None = None) -> str:
    """End the current epoch at op seq ``until_seq`` (inside the caller's transaction)."""
    old = current_epoch(conn)
    epoch = os.urandom(8).hex()
    past = history(conn)
    past.append({"epoch": old, "until_seq": until_seq, "restored_ms": restored_ms,
                 "backup_created_ms": backup_created_ms})
    _set_meta(conn, EPOCHS_KEY, json.dumps(past))
    _set_meta(conn, EPOCH_KEY, epoch)
    return epoch


def effective_after(conn: sqlite3.Connection, after: int, epoch: Any) -> int:
    """The pull cursor to serve: a cursor of an older epoch counts at most to the restore
    point that ended it (ops past it were lost and renumbered). A request that names no
    epoch (an older laptop) is served from the earliest restore point."""
    past = history(conn)
    if not past or epoch == current_epoch(conn):
        return after
    ends = [p.get("until_seq", 0) for p in past]
    names = [p.get("epoch") for p in past]
    if isinstance(epoch, str) and epoch in names:
        ends = ends[names.index(epoch):]
    limit = min(int(x) for x in ends if isinstance(x, int)) if ends else 0
    return min(after, limit)
