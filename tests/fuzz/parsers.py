"""Hypothesis on the parsers, in-process: the envelope reader (``schema.envelope``), the
server's bundle import (``sync_server.bundles.import_folder``) and the laptop's
(``SyncAgent.import_bundle``). Each input must be taken or refused with the project's own
error (a ``MinqingError`` with a documented code); any other exception is a crash. An
altered copy of a valid envelope that is taken counts as "taken!" (it must be refused).
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from hypothesis import strategies as st

from schema import envelope as env
from schema.errors import MinqingError
from schema.validation import partition_ops
from sync_server.bundles import import_folder
from sync_server.service import SyncService
from sync_server.store import ServerStore
from tests.fuzz import craft as c
from tests.fuzz.lab import Lab
from tests.fuzz.run import drive
from tests.fuzz.tally import Part

# ---- altering bytes ----

EDITS = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 2**20)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 2**20), st.integers(1, 16)),
    st.tuples(st.just("length"), st.sampled_from([4, 8]), st.integers(0, 2**32 - 1)),
), min_size=1, max_size=3)


def edit(data: bytes, edits: list[tuple[Any, ...]]) -> bytes:
    """``data`` with each edit applied: a bit flipped, cut short, bytes inserted or deleted,
    one of the two length fields rewritten (positions wrap around the length)."""
    b = bytearray(data)
    for e in edits:
        n = max(len(b), 1)
        if e[0] == "flip":
            if b:
                b[e[1] % n] ^= 1 << e[2]
        elif e[0] == "cut":
            del b[e[1] % n:]
        elif e[0] == "insert":
            b[e[1] % (n + 1):e[1] % (n + 1)] = e[2]
        elif e[0] == "delete":
            del b[e[1] % n:e[1] % n + e[2]]
        elif e[0] == "length":
            if e[1] == 4 and len(b) >= 8:
                b[4:8] = struct.pack(">I", e[2])
            elif len(b) >= 12:
                (h,) = struct.unpack(">I", bytes(b[4:8]))
                if 8 + h + 4 <= len(b):
                    b[8 + h:12 + h] = struct.pack(">I", e[2])
    return bytes(b)


def framed() -> st.SearchStrategy[bytes]:
    """The layout's frame around anything: magic, a length, a header of generated JSON (or
    bytes), a length, a tail."""
    header = c.JSON.map(c.canonical) | st.binary(max_size=64) | st.builds(
        lambda over: c.canonical({**dict.fromkeys(env.HEADER_KEYS, 1), **over}), st.dictionaries(
            st.sampled_from(env.HEADER_KEYS), c.JSON | c.WEIRD_INT, max_size=9))
    deep = st.integers(900, 2040).map(lambda n: b"[" * n + b"]" * n)
    return st.builds(lambda h, tail, lie: env.MAGIC + struct.pack(">I", len(h) if lie is None else lie) + h
                     + struct.pack(">I", max(len(tail) - 64, 0)) + tail,
                     header | deep, st.binary(max_size=200), st.none() | st.integers(0, 2**32 - 1))


def attempt(part: Part, what: str, fn: Callable[[], Any], *, must_refuse: bool = False) -> None:
    try:
        fn()
    except MinqingError as exc:
        part.refused(exc.code, what)
    except Exception as exc:  # noqa: BLE001 - that is the finding
        part.crash(exc, what)
    else:
        part.took(must_refuse=must_refuse, what=what)


# ---- the envelope reader ----


def envelope_parser(part: Part, lab: Lab, *, examples: int, seed: int | None) -> None:
    valid = lab.village.envelopes()[0][1]
    keys = {lab.village.id: lab.village.ed25519.public_key(), lab.fuzzer.id: lab.fuzzer.ed25519.public_key()}

    def open_all(data: bytes) -> None:
        sealed = env.open(data, recipient_key=lab.keys.x25519, sender_key=keys.get)
        if sealed.header["type"] == "changeset":
            env.changeset_from(sealed)

    drive(st.binary(max_size=400), lambda d: attempt(part, f"bytes {d[:60]!r}", lambda: open_all(d)),
          examples=examples, seed=seed)
    drive(framed(), lambda d: attempt(part, f"framed {d[:80]!r}", lambda: open_all(d)),
          examples=examples, seed=seed)

    def altered(edits: list[tuple[Any, ...]]) -> None:
        data = edit(valid, edits)
        attempt(part, f"valid envelope edited {edits}", lambda: open_all(data), must_refuse=data != valid)

    drive(EDITS, altered, examples=examples, seed=seed)

    # properly signed and sealed, with generated header values and payloads
    dev = lab.fuzzer.id
    payloads = st.one_of(c.JSON, st.builds(lambda ops, extra: {"device": dev, "seq": 1, "schema_version": 1,
                                                               "ops": ops, **extra},
                                           c.mutated_ops(c.reauthor(lab.raw_ops, lab.village.id, dev)),
                                           st.dictionaries(st.sampled_from(["device", "seq", "schema_version", "x"]),
                                                           c.JSON | c.WEIRD_INT, max_size=2)))

    def signed(x: tuple[Any, dict[str, Any], str]) -> None:
        payload, header, kind = x
        data = c.craft(payload, signing_key=lab.fuzzer.ed25519, recipient=lab.server_x, sender=dev, seq=1,
                       type=kind, header=header)
        attempt(part, f"signed {kind} header={header} payload={str(payload)[:160]}", lambda: open_all(data))

    drive(st.tuples(payloads, c.header_overrides(), st.sampled_from(["changeset", "request", "answer"])), signed,
          examples=examples, seed=seed)
    drive(st.lists(c.JSON, max_size=4) | c.mutated_ops(lab.raw_ops),
          lambda ops: attempt(part, f"ops {str(ops)[:160]}", lambda: partition_ops(ops)), examples=examples, seed=seed)


# ---- the server's bundle import ----


@contextmanager
def server_copy(lab: Lab) -> Iterator[SyncService]:
    """The running server's data folder copied (SQLite's backup, consistent while it
    serves), opened in-process."""
    tmp = Path(tempfile.mkdtemp(prefix="minqing-fuzz-import-"))
    try:
        data = tmp / "server"
        data.mkdir()
        for name in ("server_keys.json", "rules.toml"):
            if (lab.server.data / name).exists():
                shutil.copy2(lab.server.data / name, data / name)
        src = sqlite3.connect(lab.server.data / "server.db")
        dst = sqlite3.connect(data / "server.db")
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        store = ServerStore(data)
        try:
            yield SyncService(store)
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_contents(lab: Lab, seqs: Iterator[int]) -> st.SearchStrategy[bytes]:
    """What a file on a stick may hold: bytes, an edited valid envelope, a properly signed
    change set or request with generated content, nothing."""
    valid = lab.village.envelopes()[0][1]
    dev = lab.fuzzer.id
    base = c.reauthor(lab.raw_ops, lab.village.id, dev)

    def changeset(ops: list[Any], header: dict[str, Any]) -> bytes:
        seq = next(seqs)
        return c.craft({"device": dev, "seq": seq, "schema_version": 1, "ops": ops}, signing_key=lab.fuzzer.ed25519,
                       recipient=lab.server_x, sender=dev, seq=seq, header=header)

    def request(payload: Any, header: dict[str, Any]) -> bytes:
        return c.craft(payload, signing_key=lab.fuzzer.ed25519, recipient=lab.server_x, sender=dev, seq=0,
                       type="request", header=header)

    return st.one_of(
        st.binary(max_size=300), st.just(b""), EDITS.map(lambda e: edit(valid, e)), st.just(valid),
        st.builds(changeset, c.mutated_ops(base), c.header_overrides()),
        st.builds(request, c.pull_payloads(dev), c.header_overrides()),
    )


def server_import(part: Part, lab: Lab, *, examples: int, seed: int | None) -> None:
    counter = iter(range(10**6, 10**9))
    with server_copy(lab) as svc, tempfile.TemporaryDirectory(prefix="minqing-fuzz-stick-") as tmp:
        n = iter(range(10**9))

        def one(files: list[bytes]) -> None:
            folder = Path(tmp) / f"stick-{next(n)}"
            folder.mkdir()
            for i, data in enumerate(files):
                (folder / f"mq-{lab.fuzzer.id}-{i:08d}.mqe").write_bytes(data)
            what = f"{len(files)} file(s) {[f[:40] for f in files]}"
            try:
                report = import_folder(svc, folder, carrier="fuzz")
            except Exception as exc:  # noqa: BLE001 - import_folder reports each bad file; it never raises
                part.crash(exc, what)
            else:
                for r in report.refused:
                    part.refused(r["code"], f"{what}: {r['file']}")
                for _ in range(report.merged + report.duplicates + report.requests):
                    part.took()
            shutil.rmtree(folder, ignore_errors=True)

        drive(st.lists(file_contents(lab, counter), min_size=1, max_size=3), one, examples=examples, seed=seed)


# ---- the laptop's bundle import ----


def valid_answer(lab: Lab) -> bytes:
    """A real answer to the fuzzing laptop (its pull request, answered by the server)."""
    dev = lab.fuzzer
    req = env.seal({"device": dev.id, "after": 0, "limit": 100, "sent_ms": 0}, type="request", sender=dev.id,
                   seq=0, signing_key=dev.ed25519, recipient=lab.server_x)
    with requests.Session() as s:
        r = s.post(lab.url + "/api/v1/pull", data=req, headers={"Content-Type": "application/octet-stream"},
                   timeout=30)
    r.raise_for_status()
    return r.content


def answer_payloads(lab: Lab) -> st.SearchStrategy[Any]:
    return answer_payloads_for(lab.raw_ops)


def answer_payloads_for(raw_ops: list[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """What an answer may hold, each part of any type (never an erase order)."""
    ints = c.WEIRD_INT | c.JSON
    return st.one_of(c.JSON, st.fixed_dictionaries({"erase": st.just(False)}, optional={
        "ops": c.mutated_ops(raw_ops) | c.JSON, "cursor": ints, "more": st.booleans() | c.JSON,
        "acks": st.lists(ints, max_size=3) | c.JSON, "epoch": c.JSON, "server_time_ms": ints,
        "quarantined": c.JSON, "rules": st.text(max_size=200), "rules_sha256": c.JSON,
        "seq_status": c.JSON | st.fixed_dictionaries({}, optional={"through": ints, "max": ints,
                                                                   "missing": st.lists(ints, max_size=3) | c.JSON,
                                                                   "capped": c.JSON}),
    }))


def laptop_import(part: Part, lab: Lab, *, examples: int, seed: int | None) -> None:
    dev = lab.fuzzer
    valid = valid_answer(lab)

    def server_signed(payload: Any, header: dict[str, Any]) -> bytes:
        return c.craft(payload, signing_key=lab.keys.ed25519, recipient=dev.client.keys.x25519.public_key(),
                       sender=lab.keys.node_id, seq=0, type="answer", header=header)

    # each file with whether it must be refused: noise and edits of the valid answer must
    # (no signature covers them); answers the server really signed may be taken
    contents = st.one_of(
        st.tuples(st.binary(max_size=300) | st.just(b""), st.just(True)),
        EDITS.map(lambda e: edit(valid, e)).map(lambda d: (d, d != valid)),
        st.tuples(st.builds(server_signed, answer_payloads(lab), c.header_overrides()), st.just(False)),
    )
    with tempfile.TemporaryDirectory(prefix="minqing-fuzz-answers-") as tmp:
        n = iter(range(10**9))

        def one(files: list[tuple[bytes, bool]]) -> None:
            folder = Path(tmp) / f"back-{next(n)}"
            folder.mkdir()
            for i, (data, _) in enumerate(files):
                (folder / f"mq-answer-{dev.id}-{i + 1:06d}.mqe").write_bytes(data)
            what = f"{len(files)} answer file(s) {[f[:40] for f, _ in files]}"
            # files are taken in order and the first bad one stops the import
            attempt(part, what, lambda: dev.agent.import_bundle(folder), must_refuse=any(bad for _, bad in files))
            shutil.rmtree(folder, ignore_errors=True)

        drive(st.lists(contents, min_size=1, max_size=2), one, examples=examples, seed=seed)
