"""Fixtures for the CLI tests: a device made once per session and copied, and ``cli(...)``,
which runs ``field_client.cli.main`` in-process and returns what it printed."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conflict.author import make_op
from field_client import keystore
from field_client.cli import main
from field_client.store import FieldClient
from schema.obligations import CHINA

PASSPHRASE = "village-pass-1"
NODE, USER, NODE_NAME = "V001", "wangli", "东村"
ID_NUMBER = "11010519491231002X"  # a valid check digit
PHONE = "13812345678"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


@pytest.fixture(scope="session")
def cli_device_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A device set up once through the CLI itself. Its key file asks for a cheaper scrypt
    (the cost is stored in the file), so that each of the many CLI calls in these tests does
    not spend 0.15 s unlocking; ``init`` with the real cost is tested on its own."""
    d = tmp_path_factory.mktemp("template") / "device"
    mp = pytest.MonkeyPatch()
    mp.setenv("MINQING_PASSPHRASE", PASSPHRASE)
    mp.setattr(keystore, "SCRYPT_N", 2**10)
    try:
        code = main(["--data", str(d), "init", "--node", NODE, "--user", USER, "--node-name", NODE_NAME])
    finally:
        mp.undo()
    assert code == 0
    return d


@pytest.fixture
def cli_data(tmp_path: Path, cli_device_template: Path) -> Path:
    d = tmp_path / "device"
    shutil.copytree(cli_device_template, d)
    return d


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], cli_data: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``cli("case", "list")`` runs the CLI on this test's device with the passphrase set."""
    monkeypatch.setenv("MINQING_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("MINQING_DATA", raising=False)

    def run(*argv: str, data: Path | None = None) -> Result:
        capsys.readouterr()
        code = main(["--data", str(data or cli_data), *argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def new_case(cli: Cli, *extra: str, title: str = "宅基地边界纠纷") -> dict[str, Any]:
    """Register a case through the CLI; returns {"id", "case_no"}."""
    r = cli("--json", "case", "new", "--title", title, "--category", "矛盾纠纷", "--subject", "邻里纠纷",
            "--channel", "来访", *extra)
    assert r.code == 0, r.err + r.out
    return r.json()


def op_count_and_digest(data: Path) -> tuple[int, str, int]:
    """Ops, the op-set digest and the outbox length, read straight from the file."""
    from conflict.digest import op_digest

    conn = sqlite3.connect(data / "replica.db")
    try:
        pairs = conn.execute("SELECT op_id, stamp FROM ops").fetchall()
        outbox = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()
    return len(pairs), op_digest(pairs), outbox


def foreign_set(data: Path, entity: str, entity_id: str, case_id: str, field: str, value: Any) -> None:
    """Another device's edit that never saw ours: a concurrent edit (base null), stamped
    just now, so that this laptop's next op (the resolution) sorts after it."""
    time.sleep(0.005)
    with FieldClient.open(data, PASSPHRASE) as c:
        op, _ = make_op(last=None, wall_ms=int(time.time() * 1000) - 1, device="0000000000000001",
                        author="zhaofang", op_id="f" * 32, entity=entity, entity_id=entity_id,
                        case_id=case_id, kind="set", values={field: value},
                        base={field: None}, occurred_at=datetime.now(CHINA).isoformat())
        c.replica.apply([c.sealer.seal_op(op)], allow_sealed=True)
