"""Bench: ``sync-server audit verify`` over a ledger of 100,000 envelopes, beside the time
to just read and SHA-256 the same envelope bytes in the same run (docs/audit.md).

The issue: *"times audit verify over a ledger of 100,000 envelopes beside the time to just
hash the same bytes (sha256) in the same run, prints both and the ratio; --quick uses
10,000."*

* **Build** (not timed). ``ServerStore.init`` in a temp dir (real server keys), the
  workload's township (``bench.workload``: six villages and the township station), one
  enrolled device per workload laptop with real Ed25519/X25519 keys and the right node
  and level. The workload's ops in stamp order, **one op per envelope**: each sealed and
  signed by its author's key as a laptop would (``schema.envelope.seal_changeset``),
  appended to the ledger (``sync_server.ledger.append``) and merged exactly as
  ``SyncService.receive`` decides (``plan_changeset``: scope, levels, quarantine), 1,000
  envelopes per transaction, ``synchronous=OFF`` while building.
* **Hash** (timed, the baseline): read every envelope from the ledger table in ledger
  order and SHA-256 it. Also shown: SHA-256 of the same bytes already in memory.
* **Verify** (timed): ``sync_server.audit.verify`` on a fresh ``SyncService``, what the
  command runs: the hash chain walk, every envelope's signature checked and its payload
  decrypted and decompressed, the state rebuilt from the ledger alone in a scratch file
  and compared with the live one (op digest and every materialised row). Its progress
  callback splits the time into the chain walk and the rebuild.

Verify must pass (the bench asserts it): the figure is for a ledger that is intact.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bench import workload as W
from schema import envelope as env
from schema.ops import ChangeSet
from sync_server import ledger, lifecycle
from sync_server.audit import verify
from sync_server.jurisdiction import import_nodes
from sync_server.keys import pub_hex
from sync_server.merge import plan_changeset
from sync_server.service import SyncService
from sync_server.store import ServerStore

TOWNSHIP = "330102100"
BATCH = 1000


def _say(msg: str) -> None:
    print(f"  [audit] {msg}", file=sys.stderr, flush=True)


def build(root: Path, n: int, seed: int = 1) -> tuple[ServerStore, dict[str, Any]]:
    """A server whose ledger holds ``n`` envelopes of one op each, merged as receive would."""
    t0 = time.perf_counter()
    ops = W.generate(n, seed)
    gen_s = time.perf_counter() - t0
    store = ServerStore.init(root / "server")
    store.conn.execute("PRAGMA synchronous=OFF")
    rows = [{"code": "330102", "name": "示范县", "level": "county", "parent": ""},
            {"code": TOWNSHIP, "name": "示范镇", "level": "township", "parent": "330102"}]
    rows += [{"code": f"330102{i:03d}", "name": f"村{i}", "level": "village", "parent": TOWNSHIP} for i in range(1, 7)]
    import_nodes(store, rows)
    levels: dict[str, Counter[str]] = {}
    nodes: dict[str, Counter[str]] = {}
    for op in ops:
        if op.kind == "transition":
            levels.setdefault(op.device, Counter())[op.values.get("acting_level")] += 1
        if op.entity == "case" and op.kind == "create":
            nodes.setdefault(op.device, Counter())[op.values.get("origin_node")] += 1
    keys: dict[str, Ed25519PrivateKey] = {}
    devices: dict[str, dict[str, Any]] = {}
    with store.transaction():
        for device in sorted({op.device for op in ops}):
            level = (levels.get(device) or Counter({"village": 1})).most_common(1)[0][0]
            node = TOWNSHIP if level == "township" else (nodes.get(device) or Counter({TOWNSHIP: 1})).most_common(1)[0][0]
            ed, x = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
            keys[device] = ed
            store.conn.execute(
                "INSERT INTO devices(device_id, node, level, user, x25519, ed25519, enrolled_ms, app_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (device, node, level, "bench", pub_hex(x), pub_hex(ed), 0, "bench"))
    for device in keys:
        dev = store.device(device)
        assert dev is not None
        devices[device] = {"row": lifecycle.with_authors(store.conn, dev), "subtree": store.subtree(dev["node"])}
    svc = SyncService(store)
    lookup = svc._case_lookup(store.conn)
    server_x = store.keys.x25519.public_key()
    seqs: Counter[str] = Counter()
    held = 0
    seal_s = 0.0
    t1 = time.perf_counter()
    for start in range(0, len(ops), BATCH):
        chunk = ops[start:start + BATCH]
        sealed = []
        s0 = time.perf_counter()
        for op in chunk:
            seqs[op.device] += 1
            cs = ChangeSet(op.device, seqs[op.device], (op,))
            sealed.append((cs, env.seal_changeset(cs, signing_key=keys[op.device], recipient=server_x)))
        seal_s += time.perf_counter() - s0
        with store.transaction():
            for cs, data in sealed:
                seq = ledger.append(store.conn, kind="device", device=cs.device, device_seq=cs.seq, envelope=data,
                                    received_ms=1_790_000_000_000 + start)
                d = devices[cs.device]
                plan = plan_changeset(cs, [], [op.to_dict() for op in cs.ops], d["row"], d["subtree"], lookup)
                store.hold(plan.hold, seq, cs.device)
                held += len(plan.hold)
                before = store.max_op_seq()
                store.replica.apply_in_transaction(plan.apply)
                store.note_merged(seq, before)
        if (start // BATCH) % 10 == 9:
            _say(f"built {start + len(chunk):,}/{len(ops):,} envelopes")
    store.conn.execute("PRAGMA synchronous=FULL")
    return store, {"ops": len(ops), "devices": len(keys), "held": held, "generate_s": gen_s, "seal_s": seal_s,
                   "build_s": time.perf_counter() - t1}


def run(n: int, *, seed: int = 1, directory: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="minqing-bench-audit-", dir=directory) as tmp:
        store, built = build(Path(tmp), n, seed)
        entries = ledger.head(store.conn)[0]
        db_bytes = (Path(tmp) / "server" / "server.db").stat().st_size
        store.close()

        # the baseline: read the same bytes from the ledger and hash them
        store = ServerStore(Path(tmp) / "server")
        h0 = time.perf_counter()
        total = 0
        blobs = []
        for (blob,) in store.conn.execute("SELECT envelope FROM ledger ORDER BY ledger_seq"):
            hashlib.sha256(blob).hexdigest()
            total += len(blob)
            blobs.append(blob)
        hash_s = time.perf_counter() - h0
        m0 = time.perf_counter()
        for blob in blobs:
            hashlib.sha256(blob).hexdigest()
        memory_s = time.perf_counter() - m0
        del blobs
        store.close()

        # the command's work
        store = ServerStore(Path(tmp) / "server")
        marks: dict[str, float] = {}
        v0 = time.perf_counter()

        def progress(stage: str, done: int, total_: int) -> None:
            if done >= total_:
                marks.setdefault(stage, time.perf_counter() - v0)

        report = verify(SyncService(store), progress=progress)
        verify_s = time.perf_counter() - v0
        store.close()
    assert report["ok"], report
    return {"envelopes": entries, "bytes": total, "db_bytes": db_bytes, **built, "hash_s": hash_s,
            "memory_s": memory_s, "verify_s": verify_s, "chain_s": marks.get("chain"),
            "rebuild_s": (marks["rebuild"] - marks.get("chain", 0.0)) if "rebuild" in marks else None,
            "digest": report["live_digest"]}


def report(r: dict[str, Any]) -> None:
    print("== audit: sync-server audit verify vs reading and SHA-256 of the same envelopes ==")
    print(f"ledger: {r['envelopes']:,} envelopes of one op each ({r['devices']} devices, {r['held']:,} ops held "
          f"in quarantine), {r['bytes'] / 1e6:.1f} MB of envelopes, database {r['db_bytes'] / 1e6:.1f} MB")
    print(f"build (not timed): generate {r['generate_s']:.1f} s, seal {r['seal_s']:.1f} s, "
          f"ledger + merge {r['build_s'] - r['seal_s']:.1f} s")
    print(f"read + sha256 of every envelope (baseline): {r['hash_s']:.3f} s"
          f"  ({r['envelopes'] / r['hash_s']:,.0f} envelopes/s; sha256 alone, in memory: {r['memory_s']:.3f} s)")
    print(f"audit verify:                                {r['verify_s']:.2f} s"
          f"  ({r['envelopes'] / r['verify_s']:,.0f} envelopes/s)")
    if r["chain_s"] is not None and r["rebuild_s"] is not None:
        rest = r["verify_s"] - r["chain_s"] - r["rebuild_s"]
        print(f"  of which: hash chain {r['chain_s']:.2f} s, open + rebuild {r['rebuild_s']:.2f} s, "
              f"compare with the live state {rest:.2f} s")
    print(f"ratio verify / (read + sha256): {r['verify_s'] / r['hash_s']:.0f}x"
          f"  (verify / sha256 in memory: {r['verify_s'] / r['memory_s']:.0f}x)")
    print(f"verify passed; op digest {r['digest'][:40]}…")
