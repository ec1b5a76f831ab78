"""The device's keys, wrapped under the passphrase, and the at-rest cipher for personal data.

``device.json`` in the data folder holds the device id, its node, the public keys, and
one AES-GCM blob that holds the private keys (X25519 to receive, Ed25519 to sign) and
the data key. The blob's key is derived from the passphrase with scrypt. Nothing secret
is stored in the clear; a wrong passphrase fails the GCM tag and changes nothing.

``Sealer`` encrypts personal fields with AES-SIV (deterministic, authenticated): equal
values in the same field give equal tokens, so the merge sees no false conflicts and a
search by exact value still works. The field's name is bound as associated data, so a
token cannot be moved to another field. Token: ``enc1:`` + urlsafe base64.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from field_client.errors import AlreadyInitialised, KeyfileDamaged, NotInitialised, WrongPassphrase
from schema.entities import ENTITIES
from schema.ops import Op
from schema.validation import SEALED_PREFIX

KEYFILE = "device.json"
KEYFILE_FORMAT = 1
SCRYPT_N = 2**15
RAW = serialization.Encoding.Raw


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode())


def _raw_private(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)


def _kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


@dataclass(frozen=True)
class DeviceKeys:
    """An unlocked device: its public description and its secrets."""

    info: dict[str, Any]
    data_key: bytes
    x25519: X25519PrivateKey
    ed25519: Ed25519PrivateKey

    @property
    def device_id(self) -> str:
        return str(self.info["device_id"])


def keyfile_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEYFILE


def exists(data_dir: str | Path) -> bool:
    return keyfile_path(data_dir).exists()


def _wrap(info: dict[str, Any], secrets: dict[str, str], passphrase: str) -> dict[str, Any]:
    salt = os.urandom(16)
    nonce = os.urandom(12)
    kek = _kek(passphrase, salt, SCRYPT_N, 8, 1)
    blob = AESGCM(kek).encrypt(
        nonce, json.dumps(secrets).encode(), info["device_id"].encode()
    )
    return {
        **info,
        "kdf": {"name": "scrypt", "salt": b64(salt), "n": SCRYPT_N, "r": 8, "p": 1},
        "wrapped": {"nonce": b64(nonce), "ciphertext": b64(blob)},
    }


def _write_keyfile(path: Path, doc: dict[str, Any]) -> None:
    """Write ``device.json`` whole or not at all (mode 0600, fsync, atomic rename)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def create(data_dir: str | Path, passphrase: str, info: dict[str, Any]) -> DeviceKeys:
    """Make a new device's keys and write ``device.json`` (never over an existing one)."""
    path = keyfile_path(data_dir)
    if path.exists():
        raise AlreadyInitialised(
            f"这里已经有一台设备 (a device already exists in {path.parent}); 不会覆盖 / not overwritten"
        )
    x = X25519PrivateKey.generate()
    ed = Ed25519PrivateKey.generate()
    data_key = AESSIV.generate_key(512)
    device_id = hashlib.sha256(_raw_public(ed)).hexdigest()[:16]
    full = {
        "format": KEYFILE_FORMAT,
        **info,
        "device_id": device_id,
        "public": {"x25519": b64(_raw_public(x)), "ed25519": b64(_raw_public(ed))},
    }
    secrets = {"data_key": b64(data_key), "x25519": b64(_raw_private(x)), "ed25519": b64(_raw_private(ed))}
    doc = _wrap(full, secrets, passphrase)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_keyfile(path, doc)
    return DeviceKeys(full, data_key, x, ed)


def read_info(data_dir: str | Path) -> dict[str, Any]:
    """The public part of ``device.json`` (no passphrase needed)."""
    path = keyfile_path(data_dir)
    if not path.exists():
        raise NotInitialised(
            f"{path.parent} 中没有设备，请先运行 field-client init "
            f"(no device in {path.parent}; run field-client init first)"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != KEYFILE_FORMAT or "wrapped" not in doc:
            raise ValueError("unknown format")
        return dict(doc)
    except (ValueError, OSError) as exc:
        raise KeyfileDamaged(
            f"密钥文件 {path} 已损坏，无法读取 (the key file is damaged: {exc}); 请联系 IT",
            details={"path": str(path)},
        ) from exc


def unlock(data_dir: str | Path, passphrase: str) -> DeviceKeys:
    """Unlock the device with its passphrase, or raise WrongPassphrase."""
    doc = read_info(data_dir)
    try:
        kdf = doc["kdf"]
        kek = _kek(passphrase, unb64(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        blob = AESGCM(kek).decrypt(
            unb64(doc["wrapped"]["nonce"]),
            unb64(doc["wrapped"]["ciphertext"]),
            doc["device_id"].encode(),
        )
    except InvalidTag as exc:
        raise WrongPassphrase("口令不对，没有做任何更改 (wrong passphrase; nothing was changed)") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise KeyfileDamaged(f"密钥文件已损坏 (the key file is damaged: {exc})") from exc
    secrets = json.loads(blob)
    info = {k: v for k, v in doc.items() if k not in ("kdf", "wrapped")}
    return DeviceKeys(
        info,
        unb64(secrets["data_key"]),
        X25519PrivateKey.from_private_bytes(unb64(secrets["x25519"])),
        Ed25519PrivateKey.from_private_bytes(unb64(secrets["ed25519"])),
    )


def update_info(data_dir: str | Path, keys: DeviceKeys, passphrase: str, **changes: Any) -> DeviceKeys:
    """Rewrite ``device.json`` with changed public info (e.g. enrollment), same secrets."""
    info = {**keys.info, **changes}
    secrets = {
        "data_key": b64(keys.data_key),
        "x25519": b64(_raw_private(keys.x25519)),
        "ed25519": b64(_raw_private(keys.ed25519)),
    }
    doc = _wrap(info, secrets, passphrase)
    path = keyfile_path(data_dir)
    _write_keyfile(path, doc)
    return DeviceKeys(info, keys.data_key, keys.x25519, keys.ed25519)


class Sealer:
    """Encrypts and decrypts personal fields (AES-SIV, deterministic)."""

    def __init__(self, data_key: bytes) -> None:
        self._siv = AESSIV(data_key)
        self._personal = {name: set(spec.personal_fields) for name, spec in ENTITIES.items()}

    def seal_value(self, entity: str, field: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.startswith(SEALED_PREFIX)):
            return value
        plain = json.dumps(value, ensure_ascii=False).encode("utf-8")
        token = self._siv.encrypt(plain, [f"{entity}.{field}".encode()])
        return SEALED_PREFIX + b64(token)

    def open_value(self, entity: str, field: str, value: Any) -> Any:
        if not (isinstance(value, str) and value.startswith(SEALED_PREFIX)):
            return value
        try:
            plain = self._siv.decrypt(unb64(value[len(SEALED_PREFIX) :]), [f"{entity}.{field}".encode()])
        except (InvalidTag, ValueError):
            return "[无法解密 / cannot decrypt]"
        return json.loads(plain)

    def is_personal(self, entity: str, field: str) -> bool:
        return field in self._personal.get(entity, ())

    def _map_values(self, op: Op, fn: Any) -> Op:
        personal = self._personal.get(op.entity, set())
        values = op.values
        if op.kind in ("create", "set"):
            if not personal.intersection(values):
                return op
            values = {
                k: fn(op.entity, k, v) if k in personal else v for k, v in values.items()
            }
        elif op.kind == "resolve" and values.get("field") in personal:
            values = {**values, "value": fn(op.entity, values["field"], values.get("value"))}
        else:
            return op
        return Op(**{**op.to_dict(), "values": values})

    def seal_op(self, op: Op) -> Op:
        """The op with its personal values sealed (for the laptop's op log)."""
        return self._map_values(op, self.seal_value)

    def open_op(self, op: Op) -> Op:
        """The op with its personal values in the clear (to show, or to send to the server)."""
        return self._map_values(op, self.open_value)

    def open_row(self, entity: str, row: dict[str, Any]) -> dict[str, Any]:
        personal = self._personal.get(entity, set())
        return {k: self.open_value(entity, k, v) if k in personal else v for k, v in row.items()}
