"""The laptop's side of the device lifecycle (docs/audit.md "Device lifecycle").

``rotate_keys``   new X25519 and Ed25519 keys for the same device id: the old key signs
                  the request, the new key proves itself; change sets already packed stay
                  signed by the old key (the server keeps it for their sequence numbers).
``reenroll``      a laptop restored from an old copy becomes a new device (new keys, new
                  id) with a code from IT; its unacknowledged work is packed again under
                  the new id, from sequence number 1, so no number is ever reused.
``settle_identity``  run before packing: completes a re-enrollment that was cut short,
                  and refuses to pack while a key rotation is unfinished.

Both write the new keys first to ``device.next.json`` (wrapped under the passphrase,
like ``device.json``), then ask the server, then replace ``device.json`` atomically: a
cut at any point is finished by running the same command again (the server answers a
repeated request with the same keys again).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_client import keystore
from field_client.errors import KeyfileDamaged, WrongPassphrase
from field_client.store import now_iso
from schema import envelope as env
from schema.ops import canonical_json

PENDING = "device.next.json"


def _pending_path(data_dir: Path) -> Path:
    return data_dir / PENDING


def _doc(info: dict[str, Any], data_key: bytes, x: X25519PrivateKey, ed: Ed25519PrivateKey,
         passphrase: str) -> dict[str, Any]:
    secrets = {"data_key": keystore.b64(data_key), "x25519": keystore.b64(keystore._raw_private(x)),
               "ed25519": keystore.b64(keystore._raw_private(ed))}
    return keystore._wrap(info, secrets, passphrase)


def _public(x: X25519PrivateKey, ed: Ed25519PrivateKey) -> dict[str, str]:
    return {"x25519": keystore.b64(keystore._raw_public(x)), "ed25519": keystore.b64(keystore._raw_public(ed))}


def pending_info(data_dir: Path) -> dict[str, Any] | None:
    """The clear part of an unfinished rotation or re-enrollment, or None."""
    path = _pending_path(data_dir)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {k: v for k, v in doc.items() if k not in ("kdf", "wrapped")}
    except (OSError, ValueError) as exc:
        raise KeyfileDamaged(f"{path} 已损坏 (damaged: {exc})", details={"path": str(path)}) from exc


def _read_pending(data_dir: Path, passphrase: str) -> tuple[dict[str, Any], X25519PrivateKey, Ed25519PrivateKey]:
    path = _pending_path(data_dir)
    doc = json.loads(path.read_text(encoding="utf-8"))
    try:
        kdf = doc["kdf"]
        kek = keystore._kek(passphrase, keystore.unb64(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        blob = AESGCM(kek).decrypt(keystore.unb64(doc["wrapped"]["nonce"]), keystore.unb64(doc["wrapped"]["ciphertext"]),
                                   doc["device_id"].encode())
    except InvalidTag as exc:
        raise WrongPassphrase("口令不对，没有做任何更改 (wrong passphrase; nothing was changed)") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise KeyfileDamaged(f"{path} 已损坏 (damaged: {exc})", details={"path": str(path)}) from exc
    secrets = json.loads(blob)
    info = {k: v for k, v in doc.items() if k not in ("kdf", "wrapped")}
    return (info, X25519PrivateKey.from_private_bytes(keystore.unb64(secrets["x25519"])),
            Ed25519PrivateKey.from_private_bytes(keystore.unb64(secrets["ed25519"])))


def _install(agent: Any, passphrase: str, info: dict[str, Any], x: X25519PrivateKey, ed: Ed25519PrivateKey) -> None:
    """Make the pending keys the device's keys (atomic rename), and use them from now on."""
    client = agent.client
    clean = {k: v for k, v in info.items() if k not in ("pending", "token", "first_seq", "replaces")}
    keystore._write_keyfile(keystore.keyfile_path(client.data_dir), _doc(clean, client.keys.data_key, x, ed, passphrase))
    client.keys = keystore.DeviceKeys(clean, client.keys.data_key, x, ed)
    _pending_path(client.data_dir).unlink(missing_ok=True)


def _check_passphrase(client: Any, passphrase: str) -> None:
    keystore.unlock(client.data_dir, passphrase)  # WrongPassphrase before anything is written


# ---- rotation ----


def rotate_keys(agent: Any, passphrase: str) -> dict[str, Any]:
    """New keys for this device, recorded by the server before the laptop uses them."""
    from field_client.sync import SyncError

    client = agent.client
    _check_passphrase(client, passphrase)
    server_x, server_ed, node_id = agent._server_keys()
    pending = pending_info(client.data_dir)
    if pending is not None and pending.get("pending") != "rotate":
        raise SyncError("有未完成的重新注册，请先运行 field-client reenroll (a re-enrollment is unfinished)",
                        code="sync.reenroll_pending")
    if pending is not None:
        info, x, ed = _read_pending(client.data_dir, passphrase)
    else:
        x, ed = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        first_seq = int(client.meta("push_seq", "0") or 0) + 1
        info = {**client.keys.info, "public": _public(x, ed), "pending": "rotate", "first_seq": first_seq,
                "rotated_at": now_iso(client.clock)}
        keystore._write_keyfile(_pending_path(client.data_dir), _doc(info, client.keys.data_key, x, ed, passphrase))
    first_seq = int(info["first_seq"])
    x_hex, ed_hex = keystore._raw_public(x).hex(), keystore._raw_public(ed).hex()
    proof = ed.sign(f"rotate|{client.device_id}|{x_hex}|{ed_hex}|{first_seq}".encode()).hex()
    request = env.seal({"device": client.device_id, "sent_ms": int(client.clock() * 1000),
                        "rotate": {"x25519": x_hex, "ed25519": ed_hex, "proof": proof, "first_seq": first_seq}},
                       type="request", sender=client.device_id, seq=0, signing_key=client.keys.ed25519,
                       recipient=server_x)
    raw = agent._exchange("/api/v1/rotate", request)
    try:  # sealed to the new key: the server has recorded it
        answer = env.open(raw, recipient_key=x, sender_key=lambda s: server_ed if s == node_id else None).payload
    except env.EnvelopeError as exc:
        raise SyncError(f"服务器回复验证失败 (the answer does not verify: {exc.code})", code="sync.bad_answer") from exc
    if answer.get("rotated") is not True or answer.get("device") != client.device_id:
        raise SyncError("服务器没有确认换钥 (the server did not confirm the rotation)", code="sync.bad_answer")
    _install(agent, passphrase, info, x, ed)
    with client.replica.transaction():
        agent._log("rotate", {"first_seq": first_seq, "fingerprint": hashlib.sha256(bytes.fromhex(ed_hex)).hexdigest()[:16]})
    return {"device_id": client.device_id, "first_seq": first_seq,
            "fingerprint": hashlib.sha256(bytes.fromhex(ed_hex)).hexdigest()[:16]}


# ---- re-enrollment ----


def reenroll(agent: Any, passphrase: str, code: str) -> dict[str, Any]:
    """Become a new device with IT's re-enrollment code; the old id's sequence is closed."""
    from field_client.sync import APP_VERSION, SyncError, decode_code

    client = agent.client
    doc = decode_code(code)
    _check_passphrase(client, passphrase)
    server = agent.server
    if not server:
        raise SyncError("本机尚未注册，请用 field-client enroll (not enrolled: use field-client enroll)",
                        code="sync.not_enrolled")
    old_id = client.device_id
    pending = pending_info(client.data_dir)
    if pending is not None and pending.get("pending") == "rotate":
        raise SyncError("有未完成的换钥，请先运行 field-client rotate-keys (a key rotation is unfinished)",
                        code="sync.rotation_pending")
    if pending is not None and pending.get("replaces") != old_id:
        pending = None  # left over from another identity: start again
    if doc.get("r") is None and pending is None:
        raise SyncError("这是普通注册码，不是重新注册码；请找 IT 运行 sync-server device reenroll "
                        "(this is an ordinary enrollment code, not a re-enrollment one)", code="enroll.bad_code")
    replaces = doc.get("r") or (pending or {}).get("replaces")
    if replaces != old_id:
        raise SyncError(f"这个重新注册码用于设备 {replaces}，本机是 {old_id} (the code is for another device)",
                        code="enroll.wrong_device")
    if doc["node"] != client.node:
        raise SyncError(f"注册码属于 {doc['node']}，本机是 {client.node} (the code is for another node)",
                        code="enroll.wrong_node")
    fp = lambda hex_key: hashlib.sha256(bytes.fromhex(hex_key)).hexdigest()[:16]  # noqa: E731
    if fp(server["x25519"]) != doc["x"] or fp(server["ed25519"]) != doc["s"]:
        raise SyncError("注册码中的服务器密钥与本机记住的不一致 (the code names another server)",
                        code="enroll.key_mismatch")
    settle_identity(agent)  # the old id's change sets are known as the old id's
    if pending is not None and pending.get("token") == doc["token"]:
        info, x, ed = _read_pending(client.data_dir, passphrase)
    else:
        x, ed = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        new_id = hashlib.sha256(keystore._raw_public(ed)).hexdigest()[:16]
        previous = [*client.keys.info.get("previous_device_ids", []), old_id]
        info = {**client.keys.info, "device_id": new_id, "public": _public(x, ed), "previous_device_ids": previous,
                "reenrolled_at": now_iso(client.clock), "pending": "reenroll", "token": doc["token"],
                "replaces": old_id}
        keystore._write_keyfile(_pending_path(client.data_dir), _doc(info, client.keys.data_key, x, ed, passphrase))
    new_id = info["device_id"]
    x_hex, ed_hex = keystore._raw_public(x).hex(), keystore._raw_public(ed).hex()
    body = {"token": doc["token"], "device_id": new_id, "x25519": x_hex, "ed25519": ed_hex, "node": client.node,
            "proof": ed.sign(f"enroll|{doc['token']}|{new_id}|{x_hex}".encode()).hex(),
            "replaces": old_id,
            "old_proof": client.keys.ed25519.sign(
                f"reenroll|{doc['token']}|{old_id}|{new_id}|{x_hex}|{ed_hex}".encode()).hex(),
            "app_version": APP_VERSION, "user": client.user}
    status, _, raw = agent.transport().post("/api/v1/reenroll", canonical_json(body).encode(), "application/json")
    answer = agent._json(status, raw)
    keys = answer.get("server", {})
    if keys.get("x25519") != server["x25519"] or keys.get("ed25519") != server["ed25519"]:
        raise SyncError("服务器密钥与本机记住的不一致，已拒绝 (the server's keys differ from the pinned ones; refused)",
                        code="enroll.key_mismatch")
    _install(agent, passphrase, info, x, ed)
    settle_identity(agent)
    return {"device_id": new_id, "replaces": old_id, "closed_seq": answer.get("closed_seq"),
            "resend": int(client.replica.conn.execute("SELECT COUNT(*) FROM outbox WHERE acked=0").fetchone()[0])}


RETIRED = """CREATE TABLE IF NOT EXISTS outgoing_retired (device_id TEXT NOT NULL, seq INTEGER NOT NULL,
  envelope BLOB NOT NULL, n_ops INTEGER NOT NULL, created_ms INTEGER NOT NULL, acked_ms INTEGER,
  PRIMARY KEY (device_id, seq))"""


def settle_identity(agent: Any) -> None:
    """Before packing: the change sets on record belong to this device id.

    After a re-enrollment the old id's change sets are retired (kept in
    ``outgoing_retired``), the ops they held that the server never acknowledged are
    packed again under the new id, and numbering starts again at 1.
    """
    from field_client.sync import SyncError

    client = agent.client
    pending = pending_info(client.data_dir)
    if pending is not None and pending.get("pending") == "rotate":
        raise SyncError("换钥尚未完成，请再运行一次 field-client rotate-keys (a key rotation is unfinished; run "
                        "field-client rotate-keys again)", code="sync.rotation_pending")
    current = client.device_id
    known = client.meta("push_device")
    if known == current:
        return
    with client.replica.transaction():
        conn = client.replica.conn
        if known is not None:
            conn.execute(RETIRED)
            conn.execute("INSERT OR IGNORE INTO outgoing_retired(device_id, seq, envelope, n_ops, created_ms, acked_ms) "
                         "SELECT ?, seq, envelope, n_ops, created_ms, acked_ms FROM outgoing", (known,))
            retired = conn.execute("SELECT COUNT(*) FROM outgoing").fetchone()[0]
            conn.execute("DELETE FROM outgoing")
            conn.execute("DELETE FROM packed")
            client._set_meta("push_seq", "0")
            agent._log("reenrolled", {"old": known, "new": current, "retired_envelopes": retired})
        client._set_meta("push_device", current)
