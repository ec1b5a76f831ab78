"""Making hostile envelopes: any header values, any payload, signed by any key; and the
Hypothesis strategies of JSON, ops and payloads that the parts draw from."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from hypothesis import strategies as st

from schema import envelope as env


def canonical(obj: Any) -> bytes:
    """Canonical JSON; a lone surrogate (which UTF-8 cannot carry) goes as its ``\\udXXX``
    escape, as any JSON writer may send it."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def craft(
    payload: Any,
    *,
    signing_key: Ed25519PrivateKey,
    recipient: X25519PublicKey,
    sender: Any,
    seq: Any = 0,
    type: Any = "changeset",
    header: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    body: bytes | None = None,
    compressed: bytes | None = None,
) -> bytes:
    """An envelope laid out as docs/protocol.md says, with whatever values the caller wants:
    ``header`` overrides (or adds) header keys, ``drop`` removes some, ``body`` replaces the
    payload bytes before compression, ``compressed`` after it. Signed and sealed properly."""
    raw = body if body is not None else canonical(payload)
    head: dict[str, Any] = {"v": 1, "type": type, "sender": sender, "recipient": env.key_fingerprint(recipient),
                            "seq": seq, "schema_version": 1, "suite": env.SUITE_NAME, "compression": "zstd",
                            "size": len(raw)}
    head.update(header or {})
    for k in drop:
        head.pop(k, None)
    head_bytes = canonical(head)
    inner = compressed if compressed is not None else zstandard.ZstdCompressor(level=3).compress(raw)
    ct = env.SUITE.encrypt(inner, recipient, info=head_bytes)
    return sign(env.MAGIC + struct.pack(">I", len(head_bytes)) + head_bytes + struct.pack(">I", len(ct)) + ct,
                signing_key)


def sign(signed: bytes, key: Ed25519PrivateKey) -> bytes:
    return signed + key.sign(signed)


def resign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """The same envelope with its last 64 bytes replaced by a fresh signature of the rest."""
    return sign(data[:-64], key)


def fresh_id() -> str:
    return os.urandom(16).hex()


# ---- strategies ----

# strings with a lone surrogate: valid JSON (``"\\ud800"``), not encodable as UTF-8
SURROGATES = st.sampled_from(["\ud800", "a\udfff", "\udc00\ud800", "王\udbff"])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                            max_size=4),
                    max_leaves=12)
WEIRD_INT = st.one_of(st.integers(min_value=-3, max_value=10**6), st.sampled_from([2**31, 2**32, 2**53, 2**63 - 1,
                      2**63, 2**64, 2**80, -(2**63) - 1]), st.booleans(), st.floats(allow_nan=True), st.text(max_size=8),
                      st.none())
HEX16 = st.binary(min_size=16, max_size=16).map(bytes.hex)


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` (Hypothesis leans to small integers, so ``integers(0, n) == 0``
    would be true far more often)."""
    return st.sampled_from([False] * (n - 1) + [True])


def reauthor(raw_ops: list[dict[str, Any]], old_device: str, new_device: str) -> list[dict[str, Any]]:
    """The village's ops as if ``new_device`` had made them, under fresh ids (a new case)."""
    text = json.dumps(raw_ops, ensure_ascii=False).replace(old_device, new_device)
    ids = {op[k] for op in raw_ops for k in ("op_id", "case_id", "entity_id")}
    for old in ids:
        text = text.replace(old, fresh_id())
    return json.loads(text)  # type: ignore[no-any-return]


@st.composite
def mutated_ops(draw: st.DrawFn, base: list[dict[str, Any]]) -> list[Any]:
    """A list of ops: valid ones (from ``base``) with a few fields replaced, dropped or
    added, and now and then something that is not an op at all."""
    ops: list[Any] = []
    for op in base:
        if draw(rarely(10)):
            continue
        op = json.loads(json.dumps(op))
        for _ in range(draw(st.integers(0, 3))):
            where = draw(st.sampled_from(["top", "values", "base"]))
            target = op if where == "top" else op.setdefault(where, {})
            if not isinstance(target, dict):
                continue
            keys = sorted(target) or ["x"]
            key = draw(st.sampled_from(keys) | st.text(max_size=10))
            if draw(st.booleans()) and key in target:
                del target[key]
            else:
                # now and then a lone surrogate: the whole envelope is refused for it, so rarely
                target[key] = draw(SURROGATES) if draw(rarely(40)) else draw(JSON | WEIRD_INT)
        ops.append(op)
    if draw(rarely(5)):
        ops.insert(draw(st.integers(0, len(ops))), draw(JSON))
    return ops


def pull_payloads(device: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        JSON,
        st.fixed_dictionaries({"device": st.just(device) | st.text(max_size=20)},
                              optional={"after": WEIRD_INT | JSON, "limit": WEIRD_INT | JSON, "epoch": JSON | SURROGATES,
                                        "rules_sha256": JSON, "sent_ms": WEIRD_INT}),
    )


def verify_payloads(device: str) -> st.SearchStrategy[Any]:
    buckets = st.dictionaries(st.integers(-(2**70), 2**70).map(str) | st.text(max_size=12), JSON | st.text(max_size=64),
                              max_size=6)
    inner = st.one_of(JSON, st.fixed_dictionaries(
        {"digest": st.text(max_size=64) | JSON, "bucket_ms": st.sampled_from([86400000, 3600000]) | WEIRD_INT,
         "buckets": buckets | JSON}))
    return st.one_of(JSON, st.fixed_dictionaries({"device": st.just(device) | st.text(max_size=20),
                                                  "sent_ms": WEIRD_INT, "verify": inner}))


def rotate_payloads(device: str) -> st.SearchStrategy[Any]:
    hexkey = st.binary(min_size=0, max_size=40).map(bytes.hex) | st.text(max_size=70)
    inner = st.one_of(JSON, st.fixed_dictionaries(
        {"x25519": hexkey | JSON, "ed25519": hexkey | JSON, "proof": hexkey | JSON, "first_seq": WEIRD_INT}))
    return st.one_of(JSON, st.fixed_dictionaries({"device": st.just(device) | st.text(max_size=20),
                                                  "sent_ms": WEIRD_INT, "rotate": inner}))


def header_overrides() -> st.SearchStrategy[dict[str, Any]]:
    """Most of the time nothing; sometimes one or two header values that are odd."""
    keys = st.sampled_from(list(env.HEADER_KEYS) + ["extra"])
    odd = st.dictionaries(keys, WEIRD_INT | JSON | SURROGATES, min_size=1, max_size=2)
    return rarely(4).flatmap(lambda yes: odd if yes else st.just({}))
