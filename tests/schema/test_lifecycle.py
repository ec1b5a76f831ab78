"""The case state machine (schema/lifecycle.py), driven by its own table.

Each test reads ``TRANSITIONS`` rather than restating it, so a change to the table is
checked by the same tests; the few facts that do not come from the table (escalation,
one extension, the acting level) are stated here from DOMAIN.md.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from schema.enums import LEVEL_ORDER, Action, Level, State
from schema.errors import TransitionRefused
from schema.lifecycle import (
    MAX_EXTENSION_DAYS,
    NEXT_LEVEL,
    OPEN_STATES,
    TRANSITIONS,
    actions_for,
    allowed_actions,
    apply_transition,
    initial_lifecycle,
)

T_CREATE = "2025-11-22T09:00:00+08:00"
T_ACT = "2025-11-25T15:30:00+08:00"
STATES = [s.value for s in State]
LEVELS = [lvl.value for lvl in Level]

ALLOWED = [(str(a), s) for a, (sources, _) in TRANSITIONS.items() for s in sorted(sources)]
DISALLOWED = [
    (str(a), s) for a, (sources, _) in TRANSITIONS.items() for s in STATES if s not in sources
]


def lifecycle_at(state: str, level: str = "village", **more: Any) -> dict[str, Any]:
    life = initial_lifecycle(level, "330102001", T_CREATE)
    life["state"] = state
    life.update(more)
    return life


def values_for(action: str, acting_level: str = "village") -> dict[str, Any]:
    """What a well-formed transition op of ``action`` carries."""
    values: dict[str, Any] = {"action": action, "acting_level": acting_level}
    if action in (Action.ROUTE, Action.ESCALATE):
        values["to_node"] = "330102"
    if action in (Action.DECIDE, Action.DECIDE_REVIEW, Action.DECIDE_REREVIEW):
        values["decision"] = "explain"
    if action == Action.EXTEND:
        values["days"] = 20
    return values


def refusal_code(life: dict[str, Any], values: dict[str, Any], **kw: Any) -> str:
    with pytest.raises(TransitionRefused) as info:
        apply_transition(life, values, T_ACT, **kw)
    return info.value.code


def test_the_table_covers_every_action_and_only_known_states() -> None:
    assert set(TRANSITIONS) == {a.value for a in Action}
    for sources, target in TRANSITIONS.values():
        assert sources and sources <= set(STATES)
        assert target is None or target in STATES


def test_every_state_but_registered_is_reached_by_some_action() -> None:
    targets = {t for _, t in TRANSITIONS.values() if t is not None}
    assert set(STATES) - targets == {State.REGISTERED.value}


def test_a_new_case_is_registered_at_its_level_and_node() -> None:
    life = initial_lifecycle(Level.TOWNSHIP, "330102", T_CREATE)
    assert life["state"] == "registered"
    assert life["level"] == "township" and type(life["level"]) is str
    assert life["node"] == "330102"
    assert life["state_since"] == T_CREATE
    assert life["extended_days"] == 0 and life["reopened"] == 0


@pytest.mark.parametrize(("action", "state"), ALLOWED)
def test_every_action_from_every_allowed_state_lands_where_the_table_says(
    action: str, state: str
) -> None:
    life = lifecycle_at(state)
    new = apply_transition(life, values_for(action), T_ACT)
    target = TRANSITIONS[action][1]
    assert new["state"] == (state if target is None else target)
    assert new["state_since"] == (T_CREATE if target is None else T_ACT)
    assert life == lifecycle_at(state), "the input lifecycle is not changed"


@pytest.mark.parametrize(("action", "state"), DISALLOWED)
def test_an_action_from_a_state_the_table_does_not_list_is_refused(action: str, state: str) -> None:
    assert refusal_code(lifecycle_at(state), values_for(action)) == (
        "transition.not_allowed_from_state"
    )


@pytest.mark.parametrize(
    ("case_level", "acting"),
    [(c, a) for c, a in itertools.product(LEVELS, LEVELS) if LEVEL_ORDER[a] < LEVEL_ORDER[c]],
)
def test_an_actor_below_the_cases_level_is_refused(case_level: str, acting: str) -> None:
    life = lifecycle_at("accepted", case_level)
    with pytest.raises(TransitionRefused) as info:
        apply_transition(life, values_for("start", acting), T_ACT)
    assert info.value.code == "transition.level_too_low"
    assert info.value.details == {
        "action": "start",
        "acting_level": acting,
        "case_level": case_level,
    }


def test_a_village_acting_on_a_township_case_is_refused_whatever_the_action() -> None:
    for action, state in ALLOWED:
        life = lifecycle_at(state, "township")
        assert refusal_code(life, values_for(action, "village")) == "transition.level_too_low"


def test_a_higher_level_may_act_on_a_lower_levels_case() -> None:
    life = lifecycle_at("accepted", "village")
    assert apply_transition(life, values_for("start", "county"), T_ACT)["state"] == "in_handling"


@pytest.mark.parametrize("state", sorted(OPEN_STATES))
def test_escalate_raises_the_level_by_one_and_moves_the_node(state: str) -> None:
    life = lifecycle_at(state, "village")
    new = apply_transition(life, {**values_for("escalate"), "to_node": "330102"}, T_ACT)
    assert (new["level"], new["node"], new["state"]) == ("township", "330102", state)
    assert new["level_since"] == T_ACT and new["state_since"] == T_CREATE
    again = apply_transition(new, {**values_for("escalate", "township"), "to_node": "3301"}, T_ACT)
    assert (again["level"], again["node"], again["state"]) == ("county", "3301", state)


def test_escalate_from_county_is_refused() -> None:
    life = lifecycle_at("in_handling", "county")
    assert refusal_code(life, values_for("escalate", "county")) == "transition.already_top_level"
    assert "county" not in NEXT_LEVEL


def test_a_second_extension_is_refused() -> None:
    life = lifecycle_at("accepted")
    extended = apply_transition(life, values_for("extend"), T_ACT)
    assert extended["extended_days"] == 20
    # back to handling by the only road there is (decide, close, reopen), then extend again
    for action in ("decide", "close", "reopen"):
        extended = apply_transition(extended, values_for(action), T_ACT)
    assert extended["state"] == "in_handling" and extended["reopened"] == 1
    assert refusal_code(extended, values_for("extend")) == "transition.already_extended"


def test_an_extension_without_days_takes_the_statutory_maximum() -> None:
    values = {k: v for k, v in values_for("extend").items() if k != "days"}
    new = apply_transition(lifecycle_at("in_handling"), values, T_ACT)
    assert new["extended_days"] == MAX_EXTENSION_DAYS == 30


def test_route_moves_the_node_but_not_the_level() -> None:
    new = apply_transition(lifecycle_at("registered"), values_for("route"), T_ACT)
    assert (new["state"], new["level"], new["node"]) == ("routed", "village", "330102")


def test_accept_records_when_and_decide_records_the_decision() -> None:
    accepted = apply_transition(lifecycle_at("registered"), values_for("accept"), T_ACT)
    assert accepted["accepted_at"] == T_ACT
    later = "2025-12-20T10:00:00+08:00"
    decided = apply_transition(accepted, values_for("decide"), later)
    assert (decided["decision"], decided["decided_at"]) == ("explain", later)
    assert decided["accepted_at"] == T_ACT


@pytest.mark.parametrize(
    ("action", "state"),
    [(a, s) for a, s in ALLOWED if TRANSITIONS[a][1] in ("closed", "final", "not_accepted")],
)
def test_a_transition_that_ends_the_case_records_when(action: str, state: str) -> None:
    new = apply_transition(lifecycle_at(state), values_for(action), T_ACT)
    assert new["closed_at"] == T_ACT


def test_a_voided_case_takes_no_transition() -> None:
    for action, state in ALLOWED:
        code = refusal_code(lifecycle_at(state), values_for(action), voided=True)
        assert code == "transition.case_voided"


def test_an_unknown_action_is_refused() -> None:
    code = refusal_code(lifecycle_at("registered"), values_for("teleport"))
    assert code == "transition.unknown_action"


@pytest.mark.parametrize(
    ("state", "level", "acting", "extended"), list(itertools.product(STATES, LEVELS, LEVELS, (False, True)))
)
def test_allowed_actions_agrees_with_apply_transition(state: str, level: str, acting: str, extended: bool) -> None:
    offered = allowed_actions(state, level, acting, extended=extended)
    life = lifecycle_at(state, level, extended_days=30 if extended else 0)
    for action in TRANSITIONS:
        try:
            apply_transition(life, values_for(action, acting), T_ACT)
            works = True
        except TransitionRefused:
            works = False
        assert (action in offered) == works, (action, state, level, acting)
    assert len(offered) == len(set(offered))


@pytest.mark.parametrize("state", STATES)
def test_a_voided_case_is_offered_nothing_and_takes_nothing(state: str) -> None:
    row = {**lifecycle_at(state), "voided": 1}
    assert actions_for(row, "county") == []
    for action in TRANSITIONS:
        with pytest.raises(TransitionRefused):
            apply_transition(row, values_for(action, "county"), T_ACT, voided=True)


def test_actions_for_reads_the_extension_from_the_case() -> None:
    assert "extend" in actions_for(lifecycle_at("in_handling"), "village")
    assert "extend" not in actions_for(lifecycle_at("in_handling", extended_days=12), "village")


def test_no_state_is_a_dead_end_and_every_open_state_offers_escalation() -> None:
    for state in STATES:
        offered = allowed_actions(state, "village", "village")
        if state in OPEN_STATES:
            assert "escalate" in offered
        assert offered, state


def deadline_escalation(from_level: str = "village") -> dict[str, Any]:
    """The sweep's escalation on a missed level limit (it carries ``from_level``)."""
    return {**values_for("escalate", "county"), "from_level": from_level}


@pytest.mark.parametrize(
    "road",
    [
        ("reject", "reopen"),
        ("accept", "decide", "close", "request_review"),
        ("accept", "close_by_agreement", "request_review"),
        ("accept", "decide", "close", "reopen"),
    ],
)
def test_a_deadline_escalation_is_refused_once_the_level_dealt_with_the_case_even_if_it_is_open_again(
    road: tuple[str, ...],
) -> None:
    life = initial_lifecycle("village", "330102001", T_CREATE)
    for action in road:
        life = apply_transition(life, values_for(action), T_ACT)
    assert life["state"] in OPEN_STATES and life["decided_level"] == "village"
    assert refusal_code(life, deadline_escalation()) == "transition.already_decided"
    # a person may still report it up, and the level above's own limit is its own
    up = apply_transition(life, values_for("escalate"), T_ACT)
    assert (up["level"], up["decided_level"]) == ("township", "village")
    assert refusal_code(up, deadline_escalation()) == "transition.level_changed"


def test_a_deadline_escalation_applies_while_the_level_has_not_dealt_with_the_case() -> None:
    life = initial_lifecycle("village", "330102001", T_CREATE)
    for action in ("accept", "start", "extend"):
        life = apply_transition(life, values_for(action), T_ACT)
    assert life["decided_level"] is None
    assert apply_transition(life, deadline_escalation(), T_ACT)["level"] == "township"


def test_a_decided_case_reported_up_can_still_be_escalated_for_the_level_above() -> None:
    """The village decides, then reports the case up itself: the township has not dealt with
    it, so the sweep's escalation for a missed township limit applies (the state alone,
    still ``decided``, does not say which level decided)."""
    life = initial_lifecycle("village", "330102001", T_CREATE)
    for action in ("accept", "decide"):
        life = apply_transition(life, values_for(action), T_ACT)
    assert refusal_code(life, deadline_escalation()) == "transition.already_decided"
    up = apply_transition(life, values_for("escalate"), T_ACT)
    assert (up["state"], up["level"], up["decided_level"]) == ("decided", "township", "village")
    county = apply_transition(up, deadline_escalation("township"), T_ACT)
    assert county["level"] == "county"
