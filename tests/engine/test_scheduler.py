"""Admission: first come, first served, within the batch-size limit and the KV-cache budget."""

from collections import deque
from dataclasses import dataclass

from server.engine.scheduler import Scheduler


@dataclass
class Req:
    max_total_tokens: int
    cancelled: bool = False


def test_admits_up_to_the_batch_size():
    waiting = deque(Req(10) for _ in range(5))
    admitted = Scheduler(max_batch_size=3, kv_budget_tokens=10_000).admit([], waiting)
    assert len(admitted) == 3 and len(waiting) == 2


def test_counts_the_running_rows():
    waiting = deque(Req(10) for _ in range(5))
    assert len(Scheduler(4, 10_000).admit([Req(10)] * 3, waiting)) == 1


def test_budget_is_rows_times_the_longest_row():
    scheduler = Scheduler(max_batch_size=16, kv_budget_tokens=1000)
    waiting = deque([Req(100), Req(100), Req(400), Req(100)])
    admitted = scheduler.admit([Req(200)], waiting)
    # 2 rows x 200 = 400, 3 x 200 = 600, then 4 x 400 = 1600 > 1000: stop, in order
    assert [r.max_total_tokens for r in admitted] == [100, 100]
    assert [r.max_total_tokens for r in waiting] == [400, 100]


def test_a_long_request_is_not_overtaken_by_short_ones():
    waiting = deque([Req(900), Req(10)])
    assert Scheduler(16, 1000).admit([Req(500)], waiting) == []
    assert len(waiting) == 2


def test_cancelled_requests_are_popped_without_taking_a_slot():
    waiting = deque([Req(10, cancelled=True), Req(10), Req(10)])
    admitted = Scheduler(max_batch_size=2, kv_budget_tokens=1000).admit([], waiting)
    assert [r.cancelled for r in admitted] == [True, False, False] and not waiting


def test_a_request_that_never_fits_is_refused_with_its_need():
    scheduler = Scheduler(8, 1000)
    assert scheduler.refusal(Req(1000)) is None and "needs 1001 KV-cache slots" in scheduler.refusal(Req(1001))


def test_spare_columns_and_row_multiples_count_against_the_budget():
    """A row holds room to grow beside its tokens, and the static step's cache holds rows in multiples of 8."""
    scheduler = Scheduler(16, 8 * (100 + 256), spare_columns=256, row_multiple=8)
    assert scheduler.refusal(Req(100)) is None and scheduler.refusal(Req(101)) is not None  # 8 rows of 101 + 256
    waiting = deque([Req(100)] * 12)
    assert len(scheduler.admit([], waiting)) == 8  # 9 rows would hold 16 x 356 slots
