"""The server's key pairs: X25519 to receive, Ed25519 to sign (``server_keys.json``, mode 0600).

The file lives in the server's data folder, readable by the server account only; the
server room is its protection (DESIGN.md). The node id (16 chars) names the server as
the author of its own ops and as the sender of its envelopes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from schema.envelope import key_fingerprint
from sync_server.errors import ConfigError

KEYFILE = "server_keys.json"
RAW = serialization.Encoding.Raw


def _priv(k: X25519PrivateKey | Ed25519PrivateKey) -> str:
    return k.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()).hex()


def pub_hex(k: object) -> str:
    """Hex of a raw public key (given the public key or its private key)."""
    public = k.public_key() if hasattr(k, "public_key") else k
    return public.public_bytes(RAW, serialization.PublicFormat.Raw).hex()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ServerKeys:
    node_id: str
    x25519: X25519PrivateKey
    ed25519: Ed25519PrivateKey

    @property
    def x_fingerprint(self) -> str:
        return key_fingerprint(self.x25519.public_key())

    @property
    def s_fingerprint(self) -> str:
        return key_fingerprint(self.ed25519.public_key())


def create(data_dir: Path) -> ServerKeys:
    path = data_dir / KEYFILE
    if path.exists():
        raise ConfigError(f"{path} already exists; refusing to replace the server's keys")
    x = X25519PrivateKey.generate()
    ed = Ed25519PrivateKey.generate()
    node_id = "s" + hashlib.sha256(bytes.fromhex(pub_hex(ed))).hexdigest()[:15]
    doc = {"node_id": node_id, "x25519": _priv(x), "ed25519": _priv(ed)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    return ServerKeys(node_id, x, ed)


def load(data_dir: Path) -> ServerKeys:
    path = data_dir / KEYFILE
    try:
        doc = json.loads(path.read_text())
        return ServerKeys(
            doc["node_id"],
            X25519PrivateKey.from_private_bytes(bytes.fromhex(doc["x25519"])),
            Ed25519PrivateKey.from_private_bytes(bytes.fromhex(doc["ed25519"])),
        )
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{data_dir} 不是服务器数据目录，请先运行 sync-server init "
            f"(no server here; run sync-server init --data {data_dir})",
            code="server.not_initialised",
        ) from exc
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is damaged: {exc}", code="server.keys_damaged") from exc
