"""A device's life after enrollment: key rotation, re-enrollment of a restored laptop,
what the server holds of a device's sequence (docs/audit.md "Device lifecycle").

Tables (created here, on first use)::

    device_keys     keys a device has retired: (device_id, ed25519, x25519, until_seq,
                    retired_ms). An envelope of seq <= until_seq verifies with that key;
                    later ones with the device's current key (``devices``).
    device_events   enrolled / rotated / replaced / re-enrolled, with details (JSON)
    reenroll_codes  which device a re-enrollment code replaces (token hash -> device id)

**Rotation** (``POST /api/v1/rotate``): a ``request`` envelope signed with the device's
current key carries new public keys, a proof by the new Ed25519 key, and ``first_seq``,
the first sequence number the new key signs. The old key stays valid for the change sets
the laptop packed before (seq < first_seq), so nothing in flight is lost and the ledger
still verifies. Asked again with the same new keys (the answer was lost), it answers again.

**Re-enrollment** (``POST /api/v1/reenroll``): a laptop restored from an old copy would
reuse sequence numbers (``sync.seq_reused``). IT makes a code bound to the old device
(``sync-server device reenroll OLD``); the laptop makes new keys, so a new device id, and
proves it holds the old key. The server records the new device on the old one's node,
marks the old one ``replaced`` (``replaced_by``): from then on the old id's envelopes are
refused (``sync.device_replaced``): its sequence is closed. The new device may send ops
its predecessors authored (``authors_of``); they merge once, by op id.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from schema import envelope as env
from schema.errors import MinqingError
from schema.ops import canonical_json
from sync_server.errors import BadRequest, Conflict, EnrollRefused, NotFound

TABLES = """
CREATE TABLE IF NOT EXISTS device_keys (device_id TEXT NOT NULL, ed25519 TEXT NOT NULL, x25519 TEXT NOT NULL,
  until_seq INTEGER NOT NULL, retired_ms INTEGER NOT NULL, PRIMARY KEY (device_id, until_seq));
CREATE TABLE IF NOT EXISTS device_events (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, at_ms INTEGER NOT NULL,
  kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS device_events_device ON device_events(device_id, at_ms);
CREATE TABLE IF NOT EXISTS reenroll_codes (token_hash TEXT PRIMARY KEY, replaces TEXT NOT NULL);
"""
MISSING_CAP = 1000  # at most this many missing sequence numbers named in an answer


class DeviceReplaced(Conflict):
    """The device id was replaced by a re-enrolled laptop; its sequence is closed."""

    code = "sync.device_replaced"
    status = 409


def ensure_tables(conn: sqlite3.Connection) -> None:
    """Create the tables if need be (statement by statement: inside the caller's transaction)."""
    for statement in TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def event(conn: sqlite3.Connection, device_id: str, kind: str, at_ms: int, **detail: Any) -> None:
    """Record a lifecycle event (inside the caller's transaction)."""
    ensure_tables(conn)
    conn.execute("INSERT INTO device_events(device_id, at_ms, kind, detail) VALUES (?, ?, ?, ?)",
                 (device_id, at_ms, kind, json.dumps(detail, ensure_ascii=False, default=str)))


def events(conn: sqlite3.Connection, device_id: str | None = None) -> list[dict[str, Any]]:
    if not _has_table(conn, "device_events"):
        return []
    q = "SELECT id, device_id, at_ms, kind, detail FROM device_events"
    params: tuple[Any, ...] = ()
    if device_id:
        q += " WHERE device_id=?"
        params = (device_id,)
    return [{"id": r[0], "device_id": r[1], "at_ms": r[2], "kind": r[3], "detail": json.loads(r[4])}
            for r in conn.execute(q + " ORDER BY id", params)]


# ---- keys by sequence number ----


def key_for(conn: sqlite3.Connection, device_id: str, seq: int | None) -> str | None:
    """The retired Ed25519 key (hex) that signs ``device_id``'s envelope ``seq``, or None
    when its current key does (no rotation since, or ``seq`` None: a request)."""
    if seq is None:
        return None
    try:
        row = conn.execute(
            "SELECT ed25519 FROM device_keys WHERE device_id=? AND until_seq>=? ORDER BY until_seq LIMIT 1",
            (device_id, seq)).fetchone()
    except sqlite3.OperationalError:  # no rotation ever: the table does not exist yet
        return None
    return row[0] if row else None


def retired_keys(conn: sqlite3.Connection, device_id: str) -> list[dict[str, Any]]:
    if not _has_table(conn, "device_keys"):
        return []
    cols = ("ed25519", "x25519", "until_seq", "retired_ms")
    return [dict(zip(cols, r, strict=True)) for r in conn.execute(
        "SELECT ed25519, x25519, until_seq, retired_ms FROM device_keys WHERE device_id=? ORDER BY until_seq DESC",
        (device_id,))]


def authors_of(conn: sqlite3.Connection, device_id: str) -> set[str]:
    """The device and every device it replaced (directly or through a chain)."""
    rows = conn.execute(
        "WITH RECURSIVE chain(id) AS (SELECT ? UNION SELECT d.device_id FROM devices d JOIN chain c "
        "ON d.replaced_by = c.id) SELECT id FROM chain", (device_id,))
    return {r[0] for r in rows}


def with_authors(conn: sqlite3.Connection, dev: Mapping[str, Any]) -> dict[str, Any]:
    """A device row with ``authors``: whose ops it may send (itself and its predecessors)."""
    return {**dev, "authors": authors_of(conn, dev["device_id"])}


# ---- a device's sequence as the server holds it ----


def seq_status(conn: sqlite3.Connection, device_id: str) -> dict[str, Any]:
    """``{"through": n, "max": m, "missing": [...], "capped": bool}``: the server holds every
    change set 1..n of the device, the highest is m, and these below m are missing."""
    n, top = conn.execute("SELECT COUNT(*), COALESCE(MAX(device_seq), 0) FROM ledger "
                          "WHERE kind='device' AND device=?", (device_id,)).fetchone()
    if n == top:
        return {"through": top, "max": top, "missing": [], "capped": False}
    missing: list[int] = []
    expected = 1
    capped = False
    for (seq,) in conn.execute("SELECT device_seq FROM ledger WHERE kind='device' AND device=? AND device_seq>0 "
                               "ORDER BY device_seq", (device_id,)):
        while expected < seq:
            if len(missing) >= MISSING_CAP:
                capped = True
                break
            missing.append(expected)
            expected += 1
        if capped:
            break
        expected = seq + 1
    through = (missing[0] - 1) if missing else top
    return {"through": through, "max": top, "missing": missing, "capped": capped}


def gaps(seqs: list[int]) -> list[list[int]]:
    """Missing ranges ``[first, last]`` below the highest of ``seqs`` (sorted ascending)."""
    out: list[list[int]] = []
    expected = 1
    for s in seqs:
        if s > expected:
            out.append([expected, s - 1])
        expected = max(expected, s + 1)
    return out


# ---- re-enrollment ----


def create_reenroll_code(svc: Any, old_id: str, *, url: str, hours: float = 72) -> str:
    """A one-time code with which the laptop restored from ``old_id`` becomes a new device."""
    store = svc.store
    old = store.device(old_id)
    if old is None:
        raise NotFound(f"没有这台设备 {old_id} (no such device)")
    if old["status"] == "revoked":
        raise EnrollRefused(f"设备 {old_id} 已被吊销，不能重新注册 (a revoked device cannot be re-enrolled)",
                            code="enroll.device_revoked")
    if old["status"] == "replaced":
        raise EnrollRefused(f"设备 {old_id} 已被 {old['replaced_by']} 替换 (already replaced)",
                            code="enroll.already_replaced", details={"replaced_by": old["replaced_by"]})
    code = svc.create_enroll_code(old["node"], url=url, user=old.get("user"), hours=hours)
    import base64

    doc = json.loads(base64.urlsafe_b64decode(code[4:].encode()))
    with store.transaction():
        ensure_tables(store.conn)
        store.conn.execute("INSERT INTO reenroll_codes(token_hash, replaces) VALUES (?, ?)",
                           (hashlib.sha256(doc["token"].encode()).hexdigest(), old_id))
    doc["r"] = old_id
    return "MQ1." + base64.urlsafe_b64encode(canonical_json(doc).encode()).decode()


def reenroll_message(token: str, old_id: str, new_id: str, x_hex: str, ed_hex: str) -> bytes:
    """What the old key signs to hand its work to the new device."""
    return f"reenroll|{token}|{old_id}|{new_id}|{x_hex}|{ed_hex}".encode()


def _verify(public_hex: str, signature_hex: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(bytes.fromhex(signature_hex), message)
        return True
    except Exception:  # noqa: BLE001 - any malformed key or signature fails the proof
        return False


def reenroll(svc: Any, body: Mapping[str, Any], *, carrier: str | None = None) -> dict[str, Any]:
    """Record a restored laptop as a new device that replaces the old one (docs/audit.md)."""
    from sync_server.service import _refuse

    try:
        return _reenroll(svc, body)
    except MinqingError as exc:
        device = str(body.get("device_id"))[:40] if isinstance(body, Mapping) else None
        raise _refuse(svc.store, exc, device=device, seq=None, size=None, carrier=carrier) from None


def _reenroll(svc: Any, body: Mapping[str, Any]) -> dict[str, Any]:
    store = svc.store
    conn = store.conn
    need = ("token", "device_id", "x25519", "ed25519", "node", "proof", "replaces", "old_proof")
    if not isinstance(body, Mapping) or any(not isinstance(body.get(k), str) for k in need):
        raise BadRequest("reenroll needs " + ", ".join(need) + " (strings)")
    token_hash = hashlib.sha256(body["token"].encode()).hexdigest()
    row = conn.execute("SELECT node, expires_ms, used_ms, used_by FROM enroll_codes WHERE token_hash=?",
                       (token_hash,)).fetchone()
    bound = conn.execute("SELECT replaces FROM reenroll_codes WHERE token_hash=?", (token_hash,)).fetchone() \
        if _has_table(conn, "reenroll_codes") else None
    if row is None or bound is None:
        raise EnrollRefused("重新注册码无效 (unknown re-enrollment code)", code="enroll.unknown_code")
    node, expires, used, used_by = row
    old_id, new_id = body["replaces"], body["device_id"]
    if bound[0] != old_id:
        raise EnrollRefused(f"这个注册码用于替换设备 {bound[0]}，不是 {old_id} (the code replaces another device)",
                            code="enroll.wrong_device")
    old = store.device(old_id)
    if old is None:
        raise EnrollRefused(f"没有设备 {old_id} (no such device)", code="enroll.unknown_code")
    if old["status"] == "revoked":
        raise EnrollRefused("该设备已被吊销 (this device has been revoked)", code="enroll.device_revoked")
    message = f"enroll|{body['token']}|{new_id}|{body['x25519']}".encode()
    try:
        X25519PublicKey.from_public_bytes(bytes.fromhex(body["x25519"]))
        new_ok = _verify(body["ed25519"], body["proof"], message)
    except ValueError:
        new_ok = False
    if not new_ok or hashlib.sha256(bytes.fromhex(body["ed25519"])).hexdigest()[:16] != new_id:
        raise EnrollRefused("新设备的证明无效 (the new device's proof does not verify)", code="enroll.bad_proof")
    old_keys = [old["ed25519"]] + [k["ed25519"] for k in retired_keys(conn, old_id)]
    handover = reenroll_message(body["token"], old_id, new_id, body["x25519"], body["ed25519"])
    if not any(_verify(k, body["old_proof"], handover) for k in old_keys):
        raise EnrollRefused("旧设备的签名无效：只有原笔记本（或其备份）能重新注册 (the old device's proof does not verify)",
                            code="enroll.bad_proof")
    existing = store.device(new_id)
    if old["status"] == "replaced":
        if old["replaced_by"] == new_id and existing is not None and existing["x25519"] == body["x25519"]:
            return _answer(svc, new_id, old_id, old["node"])  # asked again: the same answer
        raise EnrollRefused(f"设备 {old_id} 已被 {old['replaced_by']} 替换 (already replaced)",
                            code="enroll.already_replaced", details={"replaced_by": old["replaced_by"]})
    if existing is not None:
        raise EnrollRefused("该设备已注册 (this device is already enrolled)", code="enroll.already_enrolled")
    if used is not None:
        raise EnrollRefused("注册码已被使用 (this enrollment code has been used)", code="enroll.code_used")
    if store.now_ms() > expires:
        raise EnrollRefused("注册码已过期，请找 IT 重新生成 (the code has expired)", code="enroll.code_expired")
    if body["node"] != node:
        raise EnrollRefused(f"笔记本的单位 {body['node']} 与注册码的单位 {node} 不一致 (the laptop's node differs)",
                            code="enroll.wrong_node")
    now = store.now_ms()
    closed_at = int(conn.execute("SELECT COALESCE(MAX(device_seq), 0) FROM ledger WHERE kind='device' AND device=?",
                                 (old_id,)).fetchone()[0])
    with store.transaction():
        conn.execute(
            "INSERT INTO devices(device_id, node, level, user, x25519, ed25519, enrolled_ms, app_version, last_contact_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (new_id, old["node"], old["level"], old["user"], body["x25519"], body["ed25519"], now,
             str(body.get("app_version", ""))[:40], now))
        conn.execute("UPDATE devices SET status='replaced', replaced_by=? WHERE device_id=?", (new_id, old_id))
        # the cases the old id was sent go on counting for the new one (no whole histories again)
        conn.execute("INSERT OR IGNORE INTO device_cases(device_id, case_id, sent_cursor) "
                     "SELECT ?, case_id, sent_cursor FROM device_cases WHERE device_id=?", (new_id, old_id))
        conn.execute("UPDATE enroll_codes SET used_ms=?, used_by=? WHERE token_hash=?", (now, new_id, token_hash))
        event(conn, old_id, "replaced", now, replaced_by=new_id, closed_at_seq=closed_at)
        event(conn, new_id, "enrolled", now, replaces=old_id)
    return _answer(svc, new_id, old_id, old["node"])


def _answer(svc: Any, new_id: str, old_id: str, node: str) -> dict[str, Any]:
    closed = conn_closed_seq(svc.store.conn, old_id)
    return {**svc._enroll_answer(new_id, node), "replaces": old_id, "closed_seq": closed}


def conn_closed_seq(conn: sqlite3.Connection, device_id: str) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(device_seq), 0) FROM ledger WHERE kind='device' AND device=?",
                            (device_id,)).fetchone()[0])


def refuse_if_replaced(svc: Any, dev: Mapping[str, Any], header: Mapping[str, Any], *, size: int | None,
                       carrier: str | None) -> None:
    """An envelope of a replaced device id is refused and logged: its sequence is closed."""
    if dev.get("status") != "replaced":
        return
    from sync_server.service import _refuse

    raise _refuse(svc.store, DeviceReplaced(
        f"设备 {dev['device_id']} 已由重新注册的 {dev['replaced_by']} 替换，旧编号不再接收数据"
        f" (this device id was replaced by {dev['replaced_by']}; its sequence is closed)",
        details={"replaced_by": dev["replaced_by"]}),
        device=dev["device_id"], seq=header.get("seq"), size=size, carrier=carrier)


# ---- key rotation ----


def rotate_message(device_id: str, x_hex: str, ed_hex: str, first_seq: int) -> bytes:
    """What the new Ed25519 key signs (proof that the laptop holds it)."""
    return f"rotate|{device_id}|{x_hex}|{ed_hex}|{first_seq}".encode()


def rotate(svc: Any, data: bytes, *, carrier: str | None = None) -> bytes:
    """Take a signed rotation request; answer (sealed to the new key) once the keys are recorded."""
    from sync_server.service import _refuse

    store = svc.store
    size = len(data) if isinstance(data, bytes | bytearray) else None
    try:
        header, _ = env.read_header(data)
        if header["type"] != "request":
            raise BadRequest("expected a request envelope")
    except MinqingError as exc:
        raise _refuse(store, exc, device=None, seq=None, size=size, carrier=carrier) from None
    dev = svc._known_sender(header, size=size or 0, carrier=carrier)
    candidates = [dev["ed25519"]] + [k["ed25519"] for k in retired_keys(store.conn, dev["device_id"])]
    sealed = signer = None
    for key_hex in candidates:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
        try:
            sealed = env.open(data, recipient_key=svc.keys.x25519, sender_key=lambda _s, k=key: k)
            signer = key_hex
            break
        except env.EnvelopeError as exc:
            if exc.code != "envelope.bad_signature":
                raise _refuse(store, exc, device=dev["device_id"], seq=0, size=size, carrier=carrier) from None
    if sealed is None:
        raise _refuse(store, env.EnvelopeError("the signature does not match the sender's key",
                                               code="envelope.bad_signature"),
                      device=dev["device_id"], seq=0, size=size, carrier=carrier)
    svc._not_revoked(dev, header, size=size or 0, carrier=carrier)
    try:
        req = sealed.payload
        rot = req.get("rotate")
        if req.get("device") != dev["device_id"] or not isinstance(rot, dict):
            raise BadRequest("a rotation request names its signer and carries 'rotate'")
        x_hex, ed_hex, proof, first_seq = rot.get("x25519"), rot.get("ed25519"), rot.get("proof"), rot.get("first_seq")
        if not (isinstance(x_hex, str) and isinstance(ed_hex, str) and isinstance(proof, str)
                and env.is_seq(first_seq) and first_seq >= 1):
            raise BadRequest("rotate needs x25519, ed25519, proof (hex) and first_seq (1 to 2^63-1)")
        try:
            new_x = X25519PublicKey.from_public_bytes(bytes.fromhex(x_hex))
        except ValueError as exc:
            raise BadRequest("the new X25519 key is malformed") from exc
        if not _verify(ed_hex, proof, rotate_message(dev["device_id"], x_hex, ed_hex, first_seq)):
            raise BadRequest("新密钥的证明无效 (the new key's proof does not verify)", code="sync.bad_rotation")
        if signer != dev["ed25519"]:
            if dev["ed25519"] != ed_hex or dev["x25519"] != x_hex:
                raise Conflict("该请求由已停用的密钥签名 (signed with a retired key)", code="sync.stale_key")
        else:
            received = conn_closed_seq(store.conn, dev["device_id"])
            if first_seq <= received:
                raise BadRequest(f"新密钥须从序号 {received + 1} 之后开始 (first_seq must follow the last received "
                               f"seq {received})", code="sync.bad_rotation", details={"last_seq": received})
            now = store.now_ms()
            with store.transaction():
                ensure_tables(store.conn)
                store.conn.execute(
                    "INSERT INTO device_keys(device_id, ed25519, x25519, until_seq, retired_ms) VALUES (?, ?, ?, ?, ?)",
                    (dev["device_id"], dev["ed25519"], dev["x25519"], first_seq - 1, now))
                store.conn.execute("UPDATE devices SET x25519=?, ed25519=? WHERE device_id=?",
                                   (x_hex, ed_hex, dev["device_id"]))
                event(store.conn, dev["device_id"], "rotated", now, first_seq=first_seq,
                      old_fingerprint=hashlib.sha256(bytes.fromhex(dev["ed25519"])).hexdigest()[:16],
                      new_fingerprint=hashlib.sha256(bytes.fromhex(ed_hex)).hexdigest()[:16])
                svc._touch(dev["device_id"])
    except MinqingError as exc:
        raise _refuse(store, exc, device=dev["device_id"], seq=0, size=size, carrier=carrier) from None
    payload = {"rotated": True, "device": dev["device_id"], "first_seq": first_seq,
               "server_time_ms": store.now_ms(), "erase": False}
    return env.seal(payload, type="answer", sender=svc.keys.node_id, seq=0, signing_key=svc.keys.ed25519,
                    recipient=new_x)
