"""``bench.peers``: the week it hands PouchDB and Automerge is the week our sync sends.

A small village week, recorded through ``FieldClient`` on a laptop enrolled with an
in-process county server (``WsgiTransport``), its history synced first. The exported
edits must be one per op that ``SyncAgent.sync`` then pushes, in the laptop's order, on
the same records. The Node.js part (``bench/peers_js/peers.js`` on those edits) runs only
where Node.js and ``bench/peers_js/node_modules`` are installed.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench import peers
from bench import sync_week as S
from bench import workload as W
from bench.fieldwork import Mediator, SimClock
from field_client import keystore
from field_client.store import FieldClient
from field_client.sync import SyncAgent, WsgiTransport
from sync_server.app import create_app
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("peers")
    saved_n = keystore.SCRYPT_N
    keystore.SCRYPT_N = 2**10
    today = datetime.fromtimestamp(time.time(), W.CST).replace(hour=8, minute=0, second=0, microsecond=0)
    clock = SimClock((today - timedelta(days=12)).timestamp())
    store = ServerStore.init(root / "server", clock=clock)
    app: Any = None
    try:
        import_nodes(store, list(csv.DictReader(io.StringIO(S.JURISDICTION_CSV))))
        code = SyncService(store).create_enroll_code(S.VILLAGE, url="http://127.0.0.1:8730", hours=24 * 30)
        app = create_app(root / "server", {"MINQING_CLOCK": clock})
        transport = WsgiTransport(app)
        client = FieldClient.init(root / "laptop", S.PASSPHRASE, node=S.VILLAGE, user="wangli", node_name="东村",
                                  clock=clock)
        agent = SyncAgent(client, transport, retries=0)
        agent.enroll(code)
        device = client.device_id
        med = Mediator(client, 3, clock)
        for _ in range(4):
            med.new_case()
        med.work(25)
        agent.sync()  # the history: the server holds it
        clock.t = max(clock.t, (today - timedelta(days=5)).timestamp())
        for _ in range(3):
            med.new_case()
        for _ in range(6):
            med.visit()
        for _ in range(2):
            med.mediation()
        for _ in range(6):
            med.edit(med.pick())
        pending = client.pending_count()
        client.close()
        history, week_ops = S._week_ops(root / "laptop")
        edits = peers.export_edits(history, week_ops, root)
        path = root / "edits.json"
        peers.write_edits(edits, path)
        client = FieldClient.open(root / "laptop", S.PASSPHRASE, clock=clock)
        try:
            report = SyncAgent(client, transport, retries=0).sync()  # what our sync sends
        finally:
            client.close()
        sent = [r[0] for r in store.conn.execute("SELECT op_id FROM ops WHERE device=? ORDER BY seq", (device,))]
        yield {"pending": pending, "history": history, "week": week_ops, "edits": edits, "path": path,
               "report": report, "server_ops": sent}
    finally:
        if app is not None:
            app.extensions["minqing_coord_stores"].close_all()
        store.close()
        keystore.SCRYPT_N = saved_n


def test_the_exported_week_is_what_our_sync_sends(week: dict[str, Any]) -> None:
    edits = week["edits"]
    week_edits = [e for e in edits if e["week"]]
    ops = week["week"]
    assert week["pending"] > 20
    assert len(week_edits) == len(ops) == week["pending"] == week["report"].pushed_ops
    assert week["report"].quarantined == []
    assert [e["op_id"] for e in week_edits] == [op.op_id for op in ops]  # the order made
    history_ids = {op.op_id for op in week["history"]}
    assert [i for i in week["server_ops"] if i not in history_ids] == [op.op_id for op in ops]
    assert [e["op_id"] for e in edits if not e["week"]] == [op.op_id for op in week["history"]]
    assert {e["_id"] for e in week_edits} == {op.entity_id for op in ops}  # the same records
    assert {e["case_id"] for e in week_edits} == {op.case_id for op in ops}
    for e, op in zip(week_edits, ops, strict=True):
        assert e["type"] == op.entity and e["kind"] == op.kind
        assert None not in e["doc"].values() and "fold" not in e["doc"]
        if op.kind == "create":
            assert e["set"] == e["doc"]


def test_the_floor_inserts_the_weeks_records(week: dict[str, Any], tmp_path: Path) -> None:
    floor = peers.sqlite_floor(week["edits"], tmp_path, 0)
    records = {e["_id"] for e in week["edits"] if e["week"]}
    assert floor["records"] == len(records)
    assert floor["held"] == len(records | {e["_id"] for e in week["edits"] if not e["week"]})
    assert floor["bytes"] > 0 and floor["seconds"] >= 0


def test_node_peers_take_the_same_week(week: dict[str, Any]) -> None:
    why = peers.js_missing()
    if why is not None:
        pytest.skip(why)
    js = peers.run_js(week["path"], 1, warmup=0)
    n = len(week["week"])
    records = {e["_id"] for e in week["edits"] if e["week"]}
    assert js["edits"]["week"] == n and js["edits"]["history"] == len(week["history"])
    assert js["edits"]["week_records"] == len(records)
    http, local = js["pouchdb"]["http"], js["pouchdb"]["local"]
    assert http["docs_written"] == local["docs_written"] == len(records)
    assert http["same"] and local["same"] and http["bytes"] > 0
    am = js["automerge"]
    assert am["changes"]["docs"] == len({e["case_id"] for e in week["edits"] if e["week"]})
    assert am["changes"]["changes"] == sum(1 for e in week["edits"] if e["week"] and e["set"])
    assert all(am[k]["same"] for k in ("changes", "save_since", "sync", "save", "changes_immutable"))
