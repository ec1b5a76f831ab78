"""The documented error codes, read from docs/ (so the fuzzer and the docs cannot drift).

Every backticked ``family.name`` in docs/*.md whose family is a code family counts, and
so do the families the HTTP error table of docs/sync.md names with a wildcard
(``envelope.*``, ``enroll.*``). A refusal whose code is not here is a refusal without a
stable code, as far as the fuzzer is concerned: document it or fix it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs"
FAMILIES = ("sync", "envelope", "enroll", "op", "ops", "transition", "bundle", "client", "server",
            "replica", "rules", "backup", "audit", "web", "user", "jurisdiction", "cli")
WILDCARD_PAGES = ("sync.md", "protocol.md")
_CODE = re.compile(r"`([a-z_]+)\.(\*|[a-z_]+)`")


@dataclass(frozen=True)
class Documented:
    exact: frozenset[str]
    families: frozenset[str]  # documented as ``family.*``

    def __contains__(self, code: object) -> bool:
        if not isinstance(code, str) or "." not in code:
            return False
        return code in self.exact or code.split(".", 1)[0] in self.families


@cache
def documented() -> Documented:
    exact: set[str] = set()
    families: set[str] = set()
    for page in sorted(DOCS.glob("*.md")):
        if page.name == "fuzz.md":  # it names the codes the fuzzer found undocumented: no evidence
            continue
        for family, name in _CODE.findall(page.read_text(encoding="utf-8")):
            if family not in FAMILIES:
                continue
            if name == "*":
                if page.name in WILDCARD_PAGES:
                    families.add(family)
            else:
                exact.add(f"{family}.{name}")
    return Documented(frozenset(exact), frozenset(families))


def refusal_problem(status: int, content_type: str, body: bytes) -> tuple[str | None, str | None]:
    """(code, problem) of an HTTP refusal (status >= 400): problem is None when the body is
    the one error body of docs/sync.md with a documented code."""
    try:
        doc: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, f"HTTP {status}: the body is not JSON ({content_type!r}, {body[:80]!r})"
    if not content_type.startswith("application/json"):
        return None, f"HTTP {status}: content type {content_type!r}"
    if not isinstance(doc, dict) or set(doc) != {"ok", "error"} or doc["ok"] is not False:
        return None, f"HTTP {status}: not an error body: {str(doc)[:120]}"
    err = doc["error"]
    if not isinstance(err, dict) or set(err) != {"code", "message", "details"}:
        return None, f"HTTP {status}: error without code/message/details: {str(err)[:120]}"
    code, message = err["code"], err["message"]
    if not isinstance(message, str) or not message or "Traceback" in json.dumps(doc, ensure_ascii=False):
        return code if isinstance(code, str) else None, f"HTTP {status}: no sentence, or a traceback"
    if not isinstance(code, str) or not code:
        return None, f"HTTP {status}: no code"
    if code not in documented():
        return code, f"HTTP {status}: code {code!r} is not documented in docs/"
    return code, None
