"""The merge core and the data model are pure (conflict/README.md, schema/__init__.py).

Every module of ``conflict/`` but ``replica.py`` may not import a database, the network,
the clock, randomness or the OS, nor read the wall clock; ``conflict/__init__.py`` does not
import the replica. ``schema/`` may not import a database, Flask, requests, the clock,
randomness or ``conflict``, nor read the wall clock. Read from the source with ``ast``, so a
module is checked whether or not anything imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONFLICT_FORBIDDEN = frozenset(
    {
        "sqlite3",
        "sqlite_utils",
        "requests",
        "flask",
        "time",
        "random",
        "secrets",
        "uuid",
        "socket",
        "os",
    }
)
SCHEMA_FORBIDDEN = frozenset(
    {"sqlite3", "sqlite_utils", "flask", "requests", "time", "random", "conflict"}
)
CLOCK_READS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}
def violations(source: str, forbidden: frozenset[str]) -> list[str]:
    """What in ``source`` breaks purity: forbidden imports, wall-clock reads, dynamic imports."""
    tree = ast.parse(source)
    found: list[str] = []
    # names bound to the datetime module or to its datetime/date classes
    modules: set[str] = set()
    classes: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in forbidden:
                    found.append(f"import {alias.name}")
                if alias.name == "datetime":
                    modules.add(alias.asname or "datetime")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative, inside the package: from . import x, from .x import y
                targets = [node.module] if node.module else [a.name for a in node.names]
                for t in targets:
                    if t.split(".")[0] in forbidden:
                        found.append(f"from .{t} import")
                continue
            top = (node.module or "").split(".")[0]
            if top in forbidden:
                found.append(f"from {node.module} import")
            if node.module == "datetime":
                for alias in node.names:
                    if alias.name in ("datetime", "date"):
                        classes[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "__import__":
                found.append("__import__()")
            if isinstance(func, ast.Attribute) and func.attr == "import_module":
                found.append("importlib.import_module()")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, attr = node.func.value, node.func.attr
        cls: str | None = None
        if isinstance(owner, ast.Name) and owner.id in classes:
            cls = classes[owner.id]
        elif (
            isinstance(owner, ast.Attribute)
            and isinstance(owner.value, ast.Name)
            and owner.value.id in modules
        ):
            cls = owner.attr
        if cls is not None and (cls, attr) in CLOCK_READS:
            found.append(f"{cls}.{attr}()")
    return found


def modules_of(package: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        f"{package}/{p.name}" for p in (ROOT / package).glob("*.py") if p.name not in skip
    )


@pytest.mark.parametrize("path", modules_of("conflict", skip=("replica.py",)))
def test_a_conflict_module_other_than_the_replica_is_pure(path: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    assert violations(source, CONFLICT_FORBIDDEN | {"replica"}) == []
    tree = ast.parse(source)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert "conflict.replica" not in imported
    assert not any(
        isinstance(n, ast.ImportFrom)
        and n.module == "conflict"
        and any(a.name == "replica" for a in n.names)
        for n in ast.walk(tree)
    )


@pytest.mark.parametrize("path", modules_of("schema"))
def test_a_schema_module_is_pure(path: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    assert violations(source, SCHEMA_FORBIDDEN) == []


def test_the_modules_checked_include_the_core_ones() -> None:
    conflict = modules_of("conflict", skip=("replica.py",))
    assert {
        "conflict/__init__.py",
        "conflict/fold.py",
        "conflict/hlc.py",
        "conflict/digest.py",
        "conflict/errors.py",
    } <= set(conflict)
    assert "conflict/replica.py" not in conflict
    assert {"schema/validation.py", "schema/lifecycle.py", "schema/stamp.py"} <= set(
        modules_of("schema")
    )


def test_conflict_init_does_not_import_the_replica() -> None:
    tree = ast.parse((ROOT / "conflict/__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all("replica" not in a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert "replica" not in (node.module or "")
            assert all(a.name != "replica" for a in node.names)


@pytest.mark.parametrize(
    ("source", "forbidden_hit"),
    [
        ("import os", "import os"),
        ("import os.path", "import os.path"),
        ("from time import monotonic", "from time import"),
        ("import sqlite3 as db", "import sqlite3"),
        ("from sqlite_utils.db import Table", "from sqlite_utils.db import"),
        ("from . import replica", "from .replica import"),
        ("import datetime\nx = datetime.datetime.now()", "datetime.now()"),
        ("import datetime as dt\nx = dt.date.today()", "date.today()"),
        ("from datetime import datetime\nx = datetime.utcnow()", "datetime.utcnow()"),
        ("from datetime import date as D\nx = D.today()", "date.today()"),
        ("m = __import__('time')", "__import__()"),
        ("import importlib\nm = importlib.import_module('random')", "importlib.import_module()"),
    ],
)
def test_the_purity_check_catches_what_it_forbids(source: str, forbidden_hit: str) -> None:
    assert forbidden_hit in violations(source, CONFLICT_FORBIDDEN | {"replica"})


def test_the_purity_check_lets_pure_code_through() -> None:
    source = (
        "import hashlib, json\nfrom datetime import datetime, timedelta\n"
        "from schema.ops import Op\nx = datetime.fromisoformat('2025-11-22T09:00:00+08:00')\n"
        "def now(): return 1\nnow()\n"
    )
    assert violations(source, CONFLICT_FORBIDDEN) == []


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_importing_the_merge_core_does_not_load_sqlite() -> None:
    done = _run(
        "import conflict, conflict.fold, conflict.hlc, conflict.digest, sys; "
        "assert 'sqlite3' not in sys.modules, 'sqlite3 loaded'; "
        "assert 'conflict.replica' not in sys.modules, 'replica loaded'"
    )
    assert done.returncode == 0, done.stderr


def test_importing_the_data_model_does_not_load_sqlite_or_the_merge_core() -> None:
    done = _run(
        "import schema, schema.validation, schema.lifecycle, schema.stamp, sys; "
        "bad = [m for m in ('sqlite3', 'sqlite_utils', 'flask', 'requests', 'conflict') "
        "if m in sys.modules]; assert not bad, bad"
    )
    assert done.returncode == 0, done.stderr


def test_the_subprocess_check_can_fail() -> None:
    done = _run("import sqlite3, sys; assert 'sqlite3' not in sys.modules")
    assert done.returncode != 0 and "AssertionError" in done.stderr
