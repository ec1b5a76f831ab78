"""Envelopes signed by an enrolled laptop, with generated headers and payloads, sent to
every envelope endpoint of the real server: these get past the door (the signature
verifies, the envelope opens) and reach the code behind it, where a generated payload
meets the change-set reader, the merge, the pull cursor, verify and key rotation."""

from __future__ import annotations

import itertools
from typing import Any

import requests
from hypothesis import strategies as st

from schema import envelope as env
from tests.fuzz import craft as c
from tests.fuzz.codes import documented
from tests.fuzz.lab import Lab
from tests.fuzz.run import drive
from tests.fuzz.tally import Part

OCTET = "application/octet-stream"
TIMEOUT = 30


def post(session: requests.Session, lab: Lab, path: str, body: bytes, content_type: str = OCTET) -> requests.Response:
    return session.post(lab.url + path, data=body, headers={"Content-Type": content_type}, timeout=TIMEOUT)


def run(part: Part, lab: Lab, *, examples: int, seed: int | None, first_seq: int = 1000) -> None:
    dev = lab.fuzzer.id
    seqs = itertools.count(first_seq)
    base_ops = c.reauthor(lab.raw_ops, lab.village.id, dev)

    with requests.Session() as session:
        def send(path: str, data: bytes, what: str) -> None:
            r = post(session, lab, path, data)
            part.http(what, r.status_code, r.headers.get("Content-Type", ""), r.content)
            if r.status_code == 200:
                held(r.content, what)

        def held(raw: bytes, what: str) -> None:
            """The answer verifies, and every op it says was held has a documented code."""
            try:
                answer = env.open(raw, recipient_key=lab.fuzzer.client.keys.x25519,
                                  sender_key=lambda s: lab.keys.ed25519.public_key() if s == lab.keys.node_id else None)
            except env.EnvelopeError as exc:
                part.note("answer does not verify", f"{what}: {exc.code}")
                return
            for q in answer.payload.get("quarantined") or []:
                code = q.get("code")
                part.held[str(code)] += 1
                if code not in documented():
                    part.uncoded += 1
                    part.keep("held op without a documented code", f"{what} -> {q}")

        # push: change sets of mutated ops, now and then with odd header values
        @st.composite
        def pushes(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], bool]:
            ops = draw(c.mutated_ops(c.reauthor(base_ops, dev, dev)))
            payload: dict[str, Any] = {"device": dev, "schema_version": draw(st.just(1) | c.WEIRD_INT), "ops": ops}
            if draw(c.rarely(6)):
                payload = draw(st.dictionaries(st.sampled_from(["device", "seq", "ops", "schema_version", "x"]),
                                               c.JSON | c.WEIRD_INT, max_size=4))
            return payload, draw(c.header_overrides()), draw(c.rarely(8))

        def push(x: tuple[dict[str, Any], dict[str, Any], bool]) -> None:
            payload, header, odd_seq = x
            seq: Any = next(seqs)
            if odd_seq:
                seq = header.pop("seq", 2**63 + seq)
            if isinstance(payload, dict) and "seq" not in payload:
                payload = {**payload, "seq": seq}
            data = c.craft(payload, signing_key=lab.fuzzer.ed25519, recipient=lab.server_x, sender=dev, seq=seq,
                           type="changeset", header=header)
            send("/api/v1/push", data, f"push seq={seq!r} header={header!r} payload={str(payload)[:200]}")

        drive(pushes(), push, examples=examples, seed=seed)

        # pull, verify and rotate: request envelopes (seq 0) with generated payloads
        for path, strategy in (("/api/v1/pull", c.pull_payloads(dev)), ("/api/v1/verify", c.verify_payloads(dev)),
                               ("/api/v1/rotate", c.rotate_payloads(dev))):
            def request(x: tuple[Any, dict[str, Any]], path: str = path) -> None:
                payload, header = x
                data = c.craft(payload, signing_key=lab.fuzzer.ed25519, recipient=lab.server_x, sender=dev, seq=0,
                               type="request", header=header)
                send(path, data, f"{path} header={header!r} payload={str(payload)[:200]}")

            drive(st.tuples(strategy, c.header_overrides()), request, examples=examples, seed=seed)
