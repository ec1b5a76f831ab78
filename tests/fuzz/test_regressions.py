"""The bugs the fuzzer found, each pinned by a test (docs/fuzz.md "What it found").

In-process: the server's Flask app with one enrolled laptop (``WsgiTransport``).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from field_client.sync import SyncError
from schema import envelope as env
from sync_server.bundles import import_folder
from sync_server.lifecycle import rotate_message
from tests.fuzz import craft as c
from tests.fuzz.conftest import Site


def code_of(body: Any) -> str:
    return str(body["error"]["code"])


# ---- schema/envelope.py: seq past SQLite's INTEGER, JSON nested too deep ----


@pytest.mark.parametrize("seq", [2**63, 2**64, 2**80, -1, True])
def test_read_header_refuses_a_seq_that_no_ledger_can_hold(seq: Any) -> None:
    """Was: 500 (OverflowError binding the number to SQLite) on /push, from anyone."""
    data = c.craft({}, signing_key=Ed25519PrivateKey.generate(), recipient=X25519PrivateKey.generate().public_key(),
                   sender="0123456789abcdef", seq=seq)
    with pytest.raises(env.EnvelopeError) as err:
        env.read_header(data)
    assert err.value.code == "envelope.bad_header"


def test_read_header_takes_the_largest_seq() -> None:
    data = c.craft({}, signing_key=Ed25519PrivateKey.generate(), recipient=X25519PrivateKey.generate().public_key(),
                   sender="0123456789abcdef", seq=env.MAX_SEQ)
    assert env.read_header(data)[0]["seq"] == 2**63 - 1


def test_a_header_nested_too_deep_is_a_bad_header() -> None:
    """Was: RecursionError out of the parser (a 500 on every envelope endpoint)."""
    deep = b"[" * 2040 + b"]" * 2040
    data = env.MAGIC + struct.pack(">I", len(deep)) + deep + struct.pack(">I", 48) + b"\0" * (48 + 64)
    with pytest.raises(env.EnvelopeError) as err:
        env.read_header(data)
    assert err.value.code == "envelope.bad_header"


def test_a_payload_nested_too_deep_is_a_bad_payload() -> None:
    ed, x = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    data = c.craft(None, signing_key=ed, recipient=x.public_key(), sender="0123456789abcdef", type="request",
                   body=b"[" * 5000 + b"]" * 5000)
    with pytest.raises(env.EnvelopeError) as err:
        env.open(data, recipient_key=x, sender_key=lambda s: ed.public_key())
    assert err.value.code == "envelope.bad_payload"


# ---- the HTTP API ----


@pytest.mark.parametrize("seq", [2**63, 2**70])
def test_push_with_a_huge_seq_is_refused_not_a_500(site: Site, seq: int) -> None:
    mine = c.craft({"device": site.device, "seq": seq, "schema_version": 1, "ops": []},
                   signing_key=site.laptop.keys.ed25519, recipient=site.keys.x25519.public_key(),
                   sender=site.device, seq=seq)
    unknown = c.craft({}, signing_key=Ed25519PrivateKey.generate(), recipient=site.keys.x25519.public_key(),
                      sender="f" * 16, seq=seq)
    for data in (mine, unknown):
        status, body = site.post("/api/v1/push", data)
        assert (status, code_of(body)) == (400, "envelope.bad_header")


@pytest.mark.parametrize("after", [2**63, 2**80])
def test_pull_after_past_sqlite_integer_is_a_bad_request(site: Site, after: int) -> None:
    """Was: 500 (OverflowError in the ops query)."""
    status, body = site.post("/api/v1/pull", site.request({"device": site.device, "after": after, "limit": 5}))
    assert (status, code_of(body)) == (400, "sync.bad_request")


@pytest.mark.parametrize("sent", [-(2**80), 2**80, -1])
def test_pull_with_an_absurd_clock_is_answered_and_keeps_no_offset(site: Site, sent: int) -> None:
    """Was: 500 (the clock offset now - sent_ms did not fit the devices table)."""
    status, body = site.post("/api/v1/pull", site.request({"device": site.device, "after": 0, "sent_ms": sent}))
    assert status == 200, body


@pytest.mark.parametrize("first_seq", [2**63, 2**80, True])
def test_rotation_with_a_valid_proof_but_an_impossible_first_seq(site: Site, first_seq: Any) -> None:
    """Was: 500 for 2**63 and more (the retired key's until_seq did not fit); True passed as 1."""
    new_ed, new_x = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    ed_hex, x_hex = new_ed.public_key().public_bytes_raw().hex(), new_x.public_key().public_bytes_raw().hex()
    rot = {"x25519": x_hex, "ed25519": ed_hex, "first_seq": first_seq,
           "proof": new_ed.sign(rotate_message(site.device, x_hex, ed_hex, first_seq)).hex()}
    status, body = site.post("/api/v1/rotate", site.request({"device": site.device, "sent_ms": 0, "rotate": rot}))
    assert (status, code_of(body)) == (400, "sync.bad_request")


@pytest.mark.parametrize("path", ["/api/v1/enroll", "/api/v1/reenroll"])
@pytest.mark.parametrize("body", [b"[" * 100000 + b"]" * 100000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
                                  b'{"token": ' + b"[" * 3000 + b"]" * 3000 + b"}"])
def test_json_nested_too_deep_is_a_bad_request(site: Site, path: str, body: bytes) -> None:
    """Was: 500 (RecursionError out of Flask's get_json, which catches only ValueError)."""
    status, doc = site.post(path, body, "application/json")
    assert (status, code_of(doc)) == (400, "sync.bad_request")


def test_a_wrong_method_has_a_documented_code(site: Site) -> None:
    r = site.client.get("/api/v1/push")
    assert r.status_code == 405 and r.get_json()["error"]["code"] == "sync.method_not_allowed"
    assert "`sync.method_not_allowed`" in (Path(__file__).parents[2] / "docs" / "sync.md").read_text(encoding="utf-8")


# ---- bundles ----


def test_server_import_passes_over_a_folder_named_like_a_bundle(site: Site, tmp_path: Path) -> None:
    """Was: IsADirectoryError out of import_folder (``sync-server import`` said "unexpected error")."""
    stick = tmp_path / "stick"
    (stick / f"mq-{site.device}-00000001.mqe").mkdir(parents=True)
    (stick / f"mq-{site.device}-00000002.mqe").write_bytes(b"")
    with site.service() as svc:
        report = import_folder(svc, stick)
    assert report.files == 1 and [r["code"] for r in report.refused] == ["envelope.truncated"]


def test_laptop_import_passes_over_a_folder_named_like_an_answer(site: Site, tmp_path: Path) -> None:
    back = tmp_path / "back"
    (back / f"mq-answer-{site.device}-000001.mqe").mkdir(parents=True)
    with pytest.raises(SyncError) as err:
        site.agent.import_bundle(back)
    assert err.value.code == "bundle.none"


@pytest.mark.parametrize("payload", [
    {"acks": 5}, {"acks": ["x"]}, {"acks": [None]}, {"cursor": "-"}, {"cursor": None}, {"cursor": -1},
    {"ops": 7}, {"seq_status": {"through": "x"}}, {"seq_status": {"missing": 3}},
    {"seq_status": {"missing": [{}]}}, {"quarantined": 1}, {"acks": [2**63]}, {"cursor": 2**80},
    {"seq_status": {"through": 2**64}},
])
def test_laptop_refuses_a_malformed_answer_signed_by_its_server(site: Site, tmp_path: Path,
                                                                payload: dict[str, Any]) -> None:
    """Was: TypeError / ValueError out of import_bundle (and out of a pull's answer)."""
    back = tmp_path / "back"
    back.mkdir()
    before = site.laptop.meta("pull_cursor")
    data = c.craft({"erase": False, **payload}, signing_key=site.keys.ed25519,
                   recipient=site.laptop.keys.x25519.public_key(), sender=site.keys.node_id, type="answer")
    (back / f"mq-answer-{site.device}-000001.mqe").write_bytes(data)
    with pytest.raises(SyncError) as err:
        site.agent.import_bundle(back)
    assert err.value.code == "sync.bad_answer"
    assert site.laptop.meta("pull_cursor") == before


# ---- strings that are not Unicode text: a lone surrogate, escaped in JSON ----


def test_a_header_with_a_lone_surrogate_is_a_bad_header(site: Site) -> None:
    """Was: 500 (UnicodeEncodeError binding the sender to SQLite), from anyone."""
    data = c.craft({}, signing_key=Ed25519PrivateKey.generate(), recipient=site.keys.x25519.public_key(),
                   sender="\ud800", seq=1)
    with pytest.raises(env.EnvelopeError) as err:
        env.read_header(data)
    assert err.value.code == "envelope.bad_header"
    for path in ("/api/v1/push", "/api/v1/pull", "/api/v1/verify", "/api/v1/rotate"):
        status, body = site.post(path, data)
        assert (status, code_of(body)) == (400, "envelope.bad_header"), path


def test_a_payload_with_a_lone_surrogate_is_a_bad_payload(site: Site) -> None:
    """Was: 500 when its ops reached the database, and pull requests taken with it."""
    ops = [{**op, "values": {**op["values"], "text": "a\udfff"}} if op["entity"] == "note" else op
           for op in site.raw_ops]
    data = c.craft({"device": site.device, "seq": 77, "schema_version": 1, "ops": ops},
                   signing_key=site.laptop.keys.ed25519, recipient=site.keys.x25519.public_key(),
                   sender=site.device, seq=77)
    status, body = site.post("/api/v1/push", data)
    assert (status, code_of(body)) == (400, "envelope.bad_payload")
    status, body = site.post("/api/v1/pull", site.request({"device": site.device, "after": 0, "epoch": "\ud800"}))
    assert (status, code_of(body)) == (400, "envelope.bad_payload")


def test_an_escaped_surrogate_pair_is_still_text(site: Site) -> None:
    """A whole character written as two escapes (what ``ensure_ascii`` writers send) is fine."""
    status, _ = site.post("/api/v1/pull", site.request(None, body=b'{"after":0,"device":"' + site.device.encode()
                                                               + b'","note":"\\ud83d\\ude00"}'))
    assert status == 200


@pytest.mark.parametrize("path", ["/api/v1/enroll", "/api/v1/reenroll"])
def test_json_with_a_lone_surrogate_is_a_bad_request(site: Site, path: str) -> None:
    """Was: 500 (UnicodeEncodeError hashing the token, then logging the refusal)."""
    body = (b'{"token": "\\ud800", "device_id": "\\udc00", "x25519": "a", "ed25519": "b", "node": "c", '
            b'"proof": "d", "replaces": "e", "old_proof": "f"}')
    status, doc = site.post(path, body, "application/json")
    assert (status, code_of(doc)) == (400, "sync.bad_request")


def test_server_import_of_a_file_whose_name_is_not_utf8(site: Site, tmp_path: Path) -> None:
    """Was: UnicodeEncodeError logging the refusal (``sync-server import`` said "unexpected error")."""
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / os.fsdecode(b"mq-\xff\xfe.mqe")).write_bytes(b"garbage")
    with site.service() as svc:
        report = import_folder(svc, stick)
    assert [(r["file"], r["code"]) for r in report.refused] == [("mq-\ufffd\ufffd.mqe", "envelope.truncated")]


@pytest.mark.parametrize("field", ["after", "limit"])
def test_pull_with_a_boolean_cursor_is_a_bad_request(site: Site, field: str) -> None:
    """``true`` passed as the integer 1 (and was kept as the text "True")."""
    status, body = site.post("/api/v1/pull", site.request({"device": site.device, "after": 0, "limit": 5,
                                                           field: True}))
    assert (status, code_of(body)) == (400, "sync.bad_request")


def test_a_held_op_of_more_than_a_million_characters_is_kept_whole(site: Site) -> None:
    """Was: its JSON cut at 1,000,000 characters, so every reader of the quarantine failed
    (JSONDecodeError): every device's verify (500), export-for, quarantine list and release."""
    ops = [{**op, "values": {**op["values"], "note_extra": "长" * 1_100_000}} for op in site.raw_ops
           if op["entity"] == "note"]
    ops = [{**op, "op_id": "ab" * 16} for op in ops]
    data = c.craft({"device": site.device, "seq": 90, "schema_version": 1, "ops": ops},
                   signing_key=site.laptop.keys.ed25519, recipient=site.keys.x25519.public_key(),
                   sender=site.device, seq=90)
    status, _ = site.post("/api/v1/push", data)
    assert status == 200
    status, _ = site.post("/api/v1/verify", site.request(
        {"device": site.device, "sent_ms": 0, "verify": {"digest": "", "bucket_ms": 86_400_000, "buckets": {}}}))
    assert status == 200
    with site.service() as svc:
        held = [q for q in svc.store.quarantined("held") if q["op_id"] == "ab" * 16]
    assert len(held) == 1 and held[0]["op"]["values"]["note_extra"] == "长" * 1_100_000


# ---- an op id reused with other content is held, not the whole change set ----


def test_an_op_id_reused_with_other_content_is_held_not_the_whole_change_set(site: Site) -> None:
    stored = next(op for op in site.raw_ops if op["entity"] == "note")
    reused = {**stored, "values": {**stored["values"], "text": "另一个内容 (other content)"}}
    fresh = {**stored, "op_id": "cd" * 16, "entity_id": "ef" * 16,
             "stamp": stored["stamp"][:-22] + "00001" + stored["stamp"][-17:]}
    data = c.craft({"device": site.device, "seq": 91, "schema_version": 1, "ops": [reused, fresh]},
                   signing_key=site.laptop.keys.ed25519, recipient=site.keys.x25519.public_key(),
                   sender=site.device, seq=91)
    status, body = site.post("/api/v1/push", data)
    assert status == 200, body
    with site.service() as svc:
        assert svc.store.replica.has_op("cd" * 16)
        assert [q["code"] for q in svc.store.quarantined("held") if q["op_id"] == stored["op_id"]] == ["op.id_reused"]
        # the ledger holds the whole change set; rebuilding from it decides the same way
        report = svc.rebuild_report()
        assert report["equal"], report
        # the stored op keeps its first content
        kept = [op for op in svc.store.replica.ops_for_entity("note", stored["entity_id"]) if op.op_id == stored["op_id"]]
        assert len(kept) == 1 and kept[0].values["text"] != "另一个内容 (other content)"
