"""What a coordinator may see of a person (DOMAIN.md "Confidentiality and personal data").

Two rules, applied in one place for pages and exports alike:

1. **Reporters (检举控告).** In a case of category ``accusation``, the identity of the
   person who reports or accuses must never reach someone without the permission
   (信访工作条例 Art. 30(3)). Without ``confidential``: every party except the respondent
   (the accused) is hidden (name, ID number, phone, address), and so are the case's
   title, summary and demands and every free-text record on the case (visit and mediation
   notes, notice summaries, comments), since they may name the reporter. Searching by
   name never finds such a party for such a user. With the permission the values are
   shown, and each view is written to ``access_log`` by the caller.
2. **ID numbers and phones** are masked on screen for everyone (``schema.masking``)
   unless the user pressed "show" on that case, which is logged and lasts a few
   minutes (``auth.GRANT_MS``). Exports carry them masked too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schema.entities import ENTITIES
from schema.masking import MASKERS

ACCUSATION = "accusation"
CASE_HIDDEN = frozenset({"title", "summary", "demands"})
PARTY_IDENTITY = frozenset({"name", "id_number", "phone", "address"})
HIDDEN = "\u2588" * 3  # what a hidden value is replaced by before the page puts words around it


@dataclass
class Viewer:
    """One user's view of one request: the permission, and the "show" grants they hold."""

    confidential: bool
    grants: Mapping[str, int] = field(default_factory=dict)
    hidden_text: str = "(confidential)"
    confidential_seen: set[str] = field(default_factory=set)  # accusation cases shown unmasked

    def sees_reporters(self, category: str | None) -> bool:
        return category != ACCUSATION or self.confidential

    def shows_numbers(self, case_id: str) -> bool:
        return f"numbers:{case_id}" in self.grants

    def note_view(self, case_id: str, category: str | None) -> None:
        if category == ACCUSATION and self.confidential:
            self.confidential_seen.add(case_id)

    # ---- values ----

    def case_value(self, case: Mapping[str, Any], name: str, value: Any) -> Any:
        if name in CASE_HIDDEN and value and not self.sees_reporters(case.get("category")):
            return self.hidden_text
        if name in CASE_HIDDEN and value:
            self.note_view(str(case.get("id")), case.get("category"))
        return value

    def party_value(self, case: Mapping[str, Any], party: Mapping[str, Any], name: str, value: Any,
                    *, numbers: bool | None = None) -> Any:
        """A party's field as this viewer may see it (``numbers``: override the "show" grant)."""
        if value in (None, ""):
            return value
        case_id = str(case.get("id"))
        if (name in PARTY_IDENTITY and case.get("category") == ACCUSATION
                and party.get("role") != "respondent"):
            if not self.confidential:
                return self.hidden_text
            self.note_view(case_id, ACCUSATION)
        show = self.shows_numbers(case_id) if numbers is None else numbers
        if name in MASKERS and not show:
            return MASKERS[name](str(value))
        return value

    def record_value(self, case: Mapping[str, Any], entity: str, name: str, value: Any,
                     *, party: Mapping[str, Any] | None = None) -> Any:
        """Any entity's field on a case: parties by ``party_value``, personal text hidden in
        an accusation case without the permission, ID numbers and phones masked."""
        if entity == "case":
            return self.case_value(case, name, value)
        if entity == "party":
            return self.party_value(case, party or {}, name, value)
        spec = ENTITIES.get(entity)
        fs = spec.field_map.get(name) if spec else None
        if fs is not None and fs.personal and value and case.get("category") == ACCUSATION:
            if not self.confidential:
                return self.hidden_text
            self.note_view(str(case.get("id")), ACCUSATION)
        if name in MASKERS and value and not self.shows_numbers(str(case.get("id"))):
            return MASKERS[name](str(value))
        return value
