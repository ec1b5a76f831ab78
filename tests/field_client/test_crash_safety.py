"""A laptop killed at any moment loses nothing it acknowledged and holds no half-applied op.

``crash_writer.py`` records cases, visits and transitions in a loop and prints each id only
after ``FieldClient`` returned. We SIGKILL it at a random moment, open the device again and
check: every acknowledged record is there; the tables equal a fresh fold of the op log;
the outbox holds exactly this device's ops; each case came with its party (one
transaction); the running case number matches the cases; SQLite finds the file intact.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from field_client import keystore
from field_client.store import FieldClient
from schema.obligations import CHINA
from tests.field_client.conftest import PASSPHRASE

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 8

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def _run_and_kill(data: Path, rng: random.Random) -> list[str]:
    """Start the writer, kill it a random moment after it is ready; return its complete lines."""
    env = {**os.environ, "MINQING_PASSPHRASE": PASSPHRASE}
    lines: list[str] = []
    ready = threading.Event()
    with subprocess.Popen([sys.executable, str(WRITER), str(data)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env) as proc:
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None

        def read() -> None:
            for raw in stdout:
                if not raw.endswith(b"\n"):
                    break  # a line cut by the kill was never a promise
                lines.append(raw.decode().strip())
                ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if not ready.wait(30):
            proc.kill()
            pytest.fail(f"the writer did not start: {stderr.read().decode()}")
        time.sleep(rng.uniform(0.02, 0.9))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(10)
        assert alive, f"the writer died on its own: {stderr.read().decode()}"
    assert proc.returncode == -signal.SIGKILL
    return [line for line in lines if line != "ready"]


def _check(data: Path, acked: list[tuple[str, str]], seed: int) -> None:
    with FieldClient.open(data, PASSPHRASE) as c:
        conn = c.replica.conn
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for kind, ident in acked:
            if kind == "case":
                assert c.replica.get("case", ident) is not None, (seed, kind, ident)
            elif kind == "visit":
                assert c.replica.get("visit", ident) is not None, (seed, kind, ident)
            else:
                assert c.replica.has_op(ident), (seed, kind, ident)
        assert c.replica.verify_rebuild() == [], seed
        outbox = {r[0] for r in conn.execute("SELECT op_id FROM outbox")}
        mine = {r[0] for r in conn.execute("SELECT op_id FROM ops WHERE device=?", (c.device_id,))}
        assert outbox == mine, seed
        cases = conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        lonely = conn.execute(
            "SELECT COUNT(*) FROM cases WHERE id NOT IN (SELECT case_id FROM parties)"
        ).fetchone()[0]
        assert lonely == 0, seed
        year = datetime.now(CHINA).year
        assert int(c.meta(f"running:{year}", "0") or 0) == cases, seed
        numbers = conn.execute("SELECT COUNT(DISTINCT case_no) FROM cases").fetchone()[0]
        assert numbers == cases, seed


def test_killing_the_laptop_mid_write_loses_nothing_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    data = tmp_path / "device"
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)  # each restart unlocks; keep it quick
    FieldClient.init(data, PASSPHRASE, node="V001", user="wangli").close()
    acked: list[tuple[str, str]] = []
    started = time.monotonic()
    for _ in range(ROUNDS):
        lines = _run_and_kill(data, rng)
        acked += [tuple(line.split(" ", 1)) for line in lines]  # type: ignore[misc]
        _check(data, acked, seed)
    assert sum(1 for kind, _ in acked if kind == "case") >= ROUNDS, f"too few writes to mean anything (seed {seed})"
    assert time.monotonic() - started < 40
