"""Who joins the running batch at the next step: plain Python, no torch."""

from collections import deque
from typing import Protocol


class Schedulable(Protocol):
    cancelled: bool

    @property
    def max_total_tokens(self) -> int: ...


class Scheduler:
    """First come, first served, within a batch-size limit and a KV-cache budget.

    Rows share one left-padded cache, so a batch holds rows x (longest row) slots. A request is admitted only if
    that stays within the budget even when every row runs to its max_tokens, so a running batch never outgrows
    its memory; whoever does not fit waits (in order, so a long request is not starved by short ones).
    """

    def __init__(self, max_batch_size: int, kv_budget_tokens: int) -> None:
        self.max_batch_size = max_batch_size
        self.kv_budget_tokens = kv_budget_tokens

    def fits_alone(self, request: Schedulable) -> bool:
        return request.max_total_tokens <= self.kv_budget_tokens

    def admit(self, running: list[Schedulable], waiting: deque, max_rows: int | None = None) -> list:
        """Pop from `waiting` the requests that join now (cancelled ones are popped and returned too, to be dropped).

        `max_rows` lowers the batch-size limit for now (after the device ran out of memory).
        """
        admitted: list = []
        rows = len(running)
        limit = min(self.max_batch_size, max_rows or self.max_batch_size)
        width = max((r.max_total_tokens for r in running), default=0)
        while waiting and rows < limit:
            candidate = waiting[0]
            if candidate.cancelled:
                admitted.append(waiting.popleft())
                continue
            new_width = max(width, candidate.max_total_tokens)
            if (rows + 1) * new_width > self.kv_budget_tokens:
                break
            admitted.append(waiting.popleft())
            rows, width = rows + 1, new_width
        return admitted
