"""The hybrid logical clock (conflict/hlc.py) and the stamp encoding (schema/stamp.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflict.hlc import DEFAULT_MAX_AHEAD_MS, Stamp, encode, is_far_ahead, parse, receive, tick
from schema.errors import StampInvalid
from schema.stamp import MAX_COUNTER, is_stamp

A = "a1b2c3d4e5f60718"
B = "zz00000000000001"
T = 1_763_787_000_000

nodes = st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=16, max_size=16)
stamps = st.builds(
    Stamp,
    st.integers(min_value=0, max_value=10**18 - 1),
    st.integers(min_value=0, max_value=MAX_COUNTER),
    nodes,
)
# stamps near one another, so that equal ms and equal counters happen often
near = st.builds(Stamp, st.integers(T, T + 5), st.integers(0, 3), st.sampled_from([A, B, "m" * 16]))


# ---- tick ----


def test_the_first_tick_is_the_wall_time_with_counter_zero() -> None:
    assert tick(None, T, A) == Stamp(T, 0, A)


def test_a_tick_after_the_wall_clock_moved_on_takes_the_wall_time() -> None:
    assert tick(Stamp(T, 7, A), T + 1, A) == Stamp(T + 1, 0, A)


def test_a_tick_in_the_same_millisecond_raises_the_counter() -> None:
    assert tick(Stamp(T, 7, A), T, A) == Stamp(T, 8, A)


def test_tick_stays_monotonic_when_the_wall_clock_goes_backwards() -> None:
    last = tick(None, T, A)
    seen = [last]
    for wall in (T - 1, T - 60_000, T - 3_600_000, T, T + 1, T - 5):
        last = tick(last, wall, A)
        seen.append(last)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[1] == Stamp(T, 1, A), "a clock set back keeps the old ms and counts on"


def test_counter_overflow_borrows_the_next_millisecond() -> None:
    full = Stamp(T, MAX_COUNTER, A)
    nxt = tick(full, T, A)
    assert nxt == Stamp(T + 1, 0, A)
    assert nxt > full
    assert encode(*nxt) > encode(*full)


def test_a_tick_at_the_borrowed_millisecond_counts_on_from_it() -> None:
    borrowed = tick(Stamp(T, MAX_COUNTER, A), T, A)
    assert tick(borrowed, T, A) == Stamp(T + 1, 1, A)
    assert tick(borrowed, T + 1, A) == Stamp(T + 1, 1, A)
    assert tick(borrowed, T + 2, A) == Stamp(T + 2, 0, A)


@given(st.lists(st.integers(T - 10, T + 10), min_size=1, max_size=60))
def test_ticks_strictly_increase_whatever_the_wall_clock_does(walls: list[int]) -> None:
    last = None
    for wall in walls:
        new = tick(last, wall, A)
        assert last is None or new > last
        assert new.ms >= wall
        last = new


# ---- receive ----


def test_receive_with_our_wall_clock_ahead_takes_the_wall_time() -> None:
    new, flagged = receive(Stamp(T, 3, A), Stamp(T + 1, 9, B), T + 5, A)
    assert (new, flagged) == (Stamp(T + 5, 0, A), False)


def test_receive_of_a_remote_stamp_ahead_takes_its_ms_and_counts_past_it() -> None:
    new, flagged = receive(Stamp(T, 3, A), Stamp(T + 100, 9, B), T + 10, A)
    assert (new, flagged) == (Stamp(T + 100, 10, A), False)


def test_receive_of_an_older_remote_stamp_counts_on_from_our_own() -> None:
    new, _ = receive(Stamp(T + 50, 3, A), Stamp(T, 9, B), T + 10, A)
    assert new == Stamp(T + 50, 4, A)


def test_receive_with_equal_ms_counts_past_the_larger_counter() -> None:
    assert receive(Stamp(T, 3, A), Stamp(T, 9, B), T, A)[0] == Stamp(T, 10, A)
    assert receive(Stamp(T, 9, A), Stamp(T, 3, B), T, A)[0] == Stamp(T, 10, A)


def test_receive_with_no_clock_yet_counts_past_the_remote_stamp() -> None:
    assert receive(None, Stamp(T, 4, B), T - 1, A)[0] == Stamp(T, 5, A)
    assert receive(None, Stamp(T, 4, B), T + 1, A)[0] == Stamp(T + 1, 0, A)


def test_receive_at_a_full_counter_borrows_the_next_millisecond() -> None:
    new, _ = receive(Stamp(T, 2, A), Stamp(T, MAX_COUNTER, B), T, A)
    assert new == Stamp(T + 1, 0, A)


def test_a_remote_stamp_far_ahead_is_flagged_and_does_not_move_the_clock() -> None:
    last = Stamp(T, 3, A)
    year_ahead = Stamp(T + 365 * 86_400_000, 0, B)
    new, flagged = receive(last, year_ahead, T + 10, A)
    assert flagged is True
    assert new == tick(last, T + 10, A) == Stamp(T + 10, 0, A)
    assert new < year_ahead


def test_a_remote_stamp_just_within_the_limit_moves_the_clock() -> None:
    edge = Stamp(T + DEFAULT_MAX_AHEAD_MS, 0, B)
    new, flagged = receive(None, edge, T, A)
    assert (new, flagged) == (Stamp(T + DEFAULT_MAX_AHEAD_MS, 1, A), False)
    assert receive(None, Stamp(edge.ms + 1, 0, B), T, A)[1] is True


def test_the_far_ahead_limit_is_ten_minutes_by_default_and_can_be_set() -> None:
    assert DEFAULT_MAX_AHEAD_MS == 600_000
    assert is_far_ahead(Stamp(T + 600_001, 0, B), T)
    assert not is_far_ahead(Stamp(T + 600_000, 0, B), T)
    assert receive(None, Stamp(T + 2_000, 0, B), T, A, max_ahead_ms=1_000)[1] is True


@given(last=st.one_of(st.none(), near), remote=near, wall=st.integers(T - 5, T + 10))
def test_receive_sorts_after_both_our_last_stamp_and_the_remote_one(
    last: Stamp | None, remote: Stamp, wall: int
) -> None:
    new, flagged = receive(last, remote, wall, A)
    assert not flagged
    assert new.node == A
    assert (new.ms, new.counter) > (remote.ms, remote.counter)
    assert last is None or new > last
    assert new.ms >= wall


# ---- encoding ----


def test_a_stamp_encodes_with_fixed_widths() -> None:
    assert encode(1_763_787_000_123, 5, A) == "000001763787000123.00005.a1b2c3d4e5f60718"
    assert Stamp(1, 0, A).encode() == "000000000000000001.00000.a1b2c3d4e5f60718"


@given(stamps, stamps)
def test_encoded_stamps_sort_as_their_tuples(x: Stamp, y: Stamp) -> None:
    ex, ey = encode(*x), encode(*y)
    assert (ex < ey) == (x < y)
    assert (ex == ey) == (x == y)


@given(stamps)
def test_parse_of_encode_gives_the_stamp_back(x: Stamp) -> None:
    text = encode(*x)
    assert parse(text) == x
    assert is_stamp(text)
    assert parse(text).encode() == text


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "000001763787000123.00000",
        "000001763787000123.00000.a1b2c3d4e5f6071",  # 15-char node
        "000001763787000123.00000.a1b2c3d4e5f607189",  # 17-char node
        "000001763787000123.00000.A1B2C3D4E5F60718",
        "00000176378700012.300000.a1b2c3d4e5f60718",
        "-00001763787000123.00000.a1b2c3d4e5f60718",
        " 000001763787000123.00000.a1b2c3d4e5f60718",
        None,
        1763787000123,
        b"000001763787000123.00000.a1b2c3d4e5f60718",
    ],
)
def test_parse_refuses_garbage_as_a_bad_stamp(garbage: Any) -> None:
    with pytest.raises(StampInvalid) as info:
        parse(garbage)
    assert info.value.code == "op.bad_stamp"
    assert not is_stamp(garbage)


def test_parse_refuses_a_stamp_with_a_trailing_newline() -> None:
    with pytest.raises(StampInvalid):
        parse("000001763787000123.00000.a1b2c3d4e5f60718\n")


def test_parse_refuses_a_stamp_written_in_full_width_digits() -> None:
    full_width = "０００００１７６３７８７０００１２３.00000.a1b2c3d4e5f60718"
    assert full_width > "999999999999999999.00000.a1b2c3d4e5f60718"  # text order is broken
    with pytest.raises(StampInvalid):
        parse(full_width)


@pytest.mark.parametrize(
    ("ms", "counter", "node"),
    [
        (-1, 0, A),
        (10**18, 0, A),
        (T, -1, A),
        (T, MAX_COUNTER + 1, A),
        (T, 0, "short"),
        (T, 0, "A1B2C3D4E5F60718"),
    ],
)
def test_encode_refuses_what_cannot_be_written_in_fixed_widths(
    ms: int, counter: int, node: str
) -> None:
    with pytest.raises(StampInvalid) as info:
        encode(ms, counter, node)
    assert info.value.code == "op.bad_stamp"
