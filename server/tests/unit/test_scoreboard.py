"""The scoreboard's two slot forms (memoryview on CPython, struct on PyPy) write the
same numbers to the same places: each is checked here on whichever runtime runs the
tests, against what the board itself reads back (totals, live, release)."""

from __future__ import annotations

import pytest

from wizgy.scoreboard import COUNTERS, WIDTH, PackedSlotStats, Scoreboard, SlotStats


@pytest.mark.parametrize("form", [SlotStats, PackedSlotStats])
def test_slot_forms_count_into_their_own_slot(form):
    board = Scoreboard(slots=2)
    first, second = board.claim(), board.claim()
    stats = form(board._map, board._mv, first * WIDTH)
    for status in (200, 204, 404, 400, 500, 503, 302):
        stats.count(status)
    stats.active = 3
    stats.active -= 1
    stats.idle = 7
    stats.pid = 4242
    stats.connections_total += 5
    assert (stats.requests_total, stats.responses_4xx, stats.responses_5xx) == (7, 2, 2)
    assert board.stats(first).as_dict() == stats.as_dict() == {
        "requests_total": 7, "responses_4xx": 2, "responses_5xx": 2,
        "connections_total": 5, "emfile_events": 0, "fork_failures": 0,
        "active": 2, "idle": 7, "pid": 4242, "heartbeat": 0}
    assert board.stats(second).as_dict() == dict.fromkeys(stats.as_dict(), 0)
    assert board.live() == [stats.as_dict()]
    board.release(first)
    totals = board.totals()
    assert {name: totals[name] for name in COUNTERS} == {
        "requests_total": 7, "responses_4xx": 2, "responses_5xx": 2,
        "connections_total": 5, "emfile_events": 0, "fork_failures": 0}
    assert (totals["active"], totals["idle"]) == (0, 0)  # the gauges die with the process
    assert board.live() == []
