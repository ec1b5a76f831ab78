"""Warnings at a glance (一图): open cases by township and village in the five colours,
the backlog index, and the overdue and escalation board.

Counts come from the caseload index (``CaseIndex``): open = a state of
``schema.lifecycle.OPEN_STATES``, not voided. **Backlog index** (积案指数): backlog cases
(``case_status.backlog``: the county rules' definition) per 100 open cases.

The chart is SVG drawn here, on the server: a horizontal stacked bar per unit, one
segment per colour. Each colour also has its own **pattern** (none, dots, horizontal
lines, diagonal lines, cross-hatching) and the segment carries its number, so the chart
reads the same printed in black and white; the table beside it holds every figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from schema.lifecycle import OPEN_STATES
from sync_server.web.caseindex import CaseIndex

COLOURS = ("red", "orange", "yellow", "blue", "green")  # most urgent first
FILL = {"red": "#e4572e", "orange": "#f29e4c", "yellow": "#f1d302", "blue": "#5b8def", "green": "#9bd18b"}
PATTERN = {  # black marks over the colour: what tells them apart in black and white
    "green": "",
    "blue": '<circle cx="3" cy="3" r="1.2" fill="#000"/>',
    "yellow": '<path d="M0 3H6" stroke="#000" stroke-width="1"/>',
    "orange": '<path d="M-1 1L1 -1M0 6L6 0M5 7L7 5" stroke="#000" stroke-width="1"/>',
    "red": '<path d="M-1 1L1 -1M0 6L6 0M5 7L7 5M-1 5L1 7M0 0L6 6M5 -1L7 1" stroke="#000" stroke-width="1.2"/>',
}


@dataclass
class UnitRow:
    code: str
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    open: int = 0
    backlog: int = 0
    overdue: int = 0
    awaiting: int = 0
    parent: str = ""

    @property
    def backlog_index(self) -> float | None:
        return None if not self.open else round(100 * self.backlog / self.open, 1)


def _open_mask(index: CaseIndex) -> int:
    m = 0
    for s in OPEN_STATES:
        m |= index.bits["state"].get(str(s), 0)
    return m & index.bits["voided"].get("0", 0)


def units(index: CaseIndex) -> tuple[list[UnitRow], list[UnitRow], UnitRow]:
    """(townships, villages, county total), open cases counted by colour."""
    with index.lock:
        open_m = _open_mask(index)
        backlog = index.bits["backlog"].get("1", 0)
        overdue = index.bits["overdue"].get("1", 0)
        awaiting = index.bits["awaiting"].get("1", 0)
        colour_m = {c: index.bits["colour"].get(c, 0) & open_m for c in COLOURS}

        def row(code: str, name: str, m: int, parent: str = "") -> UnitRow:
            mo = m & open_m
            return UnitRow(code, name, {c: (colour_m[c] & m).bit_count() for c in COLOURS}, mo.bit_count(),
                           (mo & backlog).bit_count(), (mo & overdue).bit_count(), (mo & awaiting).bit_count(),
                           parent)

        nodes = index.nodes
        towns = [row(t, nodes.name(t), index.bits["township"].get(t, 0)) for t in nodes.of_level("township")]
        county_own = index.bits["township"].get("", 0)
        if county_own & open_m:
            towns.append(row("", "", county_own))
        villages = []
        for t in nodes.of_level("township"):
            for v in nodes.children(t, "village"):
                villages.append(row(v, nodes.name(v), index.bits["village"].get(v, 0), t))
            own = index.bits["township"].get(t, 0) & index.bits["village"].get("", 0)
            if own & open_m:
                villages.append(row("", nodes.name(t), own, t))
        total = row("*", "", index.present)
    return towns, villages, total


def svg_chart(rows: list[UnitRow], labels: dict[str, str], *, title: str, unit_label: str,
              width: int = 760, chart_id: str = "chart") -> str:
    """A stacked horizontal bar per unit; patterns and numbers make it readable in black and white."""
    bar_h, gap, left, right, top = 22, 8, 150, 60, 58
    height = top + len(rows) * (bar_h + gap) + 10
    biggest = max([r.open for r in rows] + [1])
    span = width - left - right
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-labelledby="{escape(chart_id)}-title">',
           f'<title id="{escape(chart_id)}-title">{escape(title)}</title>', "<defs>"]
    for c in COLOURS:
        out.append(f'<pattern id="{escape(chart_id)}-p-{c}" width="6" height="6" patternUnits="userSpaceOnUse">'
                   f'<rect width="6" height="6" fill="{FILL[c]}"/>{PATTERN[c]}</pattern>')
    out.append("</defs>")
    # legend: swatch with the pattern, and the colour's name
    x = float(left)
    for c in COLOURS:
        out.append(f'<rect x="{x}" y="8" width="18" height="14" fill="url(#{escape(chart_id)}-p-{c})" '
                   f'stroke="#000" stroke-width="0.8"/>')
        out.append(f'<text x="{x + 22}" y="20" font-size="12">{escape(labels[c])}</text>')
        x += 30 + 13 * max(2, len(labels[c]))
    out.append(f'<text x="4" y="44" font-size="12" font-weight="bold">{escape(unit_label)}</text>')
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        out.append(f'<text x="{left - 8}" y="{y + 15}" font-size="13" text-anchor="end">{escape(r.name)}</text>')
        x = float(left)
        for c in COLOURS:
            n = r.counts.get(c, 0)
            if not n:
                continue
            w = span * n / biggest
            out.append(f'<rect class="seg seg-{c}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                       f'fill="url(#{escape(chart_id)}-p-{c})" stroke="#000" stroke-width="0.8">'
                       f'<title>{escape(r.name)} {escape(labels[c])} {n}</title></rect>')
            if w >= 16 + 7 * len(str(n)):
                out.append(f'<text x="{x + w / 2:.1f}" y="{y + 15}" font-size="12" text-anchor="middle" '
                           f'font-weight="bold" stroke="#fff" stroke-width="3" paint-order="stroke">{n}</text>')
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + 15}" font-size="12">{r.open}</text>')
    out.append("</svg>")
    return "".join(out)


def overdue_rows(index: CaseIndex, conn: Any, limit: int = 100) -> list[str]:
    """Open overdue (or awaiting-sync) case ids, the most overdue first."""
    from sync_server.web.caseindex import Query

    ids = index.select(Query({"overdue": "1"}, None, "due"), limit=limit, facets=False).ids
    ids += index.select(Query({"awaiting": "1"}, None, "due"), limit=limit, facets=False).ids
    return list(dict.fromkeys(ids))


def escalations(conn: Any, since_iso: str, limit: int = 100) -> list[dict[str, Any]]:
    """Escalations on deadline (alert ``escalated``, not withdrawn) raised since ``since_iso``."""
    q = ("SELECT a.case_id, a.raised_at, a.rule, a.due, c.case_no, c.level, c.node, c.origin_node, c.state, "
         "c.category FROM alerts a JOIN cases c ON c.id = a.case_id WHERE a.kind = 'escalated' "
         "AND a.withdrawn_at IS NULL AND a.voided = 0 AND a.raised_at >= ? ORDER BY a.raised_at DESC LIMIT ?")
    cols = ("case_id", "raised_at", "rule", "due", "case_no", "level", "node", "origin_node", "state", "category")
    return [dict(zip(cols, r, strict=True)) for r in conn.execute(q, (since_iso, limit))]
