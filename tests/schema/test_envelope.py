"""The envelope: the documented test vector, tampering, wrong keys, and hostile bytes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from schema import envelope as E
from schema.ops import ChangeSet, Op, canonical_json

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
DEV = "0123456789abcdef"


def vector() -> dict[str, str]:
    text = PROTOCOL.read_text(encoding="utf-8")
    block = text.split("## Test vector", 1)[1]
    return dict(re.findall(r"^(\w+)\s*=\s*(.+)$", block, flags=re.M))


def make_op(i: int = 0, text: str = "回访：双方已履行协议。") -> Op:
    return Op(
        op_id=f"{i:032x}", stamp=f"{1795000000000 + i:018d}.00000.{DEV}", device=DEV, author="li.ming",
        entity="note", entity_id=f"{i + 1:032x}", case_id="0f0e0d0c0b0a09080706050403020100",
        kind="create", values={"text": text, "written_at": "2026-11-18T10:00:00+08:00"}, base={},
        occurred_at="2026-11-18T10:00:00+08:00", schema_version=1,
    )


@pytest.fixture(scope="module")
def keys() -> tuple[Ed25519PrivateKey, X25519PrivateKey]:
    return Ed25519PrivateKey.generate(), X25519PrivateKey.generate()


def sealed(keys: tuple[Ed25519PrivateKey, X25519PrivateKey], n: int = 2) -> bytes:
    author, server = keys
    cs = ChangeSet(DEV, 7, tuple(make_op(i) for i in range(n)))
    return E.seal_changeset(cs, signing_key=author, recipient=server.public_key())


def opener(keys: tuple[Ed25519PrivateKey, X25519PrivateKey]):  # type: ignore[no-untyped-def]
    author, server = keys
    return {"recipient_key": server, "sender_key": lambda s: author.public_key() if s == DEV else None}


def test_documented_vector_opens_to_the_documented_header_and_payload() -> None:
    v = vector()
    author = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["author_ed25519_private"]))
    server = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["server_x25519_private"]))
    env = bytes.fromhex(v["envelope_hex"])
    opened = E.open(env, recipient_key=server,
                    sender_key=lambda s: author.public_key() if s == DEV else None)
    assert canonical_json(opened.header) == v["header"]
    assert canonical_json(opened.payload) == v["payload"]
    assert E.key_fingerprint(server.public_key()) == opened.header["recipient"]
    cs, bad = E.open_changeset(env, recipient_key=server, sender_key=lambda s: author.public_key())
    assert bad == [] and cs.seq == 1 and cs.ops[0].values["text"] == "回访：双方已履行协议。"


def test_round_trip_keeps_every_op(keys) -> None:  # type: ignore[no-untyped-def]
    cs, bad = E.open_changeset(sealed(keys, 5), **opener(keys))
    assert bad == []
    assert cs == ChangeSet(DEV, 7, tuple(make_op(i) for i in range(5)))


def test_one_flipped_byte_anywhere_is_refused(keys) -> None:  # type: ignore[no-untyped-def]
    env = sealed(keys, 1)
    codes = set()
    for pos in range(len(env)):
        bad = bytearray(env)
        bad[pos] ^= 0x01
        with pytest.raises(E.EnvelopeError) as exc:
            E.open(bytes(bad), **opener(keys))
        codes.add(exc.value.code)
    assert codes <= {
        "envelope.bad_magic", "envelope.truncated", "envelope.bad_header",
        "envelope.unknown_sender", "envelope.bad_signature",
    }
    assert "envelope.bad_signature" in codes


def test_every_truncation_is_refused(keys) -> None:  # type: ignore[no-untyped-def]
    env = sealed(keys, 1)
    for n in range(len(env)):
        with pytest.raises(E.EnvelopeError):
            E.open(env[:n], **opener(keys))


def test_unknown_sender_forged_signature_and_wrong_recipient_have_distinct_codes(keys) -> None:  # type: ignore[no-untyped-def]
    author, server = keys
    env = sealed(keys)
    with pytest.raises(E.EnvelopeError) as unknown:
        E.open(env, recipient_key=server, sender_key=lambda s: None)
    forger = Ed25519PrivateKey.generate()
    with pytest.raises(E.EnvelopeError) as forged:
        E.open(env, recipient_key=server, sender_key=lambda s: forger.public_key())
    other_server = X25519PrivateKey.generate()
    with pytest.raises(E.EnvelopeError) as wrong:
        E.open(env, recipient_key=other_server, sender_key=lambda s: author.public_key())
    assert (unknown.value.code, forged.value.code, wrong.value.code) == (
        "envelope.unknown_sender", "envelope.bad_signature", "envelope.wrong_recipient",
    )


def test_a_bad_op_inside_is_returned_apart_and_the_others_kept(keys) -> None:  # type: ignore[no-untyped-def]
    author, server = keys
    payload = ChangeSet(DEV, 3, (make_op(0), make_op(1))).to_dict()
    payload["ops"].insert(1, {**payload["ops"][0], "entity": "spaceship"})
    env = E.seal(payload, type="changeset", sender=DEV, seq=3, signing_key=author, recipient=server.public_key())
    cs, bad = E.open_changeset(env, **opener(keys))
    assert [op.op_id for op in cs.ops] == [make_op(0).op_id, make_op(1).op_id]
    assert [(i, e.code) for i, e in bad] == [(1, "op.unknown_entity")]


def test_a_change_set_whose_payload_disagrees_with_its_header_is_refused(keys) -> None:  # type: ignore[no-untyped-def]
    author, server = keys
    payload = ChangeSet(DEV, 3, (make_op(0),)).to_dict()
    env = E.seal(payload, type="changeset", sender=DEV, seq=4, signing_key=author, recipient=server.public_key())
    with pytest.raises(E.EnvelopeError) as exc:
        E.open_changeset(env, **opener(keys))
    assert exc.value.code == "envelope.bad_payload"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_envelope_errors(data: bytes) -> None:
    keys = (Ed25519PrivateKey.from_private_bytes(bytes(32)), X25519PrivateKey.from_private_bytes(bytes(32)))
    with pytest.raises(E.EnvelopeError):
        E.open(E.MAGIC + data if data[:1] == b"\x00" else data, **opener(keys))
