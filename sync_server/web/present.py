"""How stored values read on the coordinator's pages: labels, dates in China time, stamps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schema.entities import ENTITIES
from schema.obligations import CHINA
from sync_server.web.i18n import _, enum_label


def fmt_dt(value: Any) -> str:
    """ISO date-time -> ``2026-11-22 09:30`` in China time (dates pass through)."""
    if not value:
        return ""
    text = str(value)
    if len(text) == 10:
        return text
    try:
        return datetime.fromisoformat(text).astimezone(CHINA).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


def fmt_ms(ms: Any, *, seconds: bool = False) -> str:
    """Epoch milliseconds -> China time."""
    if ms in (None, ""):
        return ""
    try:
        dt = datetime.fromtimestamp(int(ms) / 1000, CHINA)
    except (TypeError, ValueError, OverflowError):
        return ""
    return dt.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def stamp_ms(stamp: str | None) -> int | None:
    try:
        return int(stamp[:18]) if stamp else None
    except ValueError:
        return None


def show_value(entity: str, name: str, value: Any) -> str:
    """A stored value as a person reads it: enum labels, yes/no, dates. Masking is done
    before (``privacy.Viewer``); this only formats."""
    if value is None or value == "" or value == []:
        return ""
    spec = ENTITIES[entity].field_map.get(name) if entity in ENTITIES else None
    if spec is None:
        return str(value)
    if spec.kind == "enum" and spec.enum is not None:
        return enum_label(spec.enum, value)
    if spec.kind == "bool":
        return _("Yes") if value in (True, 1, "1") else _("No")
    if spec.kind == "datetime":
        return fmt_dt(value)
    if spec.kind == "set":
        items = value if isinstance(value, list) else [value]
        if spec.enum is not None:
            return "、".join(enum_label(spec.enum, i) for i in items)
        return "、".join(map(str, items))
    return str(value)


def days_between(a_ms: int, b_ms: int) -> int:
    return int((b_ms - a_ms) // 86_400_000)
