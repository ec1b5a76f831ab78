"""Bench: peers side by side: the same village week through our sync, PouchDB, Automerge, SQLite.

Issue 8: *"for the same village week of records, in one run: our sync, PouchDB
replication between two local databases (the npm ``pouchdb`` package with its memory
adapter, run with the machine's Node.js), and Automerge (``@automerge/automerge``)
encoding the same edits: bytes on the wire and time to merge, with a plain SQLite insert
as the floor."*

Set-up (not timed): ``bench.sync_week.build``: a real ``sync-server`` folder, a village
laptop (``FieldClient``) with two months of history already synced, and its week (about
687 ops: 40 new cases, 200 visits, 60 mediation sessions, 300 field edits), recorded
through the client's API. The laptop's ops, personal values opened, are then exported as
**edits** (``export_edits``), in the order they were made: for each op, the record it
touched (``_id`` = the record's id, ``type`` = its entity), the whole record after the op
(the replica's materialised row, without the replica's own ``fold``/``extra``/
``open_conflicts`` columns, null fields left out) and the fields the op changed. The
history's edits come first, marked, so that every peer starts the week holding them.

Timed, each round on fresh copies:

* **ours**: ``SyncAgent.sync()`` of the week against ``sync-server serve`` on 127.0.0.1,
  through ``ThrottleProxy`` with no throttling (it only counts): *bytes* = every byte
  both ways, HTTP headers included; *merge* = ``SyncService.receive`` of the same
  envelopes on a fresh copy of the pre-week server (``sync_week.merge_rate``): verify,
  open, validate, ledger, fold, commit; *exchange* = the sync's wall time.
* **PouchDB** and **Automerge**: ``bench/peers_js/peers.js`` (Node.js), reading the
  exported edits; it prints JSON. See that file for what is measured.
* **floor**: plain ``sqlite3``: one table ``records(id PRIMARY KEY, type, case_id, doc
  JSON)`` holding the history's records (not timed); the week's records, each at its
  state at the end of the week, upserted in one transaction (WAL, ``synchronous=FULL``,
  like the server). *bytes* = the inserted payload (ids, types and the documents' JSON).

``python -m bench peers``; without Node.js or ``bench/peers_js/node_modules`` it says
which command installs them and reports only ours and the floor.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import sync_week as S
from bench.throttle_proxy import ThrottleProxy
from conflict.replica import Replica
from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import HttpTransport, SyncAgent
from schema.ops import Op

JS_DIR = Path(__file__).resolve().parent / "peers_js"
JS_SCRIPT = JS_DIR / "peers.js"
INSTALL = "cd bench/peers_js && npm ci --no-audit --no-fund"
NODE_TIMEOUT = 600
INTERNAL_COLUMNS = ("fold", "extra", "open_conflicts")


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"  {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# the week as edits, for every peer
# ---------------------------------------------------------------------------


def export_edits(history: Sequence[Op], week: Sequence[Op], tmp: Path) -> list[dict[str, Any]]:
    """One edit per op (history first, then the week), in the order the laptop made them.

    ``{"op_id", "week", "type", "_id", "case_id", "kind", "doc", "set"}``: ``doc`` is the
    record after the op (null fields left out), ``set`` the fields the op changed (the
    whole ``doc`` for a create; a field that became null is ``null`` there).
    """
    scratch = Replica(tmp / "peers-export.db", synchronous="OFF")
    out: list[dict[str, Any]] = []
    last: dict[str, dict[str, Any]] = {}
    try:
        for in_week, ops in ((False, history), (True, week)):
            for op in ops:
                scratch.apply([op])
                row = scratch.get(op.entity, op.entity_id)
                assert row is not None, op
                for col in INTERNAL_COLUMNS:
                    row.pop(col, None)
                rid = row.pop("id")
                doc = {k: v for k, v in row.items() if v is not None}
                before = last.get(rid)
                if before is None:
                    changed = dict(doc)
                else:
                    changed = {k: v for k, v in doc.items() if before.get(k) != v}
                    changed.update({k: None for k in before if k not in doc})
                last[rid] = doc
                out.append({"op_id": op.op_id, "week": in_week, "type": op.entity, "_id": rid,
                            "case_id": op.case_id, "kind": op.kind, "doc": doc, "set": changed})
    finally:
        scratch.close()
    return out


def write_edits(edits: Sequence[dict[str, Any]], path: Path) -> int:
    data = json.dumps({"edits": list(edits)}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    path.write_bytes(data)
    return len(data)


# ---------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------


def our_sync(built: dict[str, Any], tmp: Path, name: str) -> dict[str, Any]:
    """The week's ``sync()`` against a fresh server (copies), through a counting proxy."""
    server = S._copy(built["server"], tmp / f"server-{name}")
    laptop = S._copy(built["laptop"], tmp / f"laptop-{name}")
    out: dict[str, Any] = {}
    with S.served(server, tmp / f"server-{name}.log") as port:
        proxy = ThrottleProxy(port, rate_bps=None, one_way_s=0.0, handshake=False)
        client = FieldClient.open(laptop, S.PASSPHRASE)
        transport = S.CountingTransport(HttpTransport(proxy.url))
        try:
            agent = SyncAgent(client, transport, retries=0)
            t0 = time.perf_counter()
            rep = agent.sync()
            out["seconds"] = time.perf_counter() - t0
            transport.close()
            time.sleep(0.3)  # the proxy's threads see the connection close
            c = proxy.snapshot()
            out.update(up=c.up, down=c.down, total=c.up + c.down, pushed_ops=rep.pushed_ops,
                       pulled_ops=rep.pulled_ops, connections=c.connections,
                       quarantined=len(rep.quarantined), exchanges=len(transport.log))
            out["envelopes"] = [(bytes(e), n) for _, e, n in client.replica.conn.execute(
                "SELECT seq, envelope, n_ops FROM outgoing WHERE seq > ? ORDER BY seq",
                (int(client.meta("push_seq", "0") or 0) - rep.pushed_envelopes,))]
        finally:
            client.close()
            proxy.close()
    for d in (server, laptop):
        shutil.rmtree(d, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------
# the floor
# ---------------------------------------------------------------------------


def _final_records(edits: Sequence[dict[str, Any]], in_week: bool) -> list[tuple[str, str, str, str]]:
    last: dict[str, dict[str, Any]] = {}
    for e in edits:
        if e["week"] == in_week:
            last[e["_id"]] = e
    return [(e["_id"], e["type"], e["case_id"], S._json(e["doc"]).decode("utf-8")) for e in last.values()]


def sqlite_floor(edits: Sequence[dict[str, Any]], tmp: Path, k: int) -> dict[str, Any]:
    """Upsert the week's records (end-of-week state) into a table holding the history's."""
    path = tmp / f"floor-{k}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE records (id TEXT PRIMARY KEY, type TEXT NOT NULL, case_id TEXT NOT NULL, "
                     "doc TEXT NOT NULL)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO records VALUES (?,?,?,?)", _final_records(edits, False))
        conn.execute("COMMIT")
        rows = _final_records(edits, True)
        payload = sum(len(a.encode()) + len(b.encode()) + len(c.encode()) + len(d.encode()) for a, b, c, d in rows)
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO records VALUES (?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                         "type=excluded.type, case_id=excluded.case_id, doc=excluded.doc", rows)
        conn.execute("COMMIT")
        seconds = time.perf_counter() - t0
        held = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return {"seconds": seconds, "bytes": payload, "records": len(rows), "held": held}


# ---------------------------------------------------------------------------
# PouchDB and Automerge (Node.js)
# ---------------------------------------------------------------------------


def js_missing() -> str | None:
    """Why the Node.js peers cannot run here (with the command that fixes it), or None."""
    node = shutil.which("node")
    if node is None:
        return ("Node.js is not installed (`node` not on PATH): install it (Debian: "
                f"`apt-get install nodejs npm`), then `{INSTALL}`")
    for pkg in ("pouchdb-core", "pouchdb-adapter-memory", "pouchdb-replication", "express-pouchdb",
                "@automerge/automerge"):
        if not (JS_DIR / "node_modules" / pkg / "package.json").exists():
            return f"bench/peers_js/node_modules lacks {pkg}: run `{INSTALL}`"
    return None


def run_js(edits_path: Path, repeat: int, warmup: int = 1) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    cmd = [node, str(JS_SCRIPT), str(edits_path), "--repeat", str(repeat), "--warmup", str(warmup)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=NODE_TIMEOUT, stdin=subprocess.DEVNULL,
                       cwd=JS_DIR)
    if p.returncode != 0:
        raise RuntimeError(f"node peers.js exited {p.returncode}:\n{p.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(p.stdout)
    return out


# ---------------------------------------------------------------------------
# the bench
# ---------------------------------------------------------------------------


def run(*, seed: int = 1, repeat: int = 3, progress: bool = True, directory: str | None = None) -> dict[str, Any]:
    keystore_n = keystore.SCRYPT_N
    keystore.SCRYPT_N = 2**12  # unlocking the laptop copies is not what is measured
    med = statistics.median
    try:
        with tempfile.TemporaryDirectory(prefix="minqing-peers-", dir=directory) as tmp_s:
            tmp = Path(tmp_s)
            t0 = time.perf_counter()
            built = S.build(tmp / "build", seed, progress)
            history, week = S._week_ops(built["laptop"])
            assert len(week) == built["week_ops"]
            edits = export_edits(history, week, tmp)
            edits_path = tmp / "week-edits.json"
            r: dict[str, Any] = {"seed": seed, "repeat": repeat, "history_ops": len(history),
                                 "week_ops": len(week), "week_from": built["week_from"],
                                 "week_to": built["week_to"], "directory": directory or tempfile.gettempdir()}
            r["export_bytes"] = write_edits(edits, edits_path)
            r["week_records"] = len({e["_id"] for e in edits if e["week"]})
            r["couch_model"] = S.couch_bytes(S.couch_revisions(history, week, tmp), latest_only=True)["total"]
            r["build_s"] = time.perf_counter() - t0
            why = js_missing()
            r["js_missing"] = why
            if why is None:
                _say(f"PouchDB and Automerge (node {JS_SCRIPT.name}, {repeat} round(s))", progress)
                try:
                    r["js"] = run_js(edits_path, repeat)
                except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
                    r["js_missing"] = f"node {JS_SCRIPT.name} failed: {exc}"
            syncs, merges, floors = [], [], []
            for k in range(repeat):
                _say(f"round {k + 1}: our sync (counting proxy), server merge, SQLite floor", progress)
                syncs.append(our_sync(built, tmp, f"peers-{k}"))
                envelopes = syncs[0]["envelopes"]
                merges.append(S.merge_rate(built, envelopes, week, tmp, k, None))
                floors.append(sqlite_floor(edits, tmp, k))
            for s in syncs:
                s.pop("envelopes", None)
            r["ours"] = {"bytes": syncs[0]["total"], "up": syncs[0]["up"], "down": syncs[0]["down"],
                         "exchanges": syncs[0]["exchanges"], "pushed_ops": syncs[0]["pushed_ops"],
                         "pulled_ops": syncs[0]["pulled_ops"], "connections": syncs[0]["connections"],
                         "quarantined": syncs[0]["quarantined"],
                         "merge_s": med(m["server_s"] for m in merges),
                         "merge_rounds": [m["server_s"] for m in merges],
                         "sync_s": med(s["seconds"] for s in syncs), "sync_rounds": [s["seconds"] for s in syncs],
                         "same_state": all(m["equal"] for m in merges)}
            r["floor"] = {"bytes": floors[0]["bytes"], "records": floors[0]["records"],
                          "seconds": med(f["seconds"] for f in floors), "rounds": [f["seconds"] for f in floors]}
            return r
    finally:
        keystore.SCRYPT_N = keystore_n


def table(r: dict[str, Any]) -> list[tuple[str, int | None, float, float | None]]:
    """Rows: (system, bytes or None, time to merge in s, whole exchange in s or None)."""
    o = r["ours"]
    rows: list[tuple[str, int | None, float, float | None]] = [
        ("ours: sync to sync-server over loopback HTTP", o["bytes"], o["merge_s"], o["sync_s"]),
    ]
    js = r.get("js")
    if js:
        p, a = js["pouchdb"], js["automerge"]
        rows += [
            ("PouchDB: memory -> express-pouchdb (memory) over HTTP", p["http"]["bytes"], p["http"]["seconds"],
             p["http"]["seconds"]),
            ("PouchDB: memory -> memory, in process", None, p["local"]["seconds"], None),
            ("Automerge: the week's changes, applied to a peer with history", a["changes"]["bytes"],
             a["changes"]["apply_s"], None),
            ("Automerge: sync protocol, both ways, peer with history", a["sync"]["bytes"], a["sync"]["recv_s"],
             a["sync"]["seconds"]),
            ("Automerge: save() of the week's docs, load() by an empty peer", a["save"]["bytes"],
             a["save"]["load_s"], None),
            ("Automerge, strings as ImmutableString: changes", a["changes_immutable"]["bytes"],
             a["changes_immutable"]["apply_s"], None),
        ]
    f = r["floor"]
    rows.append(("floor: SQLite upsert of the week's records, one transaction", f["bytes"], f["seconds"], None))
    return rows


def report(r: dict[str, Any], out: Any = None) -> None:
    w = (out or sys.stdout).write
    w(f"peers: village 330102101's week {r['week_from']} .. {r['week_to']}: {r['week_ops']} ops on "
      f"{r['week_records']} records (history before it: {r['history_ops']} ops, held by every peer); "
      f"exported edits {r['export_bytes']:,} bytes; set-up {r['build_s']:.1f} s (not timed); "
      f"{r['repeat']} round(s), medians\n")
    if r.get("js_missing"):
        w(f"  PouchDB and Automerge not measured: {r['js_missing']}\n")
    f = r["floor"]
    w(f"    {'system':<64} {'bytes':>9} {'merge ms':>9} {'exchange ms':>12} {'bytes/floor':>12} "
      f"{'time/floor':>11}\n")
    for name, b, s, ex in table(r):
        bs = f"{b:>9,}" if b is not None else f"{'-':>9}"
        br = f"{b / f['bytes']:>12.3f}" if b is not None else f"{'-':>12}"
        exs = f"{1000 * ex:>12.1f}" if ex is not None else f"{'-':>12}"
        w(f"    {name:<64} {bs} {1000 * s:>9.1f} {exs} {br} {s / f['seconds']:>11.1f}\n")
    o = r["ours"]
    w(f"  ours: up {o['up']:,}, down {o['down']:,} in {o['exchanges']} POSTs on {o['connections']} TCP "
      f"connection(s); pushed {o['pushed_ops']} ops, quarantined {o['quarantined']}, pulled {o['pulled_ops']} "
      f"(the server's own); merge rounds "
      + ", ".join(f"{1000 * x:.1f}" for x in o["merge_rounds"])
      + " ms; sync rounds " + ", ".join(f"{1000 * x:.0f}" for x in o["sync_rounds"])
      + f" ms; server state equal to Replica.apply's: {'yes' if o['same_state'] else 'NO'}\n")
    w(f"  floor: {f['records']} records upserted; rounds " + ", ".join(f"{1000 * x:.1f}" for x in f["rounds"])
      + " ms\n")
    js = r.get("js")
    if js:
        p, a = js["pouchdb"], js["automerge"]
        h = p["http"]
        w(f"  PouchDB {js['versions']['pouchdb']}: {h['docs_written']} docs written, {h['requests']} HTTP requests on {h['connections']} TCP connections "
          f"(up {h['up']:,}, down {h['down']:,}); target holds {h['target_docs']} docs = source: "
          f"{'yes' if h['same'] and p['local']['same'] else 'NO'}; rounds http "
          + ", ".join(f"{1000 * x:.0f}" for x in h["rounds"]) + " ms, local "
          + ", ".join(f"{1000 * x:.0f}" for x in p["local"]["rounds"]) + " ms\n")
        w(f"    requests: {', '.join(f'{k} {v}' for k, v in sorted(h['by_path'].items()))}; the sync bench's "
          f"CouchDB-style model of this week (latest revision only) {r['couch_model']:,} bytes\n")
        c = a["changes"]
        w(f"  Automerge {js['versions']['automerge']}: one document per case; {c['docs']} docs changed in the "
          f"week, {c['changes']} changes; peer equal to the source: "
          f"{'yes' if c['same'] and a['sync']['same'] and a['save']['same'] else 'NO'}; saveSince of the same changes "
          f"{a['save_since']['bytes']:,} bytes, loadIncremental {1000 * a['save_since']['load_s']:.1f} ms; sync protocol "
          f"{a['sync']['messages']} messages (up {a['sync']['up']:,}, down {a['sync']['down']:,}); save() of "
          f"all {a['save']['all_docs']} docs {a['save']['all_bytes']:,} bytes\n")
        w("  Automerge rounds (ms): changes " + ", ".join(f"{1000 * x:.0f}" for x in c["rounds"])
          + "; ImmutableString changes " + ", ".join(f"{1000 * x:.0f}" for x in a["changes_immutable"]["rounds"])
          + f"; node {js['versions']['node']}, {js['warmup']} warm-up round(s) not counted\n")
