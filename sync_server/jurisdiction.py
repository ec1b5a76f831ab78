"""The county's jurisdiction tree: county → township → village (→ grid), from a CSV file.

CSV columns: ``code,name,level,parent`` (UTF-8, header line required; ``parent`` empty
for the county). Every line is checked before anything is written: a bad file is
refused whole, naming each bad line and why, and the tree stays as it was.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from sync_server.errors import BadRequest
from sync_server.store import ServerStore

LEVELS = {"county": 0, "township": 1, "village": 2, "grid": 3}
CODE = re.compile(r"[0-9A-Za-z_-]{1,32}")


def parse_csv(text: str) -> list[dict[str, str]]:
    """Rows of a jurisdiction CSV, or BadRequest naming every bad line."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames][:4] != ["code", "name", "level", "parent"]:
        raise BadRequest("第 1 行应为表头 code,name,level,parent (line 1 must be the header code,name,level,parent)",
                         code="jurisdiction.bad_header")
    rows: list[dict[str, str]] = []
    errors: list[str] = []
    for line, raw in enumerate(reader, start=2):
        row = {k: (raw.get(k) or "").strip() for k in ("code", "name", "level", "parent")}
        if not CODE.fullmatch(row["code"]):
            errors.append(f"第 {line} 行: 代码无效 (line {line}: bad code {row['code']!r})")
        if not row["name"]:
            errors.append(f"第 {line} 行: 缺少名称 (line {line}: name missing)")
        if row["level"] not in LEVELS:
            errors.append(f"第 {line} 行: 层级应为 county/township/village/grid (line {line}: bad level {row['level']!r})")
        rows.append(row)
    if errors:
        raise BadRequest(f"文件有 {len(errors)} 处错误，未导入任何数据 ({len(errors)} error(s); nothing imported)",
                         code="jurisdiction.bad_rows", details=errors)
    return rows


def import_nodes(store: ServerStore, rows: list[dict[str, str]]) -> dict[str, Any]:
    existing = {n["code"]: n for n in store.nodes_list()}
    merged = {**existing, **{r["code"]: r for r in rows}}
    errors = []
    for r in rows:
        parent = r["parent"] or None
        if parent is None and r["level"] != "county":
            errors.append(f"{r['code']}: 只有县级可以没有上级 (only the county has no parent)")
        if parent is not None:
            p = merged.get(parent)
            if p is None:
                errors.append(f"{r['code']}: 上级 {parent} 不存在 (parent {parent} unknown)")
            elif LEVELS[p["level"]] >= LEVELS[r["level"]]:
                errors.append(f"{r['code']}: 上级 {parent} 的层级不高于本级 (parent is not a higher level)")
    if errors:
        raise BadRequest(f"层级关系有 {len(errors)} 处错误，未导入 ({len(errors)} error(s); nothing imported)",
                         code="jurisdiction.bad_tree", details=errors)
    with store.transaction():
        store.conn.executemany(
            "INSERT INTO nodes(code, name, level, parent) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(code) DO UPDATE SET name=excluded.name, level=excluded.level, parent=excluded.parent",
            [(r["code"], r["name"], r["level"], r["parent"] or None) for r in rows],
        )
    return {"imported": len(rows), "new": sum(1 for r in rows if r["code"] not in existing)}


def import_file(store: ServerStore, path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"无法读取 {path}: {exc} (cannot read the file)", code="jurisdiction.unreadable") from exc
    return import_nodes(store, parse_csv(text))
