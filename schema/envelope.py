"""The wire envelope: a sealed, signed payload; bytes in, bytes out (``docs/protocol.md``).

Layout (all integers big-endian)::

    offset  size  field
    0       4     magic  b"MQE1"
    4       4     H = header length
    8       H     header: canonical JSON (UTF-8), see HEADER_KEYS
    8+H     4     C = ciphertext length
    12+H    C     HPKE single-shot output: enc (32) || AEAD ciphertext (incl. 16-byte tag)
    12+H+C  64    Ed25519 signature by the sender over bytes [0, 12+H+C)

The payload (canonical JSON of a change set or an answer) is compressed with zstd and
sealed to the recipient's X25519 key with HPKE (RFC 9180, base mode: DHKEM(X25519,
HKDF-SHA256), HKDF-SHA256, AES-128-GCM) with the header bytes as ``info``, so a header
cannot be moved to another ciphertext. The sender signs header and ciphertext. ``open``
checks the signature **before** it decrypts: an unknown or forged sender never gets the
server to spend a decryption, and a relay can neither read nor alter what it carries.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from schema.errors import OpInvalid, SchemaError
from schema.ops import SCHEMA_VERSION, ChangeSet, canonical_json
from schema.validation import partition_ops

MAGIC = b"MQE1"
SIG_LEN = 64
MAX_HEADER = 4096
MAX_ENVELOPE = 16 * 1024 * 1024  # 16 MiB sealed; chunks are far smaller
MAX_PAYLOAD = 64 * 1024 * 1024  # after decompression
MAX_SEQ = 2**63 - 1  # a sequence number is stored as an SQLite INTEGER (signed 64-bit)


def is_seq(v: Any) -> bool:
    """A sequence number, cursor or clock reading: an integer (not a bool) from 0 to
    ``MAX_SEQ``, which an SQLite INTEGER column holds."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEQ

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
SUITE_NAME = "X25519-HKDF_SHA256-AES_128_GCM"
HEADER_KEYS = ("v", "type", "sender", "recipient", "seq", "schema_version", "suite", "compression", "size")
TYPES = ("changeset", "answer", "request")


class EnvelopeError(SchemaError):
    """An envelope that cannot be accepted; ``code`` says why (``envelope.*``)."""

    code = "envelope.invalid"


def _fail(code: str, message: str, **details: Any) -> EnvelopeError:
    return EnvelopeError(message, code=f"envelope.{code}", details=details or None)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")  # what a surrogate looks like in JSON text


def _is_text(doc: Any) -> bool:
    """Every string (key or value) in ``doc`` is Unicode text: JSON may escape a lone surrogate
    (``"\\ud800"``), which no UTF-8 column, file or answer can hold."""
    try:
        canonical_json(doc).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_fingerprint(public: X25519PublicKey | Ed25519PublicKey) -> str:
    """16 hex of SHA-256 of the raw public key: how headers name a recipient."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Sealed:
    """What ``open`` returns: the header and the payload, verified and decrypted."""

    header: dict[str, Any]
    payload: dict[str, Any]


def seal(
    payload: dict[str, Any],
    *,
    type: str,
    sender: str,
    seq: int,
    signing_key: Ed25519PrivateKey,
    recipient: X25519PublicKey,
) -> bytes:
    """Compress, seal to ``recipient``, sign with ``signing_key``: the envelope bytes."""
    if type not in TYPES:
        raise _fail("bad_header", f"unknown envelope type {type!r}")
    body = canonical_json(payload).encode("utf-8")
    header = {
        "v": 1,
        "type": type,
        "sender": sender,
        "recipient": key_fingerprint(recipient),
        "seq": seq,
        "schema_version": SCHEMA_VERSION,
        "suite": SUITE_NAME,
        "compression": "zstd",
        "size": len(body),
    }
    head = canonical_json(header).encode("utf-8")
    ct = SUITE.encrypt(zstandard.ZstdCompressor(level=19).compress(body), recipient, info=head)
    signed = MAGIC + struct.pack(">I", len(head)) + head + struct.pack(">I", len(ct)) + ct
    return signed + signing_key.sign(signed)


def read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """Parse the header without verifying anything: (header, end of ciphertext)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("bad_format", "an envelope is bytes")
    data = bytes(data)
    if len(data) > MAX_ENVELOPE:
        raise _fail("too_large", f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE}")
    if len(data) < 12 + SIG_LEN:
        raise _fail("truncated", f"envelope of {len(data)} bytes is too short")
    if data[:4] != MAGIC:
        raise _fail("bad_magic", "not a Minqing envelope (bad magic)")
    (h,) = struct.unpack(">I", data[4:8])
    if h > MAX_HEADER or 8 + h + 4 > len(data):
        raise _fail("truncated", "header length runs past the end")
    try:
        header = json.loads(data[8 : 8 + h].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise _fail("bad_header", f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or set(header) != set(HEADER_KEYS):
        raise _fail("bad_header", "header keys are not the expected ones")
    if not _is_text(header):
        raise _fail("bad_header", "header holds a string that is not Unicode text (a lone surrogate)")
    if header["v"] != 1 or header["type"] not in TYPES or header["suite"] != SUITE_NAME:
        raise _fail("bad_header", "unsupported envelope version, type or suite")
    if not is_seq(header["seq"]) or not isinstance(header["sender"], str):
        raise _fail("bad_header", "sender or seq malformed")
    (c,) = struct.unpack(">I", data[8 + h : 12 + h])
    end = 12 + h + c
    if end + SIG_LEN != len(data):
        raise _fail("truncated", "ciphertext length does not match the envelope size")
    return header, end


def open(
    data: bytes,
    *,
    recipient_key: X25519PrivateKey,
    sender_key: Callable[[str], Ed25519PublicKey | None],
) -> Sealed:
    """Verify the signature, then decrypt and decompress: the header and the payload."""
    header, end = read_header(data)
    data = bytes(data)
    public = sender_key(header["sender"])
    if public is None:
        raise _fail("unknown_sender", f"unknown sender {header['sender'][:40]!r}", sender=header["sender"][:40])
    try:
        public.verify(data[end:], data[:end])
    except InvalidSignature as exc:
        raise _fail("bad_signature", "the signature does not match the sender's key") from exc
    if header["recipient"] != key_fingerprint(recipient_key.public_key()):
        raise _fail("wrong_recipient", "the envelope is sealed to another recipient",
                    recipient=header["recipient"])
    h = struct.unpack(">I", data[4:8])[0]
    head = data[8 : 8 + h]
    try:
        compressed = SUITE.decrypt(data[12 + h : end], recipient_key, info=head)
    except (InvalidTag, ValueError) as exc:
        raise _fail("cannot_decrypt", "the ciphertext does not open with this key") from exc
    try:
        body = zstandard.ZstdDecompressor().decompress(compressed, max_output_size=MAX_PAYLOAD)
        payload = json.loads(body.decode("utf-8"))
    except (zstandard.ZstdError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail("bad_payload", f"the payload does not decode: {exc}") from exc
    if not isinstance(payload, dict) or len(body) != header["size"]:
        raise _fail("bad_payload", "the payload is not an object of the announced size")
    if _SURROGATE_ESCAPE.search(body) and not _is_text(payload):
        raise _fail("bad_payload", "the payload holds a string that is not Unicode text (a lone surrogate)")
    return Sealed(header, payload)


def seal_changeset(cs: ChangeSet, *, signing_key: Ed25519PrivateKey, recipient: X25519PublicKey) -> bytes:
    return seal(cs.to_dict(), type="changeset", sender=cs.device, seq=cs.seq,
                signing_key=signing_key, recipient=recipient)


def changeset_from(sealed: Sealed) -> tuple[ChangeSet, list[tuple[int, OpInvalid]]]:
    """The change set inside an opened envelope: (its valid ops, (index, error) of bad ones).

    One bad op never blocks the others: the caller quarantines the bad ones.
    """
    p = sealed.payload
    if (
        sealed.header["type"] != "changeset"
        or p.get("device") != sealed.header["sender"]
        or p.get("seq") != sealed.header["seq"]
        or not isinstance(p.get("ops"), list)
    ):
        raise _fail("bad_payload", "the change set does not match its header")
    good, bad = partition_ops(p["ops"])
    version = p.get("schema_version", SCHEMA_VERSION)
    cs = ChangeSet(device=p["device"], seq=p["seq"], ops=tuple(good),
                   schema_version=version if isinstance(version, int) else SCHEMA_VERSION)
    return cs, bad


def open_changeset(
    data: bytes,
    *,
    recipient_key: X25519PrivateKey,
    sender_key: Callable[[str], Ed25519PublicKey | None],
) -> tuple[ChangeSet, list[tuple[int, OpInvalid]]]:
    """Open a change-set envelope: (the change set of its valid ops, bad ops with errors)."""
    return changeset_from(open(data, recipient_key=recipient_key, sender_key=sender_key))
