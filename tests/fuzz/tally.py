"""What each part of the fuzzer tried and what came back; the one report it prints."""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.codes import documented, refusal_problem

EXAMPLES_KEPT = 5  # examples of each kind of finding kept for the report


@dataclass
class Part:
    """One part's figures. ``problems`` are the findings that make the run fail."""

    name: str
    tried: int = 0
    accepted: int = 0  # 2xx, or a parser that took the input
    server_errors: int = 0  # HTTP 5xx
    refusals: Counter[str] = field(default_factory=Counter)  # by code
    held: Counter[str] = field(default_factory=Counter)  # ops held (quarantined) in taken change sets, by code
    uncoded: int = 0  # a refusal without a documented, stable code
    crashes: int = 0  # a parser raised something other than the project's own error
    wrongly_accepted: int = 0  # hostile input that should have been refused, taken
    notes: Counter[str] = field(default_factory=Counter)  # informational (e.g. spec conformance)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def keep(self, kind: str, text: str) -> None:
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(text[:600])

    # ---- HTTP ----

    def http(self, what: str, status: int, content_type: str, body: bytes, *, must_refuse: bool = False) -> str | None:
        """Count one HTTP exchange; the refusal's code (None for a 2xx or a bad body)."""
        self.tried += 1
        if status >= 500:
            self.server_errors += 1
            self.keep("server error", f"{what} -> HTTP {status} {body[:200]!r}")
            return None
        if status < 400:
            self.accepted += 1
            if must_refuse:
                self.wrongly_accepted += 1
                self.keep("accepted but should be refused", f"{what} -> HTTP {status}")
            return None
        code, problem = refusal_problem(status, content_type, body)
        self.refusals[code or "(none)"] += 1
        if problem:
            self.uncoded += 1
            self.keep("refusal without a stable code", f"{what} -> {problem}")
        return code

    # ---- parsers in-process ----

    def refused(self, code: Any, what: str = "") -> None:
        """A parser refused with the project's own error."""
        self.tried += 1
        self.refusals[str(code)] += 1
        if code not in documented():
            self.uncoded += 1
            self.keep("refusal without a stable code", f"{what} -> code {code!r} is not documented in docs/")

    def took(self, *, must_refuse: bool = False, what: str = "") -> None:
        self.tried += 1
        self.accepted += 1
        if must_refuse:
            self.wrongly_accepted += 1
            self.keep("accepted but should be refused", what)

    def crash(self, exc: BaseException, what: str) -> None:
        self.tried += 1
        self.crashes += 1
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/tests/" not in f.filename
                  and "site-packages" not in f.filename]
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        self.keep("unhandled exception", f"{type(exc).__name__}: {str(exc)[:120]}{where} <- {what}")

    def note(self, kind: str, text: str) -> None:
        self.notes[kind] += 1
        self.keep(f"note: {kind}", text)

    @property
    def failed(self) -> int:
        return self.server_errors + self.uncoded + self.crashes + self.wrongly_accepted


@dataclass
class Tally:
    parts: dict[str, Part] = field(default_factory=dict)

    def part(self, name: str) -> Part:
        return self.parts.setdefault(name, Part(name))

    @property
    def ok(self) -> bool:
        return all(p.failed == 0 for p in self.parts.values())

    def totals(self) -> dict[str, int]:
        ps = self.parts.values()
        return {"tried": sum(p.tried for p in ps), "server_errors": sum(p.server_errors for p in ps),
                "uncoded": sum(p.uncoded for p in ps), "crashes": sum(p.crashes for p in ps),
                "wrongly_accepted": sum(p.wrongly_accepted for p in ps)}

    def report(self) -> str:
        lines = ["", "== hostile input: figures =="]
        lines.append(f"{'part':<26}{'tried':>8}{'2xx/took':>10}{'refused':>9}{'5xx':>6}{'uncoded':>9}"
                     f"{'crashes':>9}{'taken!':>8}")
        for p in self.parts.values():
            lines.append(f"{p.name:<26}{p.tried:>8}{p.accepted:>10}{sum(p.refusals.values()):>9}"
                         f"{p.server_errors:>6}{p.uncoded:>9}{p.crashes:>9}{p.wrongly_accepted:>8}")
        t = self.totals()
        lines.append(f"{'total':<26}{t['tried']:>8}{'':>10}{'':>9}{t['server_errors']:>6}{t['uncoded']:>9}"
                     f"{t['crashes']:>9}{t['wrongly_accepted']:>8}")
        codes: Counter[str] = Counter()
        for p in self.parts.values():
            codes.update(p.refusals)
        lines.append("")
        lines.append("refusals by code:")
        for code, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {code:<34}{n:>8}")
        held: Counter[str] = Counter()
        for p in self.parts.values():
            held.update(p.held)
        if held:
            lines.append("ops held (quarantined) from change sets that were taken, by code:")
            for code, n in sorted(held.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {code:<34}{n:>8}")
        for p in self.parts.values():
            for kind, texts in p.examples.items():
                lines.append("")
                lines.append(f"[{p.name}] {kind} ({p.notes[kind[6:]] if kind.startswith('note: ') else 'examples'}):")
                lines.extend(f"  {t}" for t in texts)
        lines.append("")
        lines.append(f"server errors (5xx): {t['server_errors']}   refusals without a stable code: {t['uncoded']}   "
                     f"parser crashes: {t['crashes']}   hostile input taken: {t['wrongly_accepted']}")
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)
