"""The case state machine of DOMAIN.md, as data and one pure function.

``TRANSITIONS`` says, for every action, the states it may start from and the state it
leads to. ``apply_transition`` checks one transition op's action against a case's
lifecycle and returns the new lifecycle, or raises ``TransitionRefused`` with a stable
code. ``conflict.fold`` calls it in stamp order; the field client calls
``allowed_actions`` to offer only what the machine allows.

Rules beyond the table:
  * the acting level (village / township / county) must be at least the case's level:
    a village cannot act on a case that has been reported up (``transition.level_too_low``);
  * ``escalate`` (上报) raises the level by one and needs ``to_node``; not beyond county;
    with ``from_level`` (the server's deadline escalations carry it) it applies only while
    the case is still at that level (``transition.level_changed``) and that level has not
    dealt with it (``transition.already_decided``: the level has ever decided, closed or
    rejected it, ``decided_level``, even if a review request or a reopen has left it open
    there since; a case decided below and then reported up is not decided at its new level), so an escalation decided on old information never
    lifts a case twice, nor one the level had already dealt with;
  * ``extend`` (延期) is allowed once, at most 30 days (信访工作条例 Art. 34);
  * ``decide`` / ``decide_review`` / ``decide_rereview`` carry a ``decision``;
  * a voided case takes no transitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schema.enums import LEVEL_ORDER, Action, Level, State
from schema.errors import TransitionRefused

S = State
A = Action

OPEN_STATES: frozenset[str] = frozenset(
    {
        S.REGISTERED,
        S.ROUTED,
        S.ACCEPTED,
        S.IN_HANDLING,
        S.EXTENDED,
        S.DECIDED,
        S.REVIEW_REQUESTED,
        S.REREVIEW_REQUESTED,
    }
)

# action -> (states it may start from, state it leads to; None = state unchanged)
TRANSITIONS: dict[str, tuple[frozenset[str], str | None]] = {
    A.ROUTE: (frozenset({S.REGISTERED}), S.ROUTED),
    A.ACCEPT: (frozenset({S.REGISTERED, S.ROUTED}), S.ACCEPTED),
    A.REJECT: (frozenset({S.REGISTERED, S.ROUTED}), S.NOT_ACCEPTED),
    A.START: (frozenset({S.ACCEPTED}), S.IN_HANDLING),
    A.EXTEND: (frozenset({S.ACCEPTED, S.IN_HANDLING}), S.EXTENDED),
    A.DECIDE: (frozenset({S.ACCEPTED, S.IN_HANDLING, S.EXTENDED}), S.DECIDED),
    A.CLOSE: (frozenset({S.DECIDED}), S.CLOSED),
    A.CLOSE_BY_AGREEMENT: (frozenset({S.ACCEPTED, S.IN_HANDLING, S.EXTENDED}), S.CLOSED),
    A.REQUEST_REVIEW: (frozenset({S.CLOSED}), S.REVIEW_REQUESTED),
    A.DECIDE_REVIEW: (frozenset({S.REVIEW_REQUESTED}), S.REVIEW_DECIDED),
    A.REQUEST_REREVIEW: (frozenset({S.REVIEW_DECIDED}), S.REREVIEW_REQUESTED),
    A.DECIDE_REREVIEW: (frozenset({S.REREVIEW_REQUESTED}), S.FINAL),
    A.FINALIZE: (frozenset({S.CLOSED, S.REVIEW_DECIDED}), S.FINAL),
    A.ESCALATE: (OPEN_STATES, None),
    A.REOPEN: (frozenset({S.CLOSED, S.NOT_ACCEPTED, S.FINAL}), S.IN_HANDLING),
}

NEEDS_DECISION: frozenset[str] = frozenset({A.DECIDE, A.DECIDE_REVIEW, A.DECIDE_REREVIEW})
NEEDS_NODE: frozenset[str] = frozenset({A.ESCALATE, A.ROUTE})
MAX_EXTENSION_DAYS = 30  # statutory, 信访工作条例 Art. 34

NEXT_LEVEL: dict[str, str] = {Level.VILLAGE: Level.TOWNSHIP, Level.TOWNSHIP: Level.COUNTY}


def initial_lifecycle(level: str, node: str, occurred_at: str) -> dict[str, Any]:
    """The lifecycle of a newly registered case."""
    return {
        "state": S.REGISTERED.value,
        "level": str(level),
        "node": node,
        "decision": None,
        "extended_days": 0,
        "reopened": 0,
        "accepted_at": None,
        "decided_at": None,
        "closed_at": None,
        "state_since": occurred_at,
        "level_since": occurred_at,
        "decided_level": None,  # the last level that decided, closed or rejected the case
    }


def allowed_actions(
    state: str, level: str, acting_level: str, *, extended: bool = False, voided: bool = False
) -> list[str]:
    """The actions the machine allows from ``state`` for someone at ``acting_level``.

    ``extended``: the case has used its one extension (延期), so ``extend`` is not offered;
    ``voided``: the case is void (作废) and takes no step. Callers holding a case row or a
    lifecycle use ``actions_for``.
    """
    if voided or LEVEL_ORDER.get(acting_level, -1) < LEVEL_ORDER.get(level, 99):
        return []
    out = []
    for action, (sources, _) in TRANSITIONS.items():
        if state not in sources:
            continue
        if action == A.ESCALATE and level not in NEXT_LEVEL:
            continue
        if action == A.EXTEND and extended:
            continue
        out.append(str(action))
    return out


def actions_for(case: Mapping[str, Any], acting_level: str) -> list[str]:
    """The actions offered on ``case``: a lifecycle or a ``cases`` row (state, level,
    extended_days and, on a row, voided), exactly those ``apply_transition`` takes."""
    return allowed_actions(case["state"], case["level"], acting_level,
                           extended=bool(case.get("extended_days")), voided=bool(case.get("voided")))


def refuse(code: str, message: str, **details: Any) -> TransitionRefused:
    return TransitionRefused(message, code=f"transition.{code}", details=details or None)


def apply_transition(
    lifecycle: Mapping[str, Any],
    values: Mapping[str, Any],
    occurred_at: str,
    *,
    voided: bool = False,
) -> dict[str, Any]:
    """Return the lifecycle after a transition op with ``values``, or raise TransitionRefused.

    ``values`` holds ``action`` and ``acting_level`` and, by action, ``to_node``,
    ``decision``, ``days``. The input mapping is not changed.
    """
    action = values["action"]
    if action not in TRANSITIONS:
        raise refuse("unknown_action", f"unknown action {action!r}", action=action)
    if voided:
        raise refuse("case_voided", "the case has been voided", action=action)
    state = lifecycle["state"]
    level = lifecycle["level"]
    acting = values["acting_level"]
    if LEVEL_ORDER[acting] < LEVEL_ORDER[level]:
        raise refuse(
            "level_too_low",
            f"a {acting}-level actor cannot {action} a case handled at {level} level",
            action=action,
            acting_level=acting,
            case_level=level,
        )
    sources, target = TRANSITIONS[action]
    if state not in sources:
        raise refuse(
            "not_allowed_from_state",
            f"{action} is not allowed from state {state}",
            action=action,
            state=state,
        )
    new = dict(lifecycle)
    if action == A.ESCALATE:
        if level not in NEXT_LEVEL:
            raise refuse("already_top_level", "the case is already at county level")
        expected = values.get("from_level")
        if expected is not None and expected != level:
            raise refuse("level_changed", f"the case is no longer at {expected} level (now {level})",
                         from_level=expected, case_level=level)
        if expected is not None and lifecycle.get("decided_level") == level:
            raise refuse("already_decided", f"the {level} level has already issued its decision",
                         from_level=expected, state=state)
        new["level"] = NEXT_LEVEL[level]
        new["node"] = values["to_node"]
        new["level_since"] = occurred_at
    elif action == A.ROUTE:
        new["node"] = values["to_node"]
    elif action == A.EXTEND:
        if lifecycle["extended_days"]:
            raise refuse("already_extended", "the case has already been extended once")
        new["extended_days"] = int(values.get("days") or MAX_EXTENSION_DAYS)
    elif action in NEEDS_DECISION:
        new["decision"] = values["decision"]
    elif action == A.REOPEN:
        new["reopened"] = 1
    if target is not None:
        new["state"] = str(target)
        new["state_since"] = occurred_at
    if action == A.ACCEPT:
        new["accepted_at"] = occurred_at
    elif action in NEEDS_DECISION:
        new["decided_at"] = occurred_at
    if target in (S.CLOSED, S.FINAL, S.NOT_ACCEPTED):
        new["closed_at"] = occurred_at
    if target is not None and (target == S.DECIDED or target not in OPEN_STATES):
        new["decided_level"] = level  # this level has dealt with the case (its handling limit is met or ended)
    return new
