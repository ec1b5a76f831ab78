"""Exports: any list or report as CSV (UTF-8 with a byte-order mark, so spreadsheet programs
read the Chinese) or XLSX (openpyxl, one sheet per table), with headers in the page's
language. Values arrive already masked by ``privacy.Viewer``: an export never holds more
than the page would show.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

CSV_MIME = "text/csv; charset=utf-8"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # characters XML (and so XLSX) cannot hold
_FORMULA = ("=", "+", "-", "@")


@dataclass
class Table:
    """One table of an export: a title (the sheet's name), headers, rows."""

    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    text = _ILLEGAL.sub("", str(value))
    if text.startswith(_FORMULA) and not _is_number(text):
        text = "'" + text  # never a formula: a value typed on a laptop must not run in Excel
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_csv(tables: Sequence[Table]) -> bytes:
    """One table: header and rows. Several: each preceded by its title, a blank line between."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    for i, t in enumerate(tables):
        if len(tables) > 1:
            if i:
                w.writerow([])
            w.writerow([t.title])
        w.writerow([_cell(h) for h in t.headers])
        for row in t.rows:
            w.writerow([_cell(v) for v in row])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _sheet_name(title: str, used: set[str]) -> str:
    name = re.sub(r"[\[\]:*?/\\]", " ", title).strip()[:31] or "Sheet"
    base, n = name, 2
    while name in used:
        suffix = f" {n}"
        name = base[: 31 - len(suffix)] + suffix
        n += 1
    used.add(name)
    return name


def to_xlsx(tables: Sequence[Table]) -> bytes:
    """A workbook, one sheet per table, written in openpyxl's streaming mode (a whole county's
    caseload fits in memory as rows, not as cell objects)."""
    wb = Workbook(write_only=True)
    used: set[str] = set()
    bold = Font(bold=True)
    for t in tables:
        ws = wb.create_sheet(_sheet_name(t.title, used))
        widths = [max(6, min(40, len(str(h)) * 2 + 2)) for h in t.headers]
        for row in t.rows[:300]:  # widths from the first rows: enough to read, cheap to find
            for i, v in enumerate(row[: len(widths)]):
                widths[i] = max(widths[i], min(40, len(str(_cell(v))) * 2 + 2))
        for i, w in enumerate(widths, 1):
            ws.column_dimensions[get_column_letter(i)].width = w
        ws.freeze_panes = "A2"
        header = []
        for h in t.headers:
            cell = WriteOnlyCell(ws, value=_cell(h))
            cell.font = bold
            header.append(cell)
        ws.append(header)
        for row in t.rows:
            ws.append([_cell(v) for v in row])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def render(tables: Sequence[Table], fmt: str) -> tuple[bytes, str]:
    if fmt == "xlsx":
        return to_xlsx(tables), XLSX_MIME
    return to_csv(tables), CSV_MIME
