"""Crafted hostile cases against the real server and both bundle imports: wrong content
types and methods, malformed JSON, oversized bodies (past the documented 16 MiB), valid
envelopes truncated at many positions and with bits flipped, replays (the same change set
again, an old one, the same number with other content), forged and misaddressed
envelopes, revoked and unknown senders, and bundle files cut, garbled, empty or huge."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from schema import envelope as env
from sync_server.envelope_limits import MAX_BODY
from sync_server.lifecycle import rotate_message
from tests.end_to_end.conftest import VILLAGE_1, sync_server_cmd
from tests.fuzz import craft as c
from tests.fuzz.lab import Lab
from tests.fuzz.parsers import attempt, valid_answer
from tests.fuzz.tally import Part

OCTET = "application/octet-stream"
ENVELOPE_PATHS = ("/api/v1/push", "/api/v1/pull", "/api/v1/verify", "/api/v1/rotate")
JSON_PATHS = ("/api/v1/enroll", "/api/v1/reenroll")
TIMEOUT = 60


def positions(length: int, n: int, rng: random.Random, *, stride: int = 1) -> list[int]:
    """Where to cut: every byte (every ``stride``-th) of the frame and the header's start,
    then ``n`` more spread over the rest, and the last byte."""
    head = list(range(0, min(length, 96), stride))
    rest = sorted(rng.sample(range(96, length), min(n, max(length - 96, 0)))) if length > 96 else []
    return sorted(set(head + rest + [length - 1]))


class Http:
    def __init__(self, part: Part, lab: Lab) -> None:
        self.part, self.lab = part, lab
        self.session = requests.Session()

    def send(self, method: str, path: str, body: Any = b"", content_type: str | None = OCTET, *, what: str,
             must_refuse: bool = True, expect: str | tuple[str, ...] | None = None,
             headers: dict[str, str] | None = None) -> requests.Response:
        h = dict(headers or {})
        if content_type is not None:
            h["Content-Type"] = content_type
        try:
            r = self.session.request(method, self.lab.url + path, data=body, headers=h, timeout=TIMEOUT)
        except requests.ConnectionError:
            if expect != "sync.too_large":
                raise
            # a server may close the connection on a body past the limit before reading it
            # all (the 413 then never arrives): a refusal too, not a failure
            self.part.tried += 1
            self.part.note("connection closed on an oversized body", f"{what}: {method} {path}")
            self.session.close()
            self.session = requests.Session()
            return requests.Response()
        code = self.part.http(f"{what}: {method} {path}", r.status_code, r.headers.get("Content-Type", ""),
                              r.content, must_refuse=must_refuse)
        if expect is not None and r.status_code >= 400 and code is not None:
            wanted = (expect,) if isinstance(expect, str) else expect
            if not any(code == w or (w.endswith(".") and code.startswith(w)) for w in wanted):
                self.part.note("unexpected code", f"{what}: {method} {path} -> {code}, expected {wanted}")
        return r

    def close(self) -> None:
        self.session.close()


def _open_answer(lab: Lab, raw: bytes, who: Any) -> dict[str, Any]:
    return env.open(raw, recipient_key=who.client.keys.x25519,
                    sender_key=lambda s: lab.keys.ed25519.public_key() if s == lab.keys.node_id else None).payload


def http_cases(part: Part, lab: Lab, *, examples: int, seed: int | None, light: bool = False) -> None:
    """Every crafted case; ``light`` (inside ``make test``) cuts at every 7th byte of the
    frame instead of every byte, and sends the forged envelopes and the wrong content types
    and methods to two endpoints (push, pull), not four."""
    rng = random.Random(seed if seed is not None else 0)
    h = Http(part, lab)
    try:
        _content_types_and_methods(h, lab, ENVELOPE_PATHS[:2] if light else ENVELOPE_PATHS)
        _json_bodies(h, lab)
        _oversized(h, lab)
        _truncated_and_flipped(h, lab, examples, rng, stride=7 if light else 1)
        _replays(h, lab)
        _identity(h, lab, ENVELOPE_PATHS[:2] if light else ENVELOPE_PATHS)
        _requests(h, lab)
        _enrollment(h, lab)
    finally:
        h.close()


def _request(lab: Lab, payload: Any, *, dev: Any = None, **kw: Any) -> bytes:
    dev = dev or lab.fuzzer
    return c.craft(payload, signing_key=dev.ed25519, recipient=lab.server_x, sender=dev.id, seq=0, type="request",
                   **kw)


def _pull(lab: Lab) -> bytes:
    return _request(lab, {"device": lab.fuzzer.id, "after": 0, "limit": 10, "sent_ms": 0})


def _content_types_and_methods(h: Http, lab: Lab, paths: tuple[str, ...] = ENVELOPE_PATHS) -> None:
    valid = lab.village.envelopes()[0][1]
    for path in paths:
        for ctype in (None, "text/plain", "application/json", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=xyz", "application/octet", "image/png", ""):
            h.send("POST", path, valid, ctype, what=f"content type {ctype!r}", expect="sync.bad_request")
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            h.send(method, path, valid, what=f"method {method}", expect="sync.method_not_allowed")
    for path in JSON_PATHS:
        h.send("GET", path, b"", None, what="method GET", expect="sync.method_not_allowed")
    h.send("POST", "/api/v1/ping", b"{}", "application/json", what="POST to ping", expect="sync.method_not_allowed")
    for path in ("/api/v1/nothing", "/api/v2/push", "/api/v1/push/", "/api/v1/../v1/push", "/api/v1/%00",
                 "/api/v1/" + "x" * 5000, "/api/v1/ping?" + "a=1&" * 500):
        r = h.send("GET", path, b"", None, what="unknown path", must_refuse=False)
        if r.status_code == 200 and not path.startswith("/api/v1/ping"):
            h.part.note("unknown path answered", f"GET {path[:60]} -> 200")
    h.send("GET", "/api/v1/openapi.json", b"", None, what="the document", must_refuse=False)
    h.send("GET", "/api/v1/ping", b"", None, what="ping", must_refuse=False)


def _json_bodies(h: Http, lab: Lab) -> None:
    bodies: list[tuple[str, bytes]] = [
        ("empty", b""), ("not JSON", b"{not json"), ("an array", b"[]"), ("a string", b'"enroll"'),
        ("null", b"null"), ("a number", b"12345678901234567890123456789"), ("NaN", b'{"token": NaN}'),
        ("not UTF-8", b'{"token": "\xff\xfe"}'), ("a BOM", b'\xef\xbb\xbf{"token": "a"}'),
        ("nested 100000 deep", b"[" * 100000 + b"]" * 100000),
        ("an object nested 5000 deep", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        ("nested inside a field", b'{"token": ' + b"[" * 3000 + b"]" * 3000 + b"}"),
        ("1 MiB strings", json.dumps({k: "9" * (1 << 20) for k in ("token", "device_id", "x25519", "ed25519",
                                                                    "node", "proof")}).encode()),
        ("wrong types", json.dumps({"token": 1, "device_id": [], "x25519": {}, "ed25519": None, "node": True,
                                    "proof": 1.5}).encode()),
        ("duplicate keys", b'{"token": "a", "token": "b"}'),
        ("a huge integer", b'{"token": ' + b"9" * 5000 + b"}"),
        ("lone surrogates", b'{"token": "\\ud800", "device_id": "\\udc00", "x25519": "a", "ed25519": "b", '
                            b'"node": "c", "proof": "d", "replaces": "\\udfff", "old_proof": "e"}'),
    ]
    for path in JSON_PATHS:
        for name, body in bodies:
            h.send("POST", path, body, "application/json", what=f"JSON body: {name}",
                   expect=("sync.bad_request", "enroll."))
        h.send("POST", path, b'{"token": "a"}', OCTET, what="JSON sent as octet-stream",
               expect=("sync.bad_request", "enroll."))
        h.send("POST", path, b"token=a&node=b", "application/x-www-form-urlencoded", what="a form",
               expect=("sync.bad_request", "enroll."))


def _oversized(h: Http, lab: Lab) -> None:
    big = b"MQE1" + b"\0" * (MAX_BODY + 1 - 4)
    for path in ENVELOPE_PATHS:
        h.send("POST", path, big, what=f"body of {len(big)} bytes (over {MAX_BODY})", expect="sync.too_large")
    h.send("POST", "/api/v1/enroll", b'{"token":"' + b"a" * (MAX_BODY + 1) + b'"}', "application/json",
           what="JSON body over the limit", expect="sync.too_large")
    envelope = env.MAGIC + b"\0" * (env.MAX_ENVELOPE + 1 - 4)
    h.send("POST", "/api/v1/push", envelope, what="an envelope over 16 MiB, the body under the limit",
           expect="envelope.too_large")

    def chunks() -> Iterator[bytes]:
        block = b"\0" * (1 << 20)
        for _ in range(MAX_BODY // len(block) + 2):
            yield block

    h.send("POST", "/api/v1/push", chunks(), what="chunked body over the limit", expect="sync.too_large")
    # an envelope of the right size made of a header that says 4 GiB
    h.send("POST", "/api/v1/push", env.MAGIC + struct.pack(">I", 2**32 - 1) + b"\0" * 100,
           what="header length 4 GiB", expect="envelope.truncated")
    h.send("POST", "/api/v1/push", env.MAGIC + struct.pack(">I", env.MAX_HEADER + 1) + b"{" * (env.MAX_HEADER + 80),
           what="header one byte over 4096", expect="envelope.truncated")
    # a payload that decompresses past 64 MiB (a zstd bomb), properly signed and sealed
    bomb = zstandard.ZstdCompressor(level=1).compress(b"\0" * (env.MAX_PAYLOAD + 1))
    dev = lab.fuzzer
    data = c.craft(None, signing_key=dev.ed25519, recipient=lab.server_x, sender=dev.id, seq=0, type="request",
                   body=b"", compressed=bomb, header={"size": env.MAX_PAYLOAD + 1})
    h.send("POST", "/api/v1/pull", data, what="a payload of 64 MiB + 1 when decompressed", expect="envelope.bad_payload")


def _truncated_and_flipped(h: Http, lab: Lab, n: int, rng: random.Random, *, stride: int = 1) -> None:
    valid = lab.village.envelopes()[0][1]
    request = _pull(lab)
    for path, data in (("/api/v1/push", valid), ("/api/v1/pull", request)):
        for at in positions(len(data), n, rng, stride=stride):
            h.send("POST", path, data[:at], what=f"cut at {at} of {len(data)}", expect="envelope.")
        h.send("POST", path, data + b"\0", what="one byte too many", expect="envelope.truncated")
        h.send("POST", path, data + data, what="twice over", expect="envelope.truncated")
        for _ in range(n):
            at, bit = rng.randrange(len(data)), rng.randrange(8)
            flipped = bytearray(data)
            flipped[at] ^= 1 << bit
            h.send("POST", path, bytes(flipped), what=f"bit {bit} of byte {at} flipped",
                   expect=("envelope.", "sync.unknown_device", "sync.bad_request"))


def _replays(h: Http, lab: Lab) -> None:
    village = lab.village
    envelopes = village.envelopes()
    first = envelopes[0][1]
    for i in range(3):
        r = h.send("POST", "/api/v1/push", first, what=f"the same change set again ({i + 1})", must_refuse=False)
        if r.status_code == 200:
            answer = _open_answer(lab, r.content, village)
            if answer.get("duplicate") is not True or answer.get("applied") != 0:
                h.part.wrongly_accepted += 1
                h.part.keep("accepted but should be refused", f"replay {i + 1} merged again: {answer}")
    h.send("POST", "/api/v1/pull", first, what="a change set sent as a pull request", expect="sync.bad_request")
    h.send("POST", "/api/v1/push", _pull(lab), what="a pull request sent as a change set", expect="sync.bad_request")
    # the fuzzing laptop: 1, 2, then 1 again (an old one), then 2 with other content
    dev = lab.fuzzer
    ops = c.reauthor(lab.raw_ops, lab.village.id, dev.id)

    def cs(seq: int, these: list[Any]) -> bytes:
        return c.craft({"device": dev.id, "seq": seq, "schema_version": 1, "ops": these}, signing_key=dev.ed25519,
                       recipient=lab.server_x, sender=dev.id, seq=seq)

    one, two = cs(1, ops[:1]), cs(2, ops[1:])
    h.send("POST", "/api/v1/push", one, what="change set 1", must_refuse=False)
    h.send("POST", "/api/v1/push", two, what="change set 2", must_refuse=False)
    r = h.send("POST", "/api/v1/push", one, what="an old change set again", must_refuse=False)
    if r.status_code == 200 and _open_answer(lab, r.content, dev).get("duplicate") is not True:
        h.part.wrongly_accepted += 1
        h.part.keep("accepted but should be refused", "an old change set merged again")
    h.send("POST", "/api/v1/push", cs(2, ops[:1]), what="number 2 again with other content", expect="sync.seq_reused")
    # one new change set arriving eight times at once (a relay and the author, and more)
    fresh = cs(3, c.reauthor(lab.raw_ops, lab.village.id, dev.id))

    def at_once(_: int) -> requests.Response:
        return requests.post(lab.url + "/api/v1/push", data=fresh, headers={"Content-Type": OCTET}, timeout=TIMEOUT)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(at_once, range(8)))
    merged = 0
    for r in answers:
        h.part.http("the same new change set eight times at once", r.status_code, r.headers.get("Content-Type", ""),
                    r.content)
        if r.status_code == 200 and _open_answer(lab, r.content, dev).get("duplicate") is False:
            merged += 1
    if merged != 1:
        h.part.wrongly_accepted += max(merged - 1, 0)
        h.part.keep("accepted but should be refused", f"eight copies at once: merged {merged} times")
    # the answer a server sent, posted back to it
    h.send("POST", "/api/v1/push", valid_answer(lab), what="the server's own answer sent back",
           expect=("sync.unknown_device", "sync.bad_request", "envelope."))
    # a village envelope with its number changed and signed again by another key
    h.send("POST", "/api/v1/push", c.resign(first, dev.ed25519), what="another device's envelope re-signed",
           expect="envelope.bad_signature")


def _identity(h: Http, lab: Lab, paths: tuple[str, ...] = ENVELOPE_PATHS) -> None:
    dev = lab.fuzzer
    stranger = lab.stranger_ed
    payload = {"device": dev.id, "after": 0, "limit": 10}
    cases = [
        ("an unknown sender", c.craft({**payload, "device": "0" * 16}, signing_key=stranger, recipient=lab.server_x,
                                      sender="0" * 16, type="request"), "sync.unknown_device"),
        ("signed by a stranger in a device's name", c.craft(payload, signing_key=stranger, recipient=lab.server_x,
                                                            sender=dev.id, type="request"), "envelope.bad_signature"),
        ("sealed to another county's server", c.craft(payload, signing_key=dev.ed25519,
                                                      recipient=lab.other_server_x.public_key(), sender=dev.id,
                                                      type="request"), "envelope.wrong_recipient"),
        ("a revoked device", c.craft({**payload, "device": lab.revoked.id}, signing_key=lab.revoked.ed25519,
                                     recipient=lab.server_x, sender=lab.revoked.id, type="request"),
         "sync.device_revoked"),
        ("sender 4000 characters", c.craft(payload, signing_key=dev.ed25519, recipient=lab.server_x, sender="é" * 1000,
                                           type="request"), ("sync.unknown_device", "envelope.")),
        ("sender a number", c.craft(payload, signing_key=dev.ed25519, recipient=lab.server_x, sender=12,
                                    type="request"), "envelope.bad_header"),
        ("sender a lone surrogate", c.craft(payload, signing_key=dev.ed25519, recipient=lab.server_x, sender="\ud800",
                                            type="request"), ("sync.unknown_device", "envelope.")),
        ("payload: a lone surrogate", _request(lab, {**payload, "epoch": "\udc00", "rules_sha256": "\ud800"}),
         ("envelope.bad_payload",)),
        ("change set: ops with lone surrogates", c.craft(
            {"device": dev.id, "seq": 4, "schema_version": 1,
             "ops": [{**op, "values": {**op["values"], **{k: "\ud800" for k, v in op["values"].items()
                                                          if isinstance(v, str)}}}
                     for op in c.reauthor(lab.raw_ops, lab.village.id, dev.id)]},
            signing_key=dev.ed25519, recipient=lab.server_x, sender=dev.id, seq=4), ("envelope.bad_payload",)),
        ("the server's own node id as sender", c.craft(payload, signing_key=dev.ed25519, recipient=lab.server_x,
                                                       sender=lab.keys.node_id, type="request"),
         ("sync.unknown_device", "envelope.")),
        ("header: an extra key", _request(lab, payload, header={"extra": 1}), "envelope.bad_header"),
        ("header: a key missing", _request(lab, payload, drop=("size",)), "envelope.bad_header"),
        ("header: version 2", _request(lab, payload, header={"v": 2}), "envelope.bad_header"),
        ("header: another suite", _request(lab, payload, header={"suite": "X448"}), "envelope.bad_header"),
        ("header: type 'ping'", _request(lab, payload, header={"type": "ping"}), "envelope.bad_header"),
        ("header: size off by one", _request(lab, payload, header={"size": len(c.canonical(payload)) + 1}),
         "envelope.bad_payload"),
        ("payload: not zstd", _request(lab, payload, compressed=b"not zstd at all"), "envelope.bad_payload"),
        ("payload: not JSON", _request(lab, None, body=b"\xff\xfe not json"), "envelope.bad_payload"),
        ("payload: a list", _request(lab, [payload]), "envelope.bad_payload"),
        ("payload: nested 5000 deep", _request(lab, None, body=b"[" * 5000 + b"]" * 5000), "envelope.bad_payload"),
        ("payload: object nested 3000 deep", _request(lab, None, body=b'{"a":' * 3000 + b"1" + b"}" * 3000),
         "envelope.bad_payload"),
    ]
    for seq in (-1, 2**63, 2**64, 2**80, True, 1.5, "1", None):
        cases.append((f"header: seq {seq!r}", c.craft({"device": dev.id, "seq": seq, "schema_version": 1, "ops": []},
                                                      signing_key=dev.ed25519, recipient=lab.server_x, sender=dev.id,
                                                      seq=seq), "envelope.bad_header"))
        unknown = c.craft({}, signing_key=stranger, recipient=lab.server_x, sender="f" * 16, seq=seq)
        cases.append((f"an unknown sender, seq {seq!r}", unknown, ("envelope.bad_header", "sync.unknown_device")))
    deep = b"[" * 2040 + b"]" * 2040
    framed = env.MAGIC + struct.pack(">I", len(deep)) + deep + struct.pack(">I", 48) + b"\0" * (48 + 64)
    cases.append(("header: JSON nested 2040 deep", framed, "envelope.bad_header"))
    for what, data, expect in cases:
        for path in paths:
            h.send("POST", path, data, what=what, expect=(*((expect,) if isinstance(expect, str) else expect),
                                                          "sync.bad_request"))


def _requests(h: Http, lab: Lab) -> None:
    dev = lab.fuzzer
    for after in (-1, 2**63, 2**80, "5", 1.5, None, True):
        h.send("POST", "/api/v1/pull", _request(lab, {"device": dev.id, "after": after, "limit": 10}),
               what=f"pull after={after!r}", expect="sync.bad_request")
    for limit in (0, -5, 2**80, "10", None, True):
        h.send("POST", "/api/v1/pull", _request(lab, {"device": dev.id, "after": 0, "limit": limit}),
               what=f"pull limit={limit!r}", expect="sync.bad_request", must_refuse=limit != 2**80)
    for sent in (-(2**80), 2**80, -1, "now", 1e300):
        h.send("POST", "/api/v1/pull", _request(lab, {"device": dev.id, "after": 0, "limit": 1, "sent_ms": sent}),
               what=f"pull sent_ms={sent!r}", must_refuse=False)
    h.send("POST", "/api/v1/pull", _request(lab, {"device": lab.village.id, "after": 0}),
           what="pull naming another device", expect="sync.bad_request")
    # values nested just under the parser's depth, and 1 MiB long, inside otherwise valid ops
    for seq, filler in ((6, "[" * 900 + "]" * 900), (7, json.dumps("长" * (1 << 20), ensure_ascii=False))):
        ops = c.reauthor(lab.raw_ops, lab.village.id, dev.id)
        for op in ops:
            op["values"] = {**op["values"], "note_extra": "__FILL__"}
        raw = c.canonical({"device": dev.id, "seq": seq, "schema_version": 1, "ops": ops}).replace(
            b'"__FILL__"', filler.encode("utf-8"))
        h.send("POST", "/api/v1/push", c.craft(None, signing_key=dev.ed25519, recipient=lab.server_x, sender=dev.id,
                                               seq=seq, body=raw),
               what=f"a change set with values {'nested 900 deep' if seq == 6 else 'of 1 MiB'}", must_refuse=False)
    verify_cases: list[Any] = [None, [], {"bucket_ms": 1}, {"bucket_ms": 3_600_000, "buckets": []},
                               {"bucket_ms": 3_600_000, "buckets": {"x": "y"}},
                               {"bucket_ms": 3_600_000, "buckets": {"9" * 5000: "y"}},
                               {"bucket_ms": 3_600_000, "buckets": {str(i): "d" for i in range(100_001)}},
                               {"bucket_ms": 86_400_000.0, "buckets": {"0": {"a": 1}}}]
    for v in verify_cases:
        h.send("POST", "/api/v1/verify", _request(lab, {"device": dev.id, "sent_ms": 0, "verify": v}),
               what=f"verify {str(v)[:60]}", expect="sync.bad_request", must_refuse=False)
    new_ed, new_x = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    ed_hex = new_ed.public_key().public_bytes_raw().hex()
    x_hex = new_x.public_key().public_bytes_raw().hex()
    for first in (0, -1, 2**63, 2**80, True):
        proof = new_ed.sign(rotate_message(dev.id, x_hex, ed_hex, first)).hex()  # type: ignore[arg-type]
        rot = {"x25519": x_hex, "ed25519": ed_hex, "proof": proof, "first_seq": first}
        h.send("POST", "/api/v1/rotate", _request(lab, {"device": dev.id, "sent_ms": 0, "rotate": rot}),
               what=f"a rotation with a valid proof and first_seq={first!r}", expect=("sync.bad_request",
                                                                                     "sync.bad_rotation"))
    for rot in ({}, {"x25519": "zz", "ed25519": ed_hex, "proof": "00", "first_seq": 5},
                {"x25519": x_hex, "ed25519": "00" * 40, "proof": "00" * 64, "first_seq": 5}):
        h.send("POST", "/api/v1/rotate", _request(lab, {"device": dev.id, "sent_ms": 0, "rotate": rot}),
               what=f"a rotation {str(rot)[:60]}", expect=("sync.bad_request", "sync.bad_rotation"))


def _enrollment(h: Http, lab: Lab) -> None:
    code = lab.server.enroll_code(VILLAGE_1)
    token = json.loads(base64.urlsafe_b64decode(code[4:].encode()))["token"]
    ed, x = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    ed_hex, x_hex = ed.public_key().public_bytes_raw().hex(), x.public_key().public_bytes_raw().hex()
    device_id = hashlib.sha256(bytes.fromhex(ed_hex)).hexdigest()[:16]
    proof = ed.sign(f"enroll|{token}|{device_id}|{x_hex}".encode()).hex()
    good = {"token": token, "device_id": device_id, "x25519": x_hex, "ed25519": ed_hex, "node": VILLAGE_1,
            "proof": proof, "app_version": "fuzz"}
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("a proof by another key", {**good, "proof": Ed25519PrivateKey.generate().sign(b"x").hex()}, "enroll.bad_proof"),
        ("a proof that is not hex", {**good, "proof": "zz"}, "enroll.bad_proof"),
        ("keys that are not hex", {**good, "x25519": "é" * 64, "ed25519": "q" * 64}, "enroll.bad_proof"),
        ("keys too short", {**good, "x25519": "00", "ed25519": "00"}, "enroll.bad_proof"),
        ("another node", {**good, "node": "330102201"}, "enroll.wrong_node"),
        ("a device id that is not the key's", {**good, "device_id": "0" * 16}, "enroll.bad_proof"),
        ("a token of 1 MiB", {**good, "token": "a" * (1 << 20)}, "enroll.unknown_code"),
    ]
    for what, body, expect in bad:
        h.send("POST", "/api/v1/enroll", json.dumps(body).encode(), "application/json", what=f"enroll: {what}",
               expect=expect)
    h.send("POST", "/api/v1/enroll", json.dumps(good).encode(), "application/json", what="enroll", must_refuse=False)
    h.send("POST", "/api/v1/enroll", json.dumps(good).encode(), "application/json", what="the same enrollment again",
           must_refuse=False)
    other = Ed25519PrivateKey.generate()
    o_hex = other.public_key().public_bytes_raw().hex()
    o_id = hashlib.sha256(bytes.fromhex(o_hex)).hexdigest()[:16]
    h.send("POST", "/api/v1/enroll", json.dumps({**good, "device_id": o_id, "ed25519": o_hex, "proof": other.sign(
        f"enroll|{token}|{o_id}|{x_hex}".encode()).hex()}).encode(), "application/json",
        what="a used code, another device", expect="enroll.code_used")
    h.send("POST", "/api/v1/reenroll", json.dumps({**good, "replaces": lab.village.id, "old_proof": "00"}).encode(),
           "application/json", what="reenroll with an ordinary enrollment code", expect=("enroll.", "sync."))


# ---- bundles ----


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.write(env.MAGIC)
        fh.truncate(size)


def bundle_cases(part: Part, lab: Lab, *, examples: int, seed: int | None) -> None:
    rng = random.Random(seed if seed is not None else 0)
    with tempfile.TemporaryDirectory(prefix="minqing-fuzz-bundles-") as tmp:
        root = Path(tmp)
        _server_bundles(part, lab, root, examples, rng)
        _laptop_bundles(part, lab, root, examples, rng)


def _server_import(part: Part, lab: Lab, folder: Path, what: str, *, expect_refused: int | None = None) -> None:
    """``sync-server import FOLDER --json``, the real command: JSON out, every refusal with a
    documented code, no traceback, exit 0 (all taken) or 1 (some refused)."""
    p = subprocess.run([*sync_server_cmd(), "import", str(folder), "--data", str(lab.server.data), "--json"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    part.tried += 1
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        part.crashes += 1
        part.keep("unhandled exception", f"sync-server import ({what}) exit {p.returncode}: {p.stdout[:200]} "
                  f"{p.stderr[-300:]}")
        return
    if "Traceback" in p.stderr or p.returncode not in (0, 1, 2):
        part.crashes += 1
        part.keep("unhandled exception", f"sync-server import ({what}) exit {p.returncode}: {p.stderr[-300:]}")
        return
    if "refused" not in doc:  # the command itself refused (exit 2): the one error body
        part.refused(doc.get("error", {}).get("code"), f"sync-server import ({what})")
        return
    part.accepted += doc["merged"] + doc["duplicates"] + doc["requests"]
    for r in doc["refused"]:
        part.refused(r["code"], f"sync-server import ({what}): {r['file']}")
        part.tried -= 1
    part.tried += len(doc["refused"])
    if expect_refused is not None and len(doc["refused"]) != expect_refused:
        part.note("unexpected count", f"sync-server import ({what}): {len(doc['refused'])} refused, "
                  f"expected {expect_refused}")


def _server_bundles(part: Part, lab: Lab, root: Path, n: int, rng: random.Random) -> None:
    valid = lab.village.envelopes()[0][1]
    dev = lab.village.id
    stick = root / "stick"
    stick.mkdir()
    (stick / f"mq-{dev}-zero.mqe").write_bytes(b"")
    for at in positions(len(valid), max(n // 4, 4), rng):
        (stick / f"mq-{dev}-cut-{at:06d}.mqe").write_bytes(valid[:at])
    for i in range(max(n // 4, 4)):
        g = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            g[rng.randrange(len(g))] = rng.randrange(256)
        (stick / f"mq-{dev}-garbled-{i:04d}.mqe").write_bytes(bytes(g))
    (stick / f"mq-{dev}-random.mqe").write_bytes(os.urandom(2000))
    _sparse(stick / f"mq-{dev}-huge.mqe", env.MAX_ENVELOPE + 1)
    (stick / f"mq-{dev}-request-cut.mqe").write_bytes(_pull(lab)[:100])
    (stick / f"mq-{dev}-a-folder.mqe").mkdir()
    (stick / "mq-answer-someone-000001.mqe").write_bytes(b"answers are not imported by the server")
    (stick / "notes.txt").write_text("not a bundle", encoding="utf-8")
    (stick / os.fsdecode(b"mq-\xff\xfe-name-not-utf8.mqe")).write_bytes(b"garbage")
    _server_import(part, lab, stick, "cut, garbled, zero-length, random, huge, a folder")
    replay = root / "replay"
    replay.mkdir()
    (replay / f"mq-{dev}-00000001.mqe").write_bytes(valid)
    (replay / f"mq-{dev}-00000001-copy.mqe").write_bytes(valid)
    (replay / f"mq-{dev}-request.mqe").write_bytes(_request(lab, {"device": lab.fuzzer.id, "after": 2**63}))
    (replay / f"mq-{dev}-request2.mqe").write_bytes(_request(lab, {"device": lab.village.id, "after": 0}))
    _server_import(part, lab, replay, "a change set twice, odd requests", expect_refused=2)
    _server_import(part, lab, root / "no-such-folder", "a folder that does not exist", expect_refused=0)
    _server_import(part, lab, stick / "notes.txt", "a file for a folder", expect_refused=0)


def _laptop_bundles(part: Part, lab: Lab, root: Path, n: int, rng: random.Random) -> None:
    dev = lab.fuzzer
    valid = valid_answer(lab)
    name = f"mq-answer-{dev.id}-{{:06d}}.mqe"
    cases: list[tuple[str, Any]] = [("zero-length", b""), ("random", os.urandom(3000)),
                                    ("another device's answer", None), ("a folder", "dir"), ("huge", "huge")]
    for at in positions(len(valid), max(n // 4, 4), rng):
        cases.append((f"cut at {at}", valid[:at]))
    for i in range(max(n // 4, 4)):
        g = bytearray(valid)
        g[rng.randrange(len(g))] ^= 1 << rng.randrange(8)
        cases.append((f"bit flip {i}", bytes(g)))
    village_answer = None
    for i, (what, data) in enumerate(cases):
        folder = root / f"back-{i}"
        folder.mkdir()
        path = folder / name.format(1)
        if data == "dir":
            path.mkdir()
        elif data == "huge":
            _sparse(path, env.MAX_ENVELOPE + 1)
        elif data is None:
            if village_answer is None:
                req = env.seal({"device": lab.village.id, "after": 0, "limit": 10, "sent_ms": 0}, type="request",
                               sender=lab.village.id, seq=0, signing_key=lab.village.ed25519, recipient=lab.server_x)
                with requests.Session() as s:
                    village_answer = s.post(lab.url + "/api/v1/pull", data=req, timeout=30,
                                            headers={"Content-Type": OCTET}).content
            path.write_bytes(village_answer)
        else:
            path.write_bytes(data)
        _laptop_import(part, dev, folder, f"answer file {what}", must_refuse=True)
    empty = root / "back-empty"
    empty.mkdir()
    _laptop_import(part, dev, empty, "a folder without answers", must_refuse=True)
    _laptop_import(part, dev, root / "back-none", "a folder that does not exist", must_refuse=True)
    again = root / "back-again"
    again.mkdir()
    (again / name.format(1)).write_bytes(valid)
    (again / name.format(2)).write_bytes(valid)
    _laptop_import(part, dev, again, "the same answer twice", must_refuse=False)
    _laptop_import(part, dev, again, "an old answer imported again", must_refuse=False)


def _laptop_import(part: Part, dev: Any, folder: Path, what: str, *, must_refuse: bool) -> None:
    attempt(part, what, lambda: dev.agent.import_bundle(folder), must_refuse=must_refuse)
