"""The fault suite (issue 8, docs/faults.md): real laptops and a real county server under faults.

``run(Config)`` builds, in a temporary folder:

* a county server: ``sync-server init`` and ``jurisdiction import`` (the CLI), then
  ``sync-server serve`` on 127.0.0.1 (a free port) as a process of its own;
* ``Config.laptops`` field clients (``FieldClient.init``: keys, at-rest encryption),
  two in the same village and one in their township when there are three or more, so
  the same cases are edited on several laptops and conflicts appear; each with its
  clock off the machine's by days (and the offline work done before enrollment is
  stamped with that clock);
* a ``FaultProxy`` (tests/faults/proxy.py) between the laptops and the server.

Then ``Config.runs`` rounds. In each, every laptop records cases, visits, notes, title
edits and transitions (in this process, with its skewed clock), then all laptops sync at
once, each ``SyncAgent.sync()`` in a process of its own (tests/faults/worker.py), through
the proxy, which drops, delays, duplicates, replays, reorders and truncates requests and
answers. Some rounds kill a laptop's sync with SIGKILL (at a random moment, or just as
the server's answer to it arrives), kill the server with SIGKILL a few milliseconds after
a change set has reached it (restarted at once on the same data folder), or set a
laptop's clock off by days more.

After the rounds, a clean exchange: every laptop syncs straight with the server until a
whole pass moves nothing; each laptop asks the server's ``/verify`` (``field-client
verify``), the server folds its ledger again (``sync-server rebuild``), the server is
stopped, and ``check`` compares the files:

* every op any laptop wrote is on the server exactly once (or held in quarantine with a
  reason), and is in exactly one applied ledger envelope;
* every laptop holds every op of its scope (the server's ops of the cases whose origin
  or handling node is in its subtree, and its own), with the same stamps: its op-set
  digest equals the server's over the same ops;
* nothing is twice anywhere: no op in two applied ledger envelopes, no (device, seq) or
  envelope in the ledger twice, no op twice in any op log or in two of a laptop's
  change sets;
* every replica's tables are the fold of its op log (``Replica.verify_rebuild``), and
  each laptop's rows (personal fields opened with its key) equal the server's rows of the
  same cases, conflicts included.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.end_to_end.conftest import (  # the same county and server process helpers as the end-to-end tests
    COUNTY,
    JURISDICTION_CSV,
    TOWN_E,
    VILLAGE_1,
    VILLAGE_2,
    VILLAGE_3,
    free_port,
    sync_server_cmd,
)
from tests.faults.proxy import FaultProxy, Request

PASSPHRASE = "faults-password-1"
DAY_MS = 86_400_000
# (name, node, level), in the order laptops are added: the first three share cases
LAPTOPS = [
    ("a", VILLAGE_1, "village"), ("b", VILLAGE_1, "village"), ("t", TOWN_E, "township"),
    ("c", VILLAGE_2, "village"), ("d", VILLAGE_3, "village"), ("k", COUNTY, "county"),
    ("e", VILLAGE_1, "village"), ("f", VILLAGE_3, "village"),
]
FAULT_ORDER = ("drop", "delay", "duplicate", "replay", "reorder", "truncate_up", "truncate_down",
               "client_kill", "server_kill", "clock_skew", "stick_truncated", "stick_stale", "stick_answer_lost",
               "stick_old_answer")
WORKER_TIMEOUT_S = 90.0
START_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 120.0


@dataclass
class Config:
    runs: int = 12
    laptops: int = 4
    seed: int = 1
    p_fault: float = 0.3  # per request through the proxy
    p_client_kill: float = 0.4  # per round: one laptop's sync is killed
    p_server_kill: float = 0.3  # per round: the server is killed during a merge
    p_skew: float = 0.2  # per round: one laptop's clock jumps by days
    p_relay: float = 0.25  # per round: one laptop syncs by USB stick (bundles) instead
    pull_limit: int | None = None  # ops per pull answer in the rounds (None: the agent's 300)
    max_skew_days: int = 9
    work_dir: Path | None = None  # default: a new temporary folder, removed afterwards
    keep: bool = False  # keep the work folder


# ---------------------------------------------------------------------------
# The county server as a process
# ---------------------------------------------------------------------------


class ServerProcess:
    """``sync-server serve`` on 127.0.0.1; SIGKILL and restart on the same data folder."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data = data
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> dict[str, Any]:
        p = subprocess.run([*sync_server_cmd(), *args, "--data", str(self.data), "--json"], capture_output=True,
                           text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
        try:
            doc = json.loads(p.stdout)
        except ValueError:
            raise RuntimeError(f"sync-server {' '.join(args)} exited {p.returncode}: {p.stdout}{p.stderr}") from None
        if p.returncode not in (0, 1) or "Traceback" in p.stderr:
            raise RuntimeError(f"sync-server {' '.join(args)} exited {p.returncode}: {p.stdout}{p.stderr}")
        return doc  # type: ignore[no-any-return]

    def start(self) -> None:
        """Serve on a new free port (a port just killed may linger); a few tries."""
        import requests

        for _ in range(3):
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [*sync_server_cmd(), "serve", "--data", str(self.data), "--host", "127.0.0.1",
                     "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with requests.Session() as s:
                        if s.get(self.url + "/api/v1/ping", timeout=1).status_code == 200:
                            self.starts += 1
                            return
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            self.kill()
        raise RuntimeError(f"sync-server serve did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> bool:
        """SIGKILL; True when it was running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return False
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return alive

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


# ---------------------------------------------------------------------------
# Laptops
# ---------------------------------------------------------------------------


@dataclass
class Laptop:
    name: str
    node: str
    level: str
    dir: Path
    skew_ms: int
    device_id: str = ""
    titles: int = 0

    def clock(self) -> Callable[[], float]:
        skew = self.skew_ms / 1000
        return lambda: time.time() + skew


@contextlib.contextmanager
def cheap_keyfiles() -> Iterator[None]:
    """A cheaper scrypt for the laptops' key files (the cost is stored in each file)."""
    from field_client import keystore

    before = keystore.SCRYPT_N
    keystore.SCRYPT_N = 2**10
    try:
        yield
    finally:
        keystore.SCRYPT_N = before


@contextlib.contextmanager
def opened(lap: Laptop) -> Iterator[Any]:
    from field_client.store import FieldClient

    client = FieldClient.open(lap.dir, PASSPHRASE, clock=lap.clock())
    try:
        yield client
    finally:
        client.close()


_phones = iter(range(13_800_000_000, 13_899_999_999))


def new_case(client: Any, rnd: random.Random) -> str:
    subject, category = rnd.choice([("neighbour", "dispute"), ("family", "dispute"), ("land", "dispute"),
                                    ("wage_arrears", "complaint")])
    title = rnd.choice(["宅基地边界纠纷", "灌溉水渠纠纷", "赡养老人纠纷", "拖欠农民工工资", "邻里噪音纠纷"])
    values = {"title": title, "category": category, "subject": subject, "channel": "visit",
              "summary": "当事人反映情况，请求协调解决。"}
    parties = [{"role": "petitioner", "name": rnd.choice(["王建国", "李秀英", "张伟", "刘芳"]),
                "phone": str(next(_phones))}, {"role": "respondent", "name": "陈明"}]
    try:
        return str(client.new_case(values, parties))
    except Exception:  # noqa: BLE001 - a subject this county's enums lack: the plainest case
        values.update(subject="neighbour", category="dispute")
        return str(client.new_case(values, parties))


def subtree_of(node: str) -> list[str]:
    """The nodes under ``node`` in JURISDICTION_CSV (itself excluded)."""
    parents = {row.split(",")[0]: row.split(",")[3] for row in JURISDICTION_CSV.splitlines()[1:]}
    out, todo = [], [node]
    while todo:
        n = todo.pop()
        kids = sorted(c for c, p in parents.items() if p == n)
        out += kids
        todo += kids
    return out


def record_work(lap: Laptop, rnd: random.Random, n_actions: int) -> Counter[str]:
    """Casework on one laptop, offline: new cases, visits, notes, title edits, transitions,
    and (township and county laptops) routing a case of their own to a node below them
    (交办), so that it newly enters another laptop's scope and travels with its history."""
    from field_client.errors import ClientError
    from schema import lifecycle
    from schema.errors import MinqingError

    done: Counter[str] = Counter()
    below = subtree_of(lap.node)
    with opened(lap) as c:
        for _ in range(n_actions):
            cases = [r[0] for r in c.replica.conn.execute("SELECT id FROM cases WHERE voided=0 ORDER BY id")]
            kinds = ["case", "visit", "note", "edit", "edit", "transition"] + (["route"] * 2 if below else [])
            kind = rnd.choice(kinds) if cases else "case"
            try:
                if kind == "case":
                    new_case(c, rnd)
                elif kind == "visit":
                    c.add_record("visit", rnd.choice(cases), {
                        "kind": "home", "visited_at": c_now(c), "visitor": c.user, "summary": "上门了解情况。"})
                elif kind == "note":
                    c.add_record("note", rnd.choice(cases), {"text": f"{lap.name}：已电话联系当事人。",
                                                             "written_at": c_now(c)})
                elif kind == "edit":
                    lap.titles += 1
                    c.edit("case", rnd.choice(cases), {"title": f"纠纷（{lap.name}第{lap.titles}稿）"})
                elif kind == "route":
                    mine = [r[0] for r in c.replica.conn.execute(
                        "SELECT id FROM cases WHERE state='registered' AND origin_node=? AND node=? ORDER BY id",
                        (lap.node, lap.node))]
                    if not mine:
                        kind = "case"
                        mine = [new_case(c, rnd)]
                    c.transition(rnd.choice(mine), "route", to_node=rnd.choice(below))
                else:
                    case = rnd.choice(cases)
                    row = c.replica.get("case", case)
                    allowed = [a for a in lifecycle.actions_for(row, c.level)
                               if a in ("accept", "start")]
                    if not allowed:
                        kind = "note"
                        c.add_record("note", case, {"text": "情况跟进。", "written_at": c_now(c)})
                    else:
                        c.transition(case, rnd.choice(allowed))
            except (ClientError, MinqingError) as exc:
                done[f"refused:{getattr(exc, 'code', type(exc).__name__)}"] += 1
                continue
            done[kind] += 1
    return done


def concurrent_edit(laptops: list[Laptop], rnd: random.Random) -> int:
    """Two laptops that both hold a case give its title different values before either
    syncs: a concurrent edit, which every replica must show as the same conflict."""
    held: dict[str, list[Laptop]] = {}
    for lap in laptops:
        with opened(lap) as c:
            for (cid,) in c.replica.conn.execute("SELECT id FROM cases WHERE voided=0"):
                held.setdefault(cid, []).append(lap)
    shared = sorted(cid for cid, laps in held.items() if len(laps) >= 2)
    if not shared:
        return 0
    case = rnd.choice(shared)
    pair = rnd.sample(held[case], 2)
    for lap in pair:
        lap.titles += 1
        with opened(lap) as c:
            c.edit("case", case, {"title": f"纠纷（{lap.name}第{lap.titles}稿，同时修改）"})
    return 1


def c_now(client: Any) -> str:
    from field_client.store import now_iso

    return now_iso(client.clock)


# ---------------------------------------------------------------------------
# One laptop's sync in a process of its own
# ---------------------------------------------------------------------------


class Worker:
    def __init__(self, lap: Laptop, url: str, pull_limit: int | None = None) -> None:
        env = {**os.environ, "MINQING_PASSPHRASE": PASSPHRASE, "PYTHONDONTWRITEBYTECODE": "1"}
        self.lap = lap
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.worker", str(lap.dir), url, str(lap.skew_ms),
             *([str(pull_limit)] if pull_limit else [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
            cwd=str(Path(__file__).resolve().parents[2]))
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.err = b""
        self.killed = False
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            self.lines.append(line)
            if line == "ready":
                self.ready.set()
        self.ready.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    def kill(self) -> bool:
        """SIGKILL if it still runs; True when this call killed it."""
        with self._lock:
            if self.proc.poll() is not None:
                return False
            self.killed = True  # before the signal: whoever sees the exit sees the mark
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return True

    def finish(self, timeout: float) -> str:
        """Wait; the outcome: ok, failed:<code>, killed, hung or crashed:<rc>."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self._join()
            return "hung"
        self._join()
        with self._lock:
            killed = self.killed
        if killed:
            return "killed"
        last = json.loads(self.lines[-1]) if self.lines and self.lines[-1].startswith("{") else None
        if self.proc.returncode == 0 and last and last.get("ok"):
            return "ok"
        if self.proc.returncode == 3 and last:
            return f"failed:{last.get('code')}"
        return f"crashed:{self.proc.returncode}"

    def _join(self) -> None:
        self._reader.join(timeout=10)
        self._err_reader.join(timeout=10)
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()


# ---------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------


@dataclass
class ReplicaFigure:
    name: str
    expected: int
    found: int
    missing: int
    extra: int
    stamps_differ: int
    rows_differ: int
    digest_equal: bool
    outside: int = 0  # held beyond its scope: ops of cases that left it, its own ops in quarantine


@dataclass
class Figures:
    ops_written: int = 0  # by the laptops
    server_ops: int = 0  # written by the server itself (sweep)
    on_server: int = 0  # of the laptops' ops, on the server
    held: int = 0  # of the laptops' ops, held in quarantine with a reason
    held_codes: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicates: int = 0
    duplicate_kinds: Counter[str] = field(default_factory=Counter)
    replicas: list[ReplicaFigure] = field(default_factory=list)
    conflicts: int = 0  # on the server
    identical: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicates == 0 and self.identical and not self.problems
                and all(r.found == r.expected for r in self.replicas))


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _subtree(nodes: dict[str, str | None], root: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for code, parent in nodes.items():
        if parent:
            children.setdefault(parent, []).append(code)
    out, todo = set(), [root]
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(children.get(n, []))
    return out


def _ledger_ops(server_dir: Path, conn: sqlite3.Connection) -> tuple[list[tuple[int, str, str, int, list[str]]],
                                                                       list[str]]:
    """Every ledger entry opened with the server's key: (ledger_seq, kind, device, device_seq, op ids)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from schema import envelope as env
    from sync_server.keys import load

    keys = load(server_dir)
    devices = dict(conn.execute("SELECT device_id, ed25519 FROM devices"))

    def sender_key(sender: str) -> Any:
        if sender == keys.node_id:
            return keys.ed25519.public_key()
        hex_key = devices.get(sender)
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key)) if hex_key else None

    out, problems = [], []
    for seq, kind, device, device_seq, envelope in conn.execute(
            "SELECT ledger_seq, kind, device, device_seq, envelope FROM ledger ORDER BY ledger_seq"):
        try:
            sealed = env.open(bytes(envelope), recipient_key=keys.x25519, sender_key=sender_key)
        except Exception as exc:  # noqa: BLE001 - reported as a problem of the ledger
            problems.append(f"ledger entry {seq} does not open: {exc}")
            continue
        ids = [str(op.get("op_id")) for op in sealed.payload.get("ops", []) if isinstance(op, dict)]
        out.append((int(seq), str(kind), str(device), int(device_seq), ids))
    return out, problems


def check(server_dir: Path, laptops: list[tuple[str, Path]], *, passphrase: str = PASSPHRASE) -> Figures:
    """Compare the server's data folder with every laptop's (files only, read-only; the
    ``verify_rebuild`` folds read too). See the module docstring for what is compared."""
    from conflict.digest import op_digest
    from conflict.replica import CONFLICT_COLUMNS, TABLE_COLUMNS, Replica
    from field_client import keystore
    from schema.entities import ENTITIES

    fig = Figures()
    table_entity = {spec.table: name for name, spec in ENTITIES.items()}
    sconn = _ro(server_dir / "server.db")
    try:
        rows = sconn.execute("SELECT op_id, stamp, case_id, device FROM ops").fetchall()
        n_rows = len(rows)
        server_ops = {r[0]: (r[1], r[2], r[3]) for r in rows}
        if n_rows != len(server_ops):
            fig.duplicate_kinds["op twice in the server's op log"] += n_rows - len(server_ops)
        nodes = dict(sconn.execute("SELECT code, parent FROM nodes"))
        cases = sconn.execute("SELECT id, origin_node, node FROM cases").fetchall()
        held = {r[0]: r[1] for r in sconn.execute("SELECT op_id, code FROM quarantine WHERE status='held'")}
        held_at = {(r[0], r[1]) for r in sconn.execute("SELECT op_id, ledger_seq FROM quarantine")}
        fig.conflicts = int(sconn.execute("SELECT COUNT(*) FROM conflicts").fetchone()[0])
        device_ids = {r[0] for r in sconn.execute("SELECT device_id FROM devices")}

        # the ledger: every envelope once, every op merged from exactly one envelope
        entries, problems = _ledger_ops(server_dir, sconn)
        fig.problems += problems
        seen_dev: Counter[tuple[str, int]] = Counter(
            (dev, dseq) for _, kind, dev, dseq, _ in entries if kind == "device")
        fig.duplicate_kinds["(device, seq) twice in the ledger"] += sum(n - 1 for n in seen_dev.values() if n > 1)
        shas = Counter(r[0] for r in sconn.execute("SELECT sha256 FROM ledger"))
        fig.duplicate_kinds["envelope twice in the ledger"] += sum(n - 1 for n in shas.values() if n > 1)
        merged: Counter[str] = Counter()
        for seq, _, _, _, ids in entries:
            for op_id in ids:
                if (op_id, seq) not in held_at:
                    merged[op_id] += 1
        fig.duplicate_kinds["op merged from two envelopes"] += sum(n - 1 for n in merged.values() if n > 1)
        unledgered = set(server_ops) - set(merged)
        if unledgered:
            fig.problems.append(f"{len(unledgered)} op(s) on the server in no ledger envelope")
        ghost = set(merged) - set(server_ops)
        if ghost:
            fig.problems.append(f"{len(ghost)} op(s) merged from the ledger are not in the server's op log")
    finally:
        sconn.close()
    server_authored = {i for i, (_, _, dev) in server_ops.items() if dev not in device_ids}
    fig.server_ops = len(server_authored)

    # the laptops
    written: dict[str, set[str]] = {}
    per_laptop: list[tuple[str, Path, Any, set[str]]] = []
    for name, d in laptops:
        keys = keystore.unlock(d, passphrase)
        conn = _ro(d / "replica.db")
        try:
            outbox = [r[0] for r in conn.execute("SELECT op_id FROM outbox")]
            pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE acked=0").fetchone()[0]
            if _has_table(conn, "outgoing"):
                pending += conn.execute("SELECT COUNT(*) FROM outgoing WHERE acked_ms IS NULL").fetchone()[0]
            ops = conn.execute("SELECT op_id, stamp, device FROM ops").fetchall()
            packed = [r[0] for r in conn.execute("SELECT op_id FROM packed")] if _has_table(conn, "packed") else []
        finally:
            conn.close()
        mine = set(outbox)
        written[name] = mine
        if pending:
            fig.problems.append(f"{name}: {pending} op(s) or change set(s) still unacknowledged")
        if len(outbox) != len(mine):
            fig.duplicate_kinds[f"op twice in {name}'s outbox"] += len(outbox) - len(mine)
        if len(packed) != len(set(packed)):
            fig.duplicate_kinds[f"op in two of {name}'s change sets"] += len(packed) - len(set(packed))
        if len(ops) != len({r[0] for r in ops}):
            fig.duplicate_kinds[f"op twice in {name}'s op log"] += len(ops) - len({r[0] for r in ops})
        authored = {r[0] for r in ops if r[2] == keys.device_id}
        if authored != mine:
            fig.problems.append(f"{name}: its op log and its outbox disagree on what it wrote "
                                f"({len(authored ^ mine)} op(s))")
        per_laptop.append((name, d, keys, {r[0] for r in ops}))

    all_written = set().union(*written.values()) if written else set()
    fig.ops_written = len(all_written)
    fig.on_server = len(all_written & set(server_ops))
    fig.held = len((all_written - set(server_ops)) & set(held))
    fig.held_codes.update(held[i] for i in (all_written - set(server_ops)) & set(held))
    not_on_server = all_written - set(server_ops) - set(held)
    fig.lost = len(not_on_server)
    unknown = set(server_ops) - all_written - server_authored
    if unknown:
        fig.problems.append(f"server: {len(unknown)} op(s) of a laptop that is not in its outbox")
    fig.replicas.append(ReplicaFigure("server", len(all_written) + fig.server_ops - fig.held, len(server_ops),
                                      len(not_on_server), len(unknown), 0, 0, True))

    # each laptop against the server, within its scope
    server_replica = Replica(server_dir / "server.db", create=False)
    try:
        srv_diff = server_replica.verify_rebuild()
        srv_snapshot = server_replica.snapshot()
    finally:
        server_replica.close()
    if srv_diff:
        fig.problems.append(f"server: its tables are not the fold of its op log ({len(srv_diff)}: {srv_diff[:3]})")
    identical = not srv_diff
    for (name, d, keys, found), (lname, _) in zip(per_laptop, laptops, strict=True):
        assert name == lname
        sub = _subtree(nodes, str(keys.info["node"]))
        scope = {cid for cid, origin, node in cases if origin in sub or node in sub}
        # what it must hold: the server's ops of the cases now in its scope, and its own that
        # the server took. It may hold more: ops of a case that has left its scope since
        # (escalated above it: the server sends no more of it), and its own ops the server
        # holds in quarantine (counted above, with their reason).
        expected = {op_id for op_id, (_, case_id, _) in server_ops.items() if case_id in scope} \
            | (written[name] & set(server_ops))
        missing = expected - found
        outside = found - expected
        extra = outside - set(server_ops) - set(held)
        replica = Replica(d / "replica.db", create=False)
        try:
            pairs = dict(replica.op_pairs())
            diff = replica.verify_rebuild()
            snap = replica.snapshot()
        finally:
            replica.close()
        stamps_differ = sum(1 for i in found & set(server_ops) if pairs[i] != server_ops[i][0])
        want = op_digest((i, server_ops[i][0]) for i in expected)
        digest_equal = op_digest((i, pairs[i]) for i in found & expected) == want
        rows_differ = _rows_differ(srv_snapshot, snap, scope, keystore.Sealer(keys.data_key), table_entity,
                                   TABLE_COLUMNS, CONFLICT_COLUMNS)
        if diff:
            fig.problems.append(f"{name}: its tables are not the fold of its op log ({len(diff)}: {diff[:3]})")
        fig.lost += len(missing)
        identical = identical and not diff and not missing and not extra and not stamps_differ \
            and not rows_differ and digest_equal
        fig.replicas.append(ReplicaFigure(name, len(expected), len(found & expected), len(missing), len(extra),
                                          stamps_differ, rows_differ, digest_equal, len(outside)))
    fig.duplicates = sum(fig.duplicate_kinds.values())
    fig.identical = identical and not fig.lost and not fig.duplicates
    return fig


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _rows_differ(server: dict[str, list[tuple[Any, ...]]], laptop: dict[str, list[tuple[Any, ...]]],
                 scope: set[str], sealer: Any, table_entity: dict[str, str],
                 table_columns: dict[str, tuple[str, ...]], conflict_columns: tuple[str, ...]) -> int:
    """How many rows of the laptop's scope differ from the server's (personal fields opened;
    ``fold``, the fold's own state with sealed values inside, left out)."""
    n = 0
    for table, srows in server.items():
        cols = conflict_columns if table == "conflicts" else table_columns[table]
        key = cols.index("id") if table == "cases" else cols.index("case_id")
        keep = [i for i, c in enumerate(cols) if c != "fold"]
        entity = table_entity.get(table)

        def norm(row: tuple[Any, ...], opened: bool, cols: tuple[str, ...] = cols, keep: list[int] = keep,
                 entity: str | None = entity) -> tuple[Any, ...]:
            if opened and entity is not None:
                row = tuple(sealer.open_row(entity, dict(zip(cols, row, strict=True))).values())
            return tuple(row[i] for i in keep)

        mine = {r[0]: norm(r, False) for r in srows if r[key] in scope}
        theirs = {r[0]: norm(r, True) for r in laptop.get(table, []) if r[key] in scope}
        n += sum(1 for rid in set(mine) | set(theirs) if mine.get(rid) != theirs.get(rid))
    return n


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


@dataclass
class Result:
    config: Config
    runs: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    syncs: Counter[str] = field(default_factory=Counter)  # outcomes of the laptops' syncs under faults
    requests: int = 0
    work: Counter[str] = field(default_factory=Counter)
    server_kills_in_merge: int = 0  # server kills a few ms after a change set reached it
    server_kills_committed: int = 0  # of those, the change set was in the ledger after the restart
    clean_passes: int = 0
    converged: bool = False
    verify_in_sync: dict[str, bool] = field(default_factory=dict)  # the digests equal outright
    verify_agrees: dict[str, bool] = field(default_factory=dict)  # nothing missing on either side
    rebuild_equal: bool = False
    figures: Figures = field(default_factory=Figures)
    seconds: float = 0.0
    work_dir: Path | None = None
    laptops: list[tuple[str, str, int]] = field(default_factory=list)  # (name, node, skew days)

    @property
    def ok(self) -> bool:
        crashes = sum(n for k, n in self.syncs.items() if k.startswith(("crashed", "hung")))
        return (self.figures.ok and self.converged and self.rebuild_equal and not crashes
                and all(self.verify_agrees.values()) and len(self.verify_agrees) == len(self.laptops))


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


class Harness:
    def __init__(self, config: Config, root: Path, progress: Callable[[str], None] | None) -> None:
        self.cfg = config
        self.root = root
        self.progress = progress
        self.rnd = random.Random(config.seed)
        self.result = Result(config, work_dir=root)
        self.server = ServerProcess(root / "server", root / "server.log")
        self.laptops: list[Laptop] = []
        self.proxy: FaultProxy | None = None
        self.workers: list[Worker] = []
        self._lock = threading.Lock()
        self._server_kill: dict[str, Any] | None = None
        self._client_kill: dict[str, Any] | None = None
        self._kill_threads: list[threading.Thread] = []
        self._sticks = 0

    # ---- set-up ----

    def setup(self) -> None:
        from field_client.store import FieldClient
        from field_client.sync import HttpTransport, SyncAgent

        csv = self.root / "county.csv"
        csv.write_text(JURISDICTION_CSV, encoding="utf-8")
        self.server.cli("init", "--url", "http://127.0.0.1:8730")
        self.server.cli("jurisdiction", "import", str(csv))
        self.server.start()
        for i in range(self.cfg.laptops):
            name, node, level = LAPTOPS[i % len(LAPTOPS)]
            if i >= len(LAPTOPS):
                name = f"{name}{i // len(LAPTOPS)}"
            skew_days = 0 if i == 0 else self.rnd.choice([-1, 1]) * self.rnd.randint(1, self.cfg.max_skew_days)
            lap = Laptop(name, node, level, self.root / f"laptop-{name}", skew_days * DAY_MS)
            with cheap_keyfiles():
                client = FieldClient.init(lap.dir, PASSPHRASE, node=node, level=level, user=f"user.{name}",
                                          clock=lap.clock())
            lap.device_id = client.device_id
            try:
                new_case(client, self.rnd)  # offline, before enrollment: stamped with the skewed clock
                code = self.server.cli("device", "add", "--node", node, "--url", self.server.url)["code"]
                transport = HttpTransport(self.server.url, timeout=(5.0, 30.0))
                SyncAgent(client, transport, retries=2, backoff_s=0.1).enroll(code)
                transport.session.close()
            finally:
                client.close()
            self.laptops.append(lap)
            self.result.laptops.append((name, node, skew_days))
        self.proxy = FaultProxy(self.server.port, rnd=random.Random(self.rnd.random()), p_fault=self.cfg.p_fault)
        self.proxy.on_sent = self._on_sent
        self.proxy.on_answer = self._on_answer
        _say(self.progress, "laptops: " + ", ".join(
            f"{n} ({node}, clock {d:+d} d)" for n, node, d in self.result.laptops))

    def _fault(self, kind: str) -> None:
        with self._lock:
            self.result.faults[kind] += 1

    # ---- the hooks the proxy calls ----

    def _on_sent(self, req: Request) -> None:
        with self._lock:
            plan = self._server_kill
            if plan is None or (plan["want"] == "changeset" and req.kind != "changeset"):
                return
            self._server_kill = None
        plan.update(sender=req.sender, seq=req.seq, kind=req.kind)
        t = threading.Thread(target=self._kill_server, args=(plan,), daemon=True)
        self._kill_threads.append(t)
        t.start()

    def _kill_server(self, plan: dict[str, Any]) -> None:
        time.sleep(plan["after_s"])
        killed = self.server.kill()
        self.server.start()
        assert self.proxy is not None
        self.proxy.upstream_port = self.server.port
        if killed:
            self._fault("server_kill")
            if plan["kind"] == "changeset" and plan["sender"]:
                self.result.server_kills_in_merge += 1
                conn = _ro(self.server.data / "server.db")
                try:
                    row = conn.execute("SELECT 1 FROM ledger WHERE kind='device' AND device=? AND device_seq=?",
                                       (plan["sender"], plan["seq"])).fetchone()
                finally:
                    conn.close()
                self.result.server_kills_committed += row is not None

    def _on_answer(self, req: Request) -> bool:
        with self._lock:
            plan = self._client_kill
            if plan is None or plan["mode"] != "answer" or req.sender != plan["worker"].lap.device_id:
                return False
            if plan["skip"] > 0:
                plan["skip"] -= 1
                return False
            self._client_kill = None
        if plan["worker"].kill():
            self._fault("client_kill")
            return True
        return False

    def _kill_client_later(self, worker: Worker, after_s: float) -> None:
        worker.ready.wait(timeout=30)
        time.sleep(after_s)
        if worker.kill():
            self._fault("client_kill")

    # ---- a round ----

    def round(self, r: int) -> None:
        cfg, rnd = self.cfg, self.rnd
        assert self.proxy is not None
        if rnd.random() < cfg.p_skew:
            lap = rnd.choice(self.laptops)
            lap.skew_ms += rnd.choice([-1, 1]) * rnd.randint(1, cfg.max_skew_days) * DAY_MS
            self._fault("clock_skew")
        for lap in self.laptops:
            self.result.work.update(record_work(lap, rnd, rnd.randint(1, 4)))
        if rnd.random() < 0.6:
            self.result.work["concurrent_edit"] += concurrent_edit(self.laptops, rnd)
        relay = rnd.choice(self.laptops) if rnd.random() < cfg.p_relay else None
        self.workers = [Worker(lap, self.proxy.url, cfg.pull_limit) for lap in self.laptops if lap is not relay]
        if self.workers and rnd.random() < cfg.p_client_kill:
            worker = rnd.choice(self.workers)
            if rnd.random() < 0.5:
                with self._lock:
                    self._client_kill = {"mode": "answer", "worker": worker, "skip": rnd.randint(0, 1)}
            else:
                t = threading.Thread(target=self._kill_client_later, args=(worker, rnd.uniform(0.0, 0.3)),
                                     daemon=True)
                self._kill_threads.append(t)
                t.start()
        if rnd.random() < cfg.p_server_kill:
            with self._lock:
                self._server_kill = {"want": "changeset" if rnd.random() < 0.75 else "any",
                                     "after_s": rnd.uniform(0.0, 0.04)}
        outcomes = Counter(w.finish(WORKER_TIMEOUT_S) for w in self.workers)
        for w in self.workers:
            if w.err and b"Traceback" in w.err:
                _say(self.progress, f"  {w.lap.name}: {w.err.decode(errors='replace')[-1500:]}")
        with self._lock:
            self._server_kill = None  # armed but not fired (no change set passed): no kill
            self._client_kill = None
        for t in self._kill_threads:
            t.join(timeout=60)
        self._kill_threads = []
        if self.server.proc is None or self.server.proc.poll() is not None:
            self.server.start()
            self.proxy.upstream_port = self.server.port
        if relay is not None:
            outcomes[self.by_stick(relay)] += 1
        self.result.syncs.update(outcomes)
        self.result.runs += 1
        faults = sum(self.result.faults.values()) + sum(self.proxy.faults.values())
        _say(self.progress, f"run {r + 1}/{cfg.runs}: syncs " + ", ".join(
            f"{k} {n}" for k, n in sorted(outcomes.items())) + f"; faults so far {faults}")

    # ---- a laptop that syncs by USB stick ----

    def by_stick(self, lap: Laptop) -> str:
        """``field-client export`` to a stick, ``sync-server import`` and ``export-for`` (the
        server keeps serving), ``field-client import`` of the answers; with faults: a change
        set file cut short on the stick, an old stick (any laptop's) imported again, the
        answers never brought back, an old answers folder imported on the laptop late."""
        from field_client.sync import SyncAgent, SyncError

        rnd = self.rnd
        self._sticks += 1
        stick = self.root / "sticks" / f"{self._sticks:04d}-{lap.name}"
        answers = self.root / "answers" / f"{self._sticks:04d}-{lap.name}"
        with opened(lap) as c:
            files = SyncAgent(c).export_bundle(stick)
        archive = self.root / "archive" / stick.name
        shutil.copytree(stick, archive)
        changesets = [f for f in files if not f.name.endswith("-request.mqe")]
        if changesets and rnd.random() < 0.25:
            victim = stick / rnd.choice(changesets).name
            data = victim.read_bytes()
            victim.write_bytes(data[: rnd.randint(1, len(data) - 1)])
            self._fault("stick_truncated")
        self.server.cli("import", str(stick))
        old = sorted(p for p in (self.root / "archive").iterdir() if p != archive)
        if old and rnd.random() < 0.3:
            self.server.cli("import", str(rnd.choice(old)))
            self._fault("stick_stale")
        self.server.cli("export-for", lap.device_id, str(answers))
        outcome = "stick"
        if rnd.random() < 0.25:
            self._fault("stick_answer_lost")
            outcome = "stick:answer_lost"
        else:
            with opened(lap) as c:
                try:
                    SyncAgent(c).import_bundle(answers)
                except SyncError as exc:
                    outcome = f"stick:failed:{exc.code}"
        older = sorted(p for p in (self.root / "answers").glob(f"*-{lap.name}") if p != answers)
        if older and rnd.random() < 0.2:
            with opened(lap) as c:
                SyncAgent(c).import_bundle(rnd.choice(older))
            self._fault("stick_old_answer")
        return outcome

    # ---- the end ----

    def clean_exchange(self) -> None:
        """Every laptop syncs straight with the server until a whole pass moves nothing."""
        from field_client.store import FieldClient
        from field_client.sync import HttpTransport, SyncAgent
        from field_client.verify import verify

        for n in range(1, 11):
            moved = 0
            for lap in self.laptops:
                client = FieldClient.open(lap.dir, PASSPHRASE, clock=lap.clock())
                transport = HttpTransport(self.server.url, timeout=(5.0, 60.0))
                try:
                    report = SyncAgent(client, transport, retries=2, backoff_s=0.2).sync()
                finally:
                    transport.session.close()
                    client.close()
                moved += report.pushed_envelopes + report.pulled_ops
            self.result.clean_passes = n
            if moved == 0:
                self.result.converged = True
                break
        for lap in self.laptops:
            client = FieldClient.open(lap.dir, PASSPHRASE, clock=lap.clock())
            transport = HttpTransport(self.server.url, timeout=(5.0, 60.0))
            try:
                v = verify(SyncAgent(client, transport))
                # the server holds all this laptop holds of its scope, and the laptop all the server
                # holds of it; what only the laptop has is ops of cases that left its scope ("other")
                # or its own held in quarantine ("held"), never anything unsent or lost
                self.result.verify_agrees[lap.name] = (
                    not v["missing_on_laptop"] and not v["stamps_differ"] and not v["truncated"]
                    and all(m["why"] in ("held", "other") for m in v["missing_on_server"]))
                self.result.verify_in_sync[lap.name] = bool(v["in_sync"])
            finally:
                transport.session.close()
                client.close()
        rebuilt = self.server.cli("rebuild")
        self.result.rebuild_equal = bool(rebuilt.get("equal")) and bool(rebuilt.get("chain_ok"))
        _say(self.progress, f"clean exchange: {self.result.clean_passes} pass(es); verify agrees: "
             f"{sum(self.result.verify_agrees.values())}/{len(self.laptops)}; rebuild equal: "
             f"{self.result.rebuild_equal}")

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        for t in self._kill_threads:
            t.join(timeout=60)
        if self.proxy is not None:
            self.proxy.close()
            self.result.requests = self.proxy.requests
            self.result.faults.update(self.proxy.faults)
            self.proxy = None
        self.server.stop()


def run(config: Config, progress: Callable[[str], None] | None = print) -> Result:
    """Set up, run the rounds, the clean exchange and the check; everything started is stopped."""
    started = time.monotonic()
    root = Path(config.work_dir) if config.work_dir else Path(tempfile.mkdtemp(prefix="minqing-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    h = Harness(config, root, progress)
    try:
        h.setup()
        for r in range(config.runs):
            h.round(r)
        h.clean_exchange()
    finally:
        h.close()
    h.result.figures = check(h.server.data, [(lap.name, lap.dir) for lap in h.laptops])
    h.result.seconds = time.monotonic() - started
    if not config.keep and config.work_dir is None:
        shutil.rmtree(root, ignore_errors=True)
        h.result.work_dir = None
    return h.result


def report(result: Result) -> str:
    """The figures, as ``python -m tests.faults`` prints them."""
    fig = result.figures
    faults = result.faults
    lines = [
        f"runs: {result.runs} (seed {result.config.seed}, {len(result.laptops)} laptops, "
        f"{result.requests} requests through the proxy, {result.seconds:.1f} s)",
        f"faults injected: {sum(faults.values())} (" + ", ".join(f"{k} {faults.get(k, 0)}" for k in FAULT_ORDER)
        + f"; of {result.server_kills_in_merge} server kills during a push, the change set was committed "
        f"before the kill in {result.server_kills_committed})",
        "syncs under faults: " + ", ".join(f"{k} {n}" for k, n in sorted(result.syncs.items())),
        "work recorded: " + ", ".join(f"{k} {n}" for k, n in sorted(result.work.items())),
        f"ops written: {fig.ops_written} by the laptops (+ {fig.server_ops} by the server's sweep); "
        f"conflicts on the server: {fig.conflicts}",
        "ops found on every replica (found/expected): " + "; ".join(
            f"{r.name} {r.found}/{r.expected}" + (f" (+{r.outside} beyond its scope)" if r.outside else "")
            for r in fig.replicas),
        f"lost: {fig.lost}",
        f"held in quarantine (kept, with a reason): {fig.held}"
        + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(fig.held_codes.items())) + ")" if fig.held else ""),
        f"duplicates: {fig.duplicates}" + (" (" + ", ".join(f"{k} {n}" for k, n in fig.duplicate_kinds.items() if n)
                                           + ")" if fig.duplicates else ""),
        f"clean exchange: {result.clean_passes} pass(es), converged: {'yes' if result.converged else 'no'}; "
        f"verify agrees: {sum(result.verify_agrees.values())}/{len(result.laptops)} "
        f"({sum(result.verify_in_sync.values())} with equal digests); "
        f"ledger rebuild equal: {'yes' if result.rebuild_equal else 'no'}",
        f"replicas identical: {'yes' if fig.identical else 'no'}",
    ]
    for r in fig.replicas:
        if r.missing or r.extra or r.stamps_differ or r.rows_differ or not r.digest_equal:
            lines.append(f"  {r.name}: missing {r.missing}, extra {r.extra}, stamps differ {r.stamps_differ}, "
                         f"rows differ {r.rows_differ}, digest equal {r.digest_equal}")
    lines += [f"  problem: {p}" for p in fig.problems]
    lines.append("RESULT: " + ("PASS" if result.ok else "FAIL"))
    return "\n".join(lines)
