"""Who joins the running batch at the next step: plain Python, no torch."""

from collections import deque
from typing import Protocol

ROW_CAP_RECOVERY_STEPS = 100  # after running out of memory, the batch may grow by one row per this many good steps


class Schedulable(Protocol):
    cancelled: bool

    @property
    def max_total_tokens(self) -> int: ...


class Scheduler:
    """First come, first served, within a batch-size limit and a KV-cache budget.

    Rows share one left-padded cache, so a batch holds rows x (longest row) slots. A request is admitted only if
    that stays within the budget even when every row runs to its max_tokens, so a running batch never outgrows
    its memory; whoever does not fit waits (in order, so a long request is not starved by short ones).
    After the device ran out of memory decoding, the batch is capped at the rows that still fitted, and the cap
    rises again by a row per ROW_CAP_RECOVERY_STEPS good steps.
    """

    def __init__(self, max_batch_size: int, kv_budget_tokens: int, spare_columns: int = 0, row_multiple: int = 1) -> None:
        self.max_batch_size = max_batch_size
        self.kv_budget_tokens = kv_budget_tokens
        self._spare_columns, self._row_multiple = spare_columns, row_multiple
        self.row_cap = max_batch_size
        self._good_steps = 0

    def ran_out_of_memory(self, rows_that_fit: int) -> None:
        self.row_cap, self._good_steps = rows_that_fit, 0

    def step_succeeded(self) -> None:
        if self.row_cap < self.max_batch_size:
            self._good_steps += 1
            if self._good_steps >= ROW_CAP_RECOVERY_STEPS:
                self.row_cap, self._good_steps = self.row_cap + 1, 0

    def slots(self, rows: int, width: int) -> int:
        """Cache slots a batch of `rows` rows of `width` tokens holds: each row's spare columns, and rows rounded up
        to the cache's multiple, count too."""
        return -(-rows // self._row_multiple) * self._row_multiple * (width + self._spare_columns)

    def refusal(self, request: Schedulable) -> str | None:
        """Why `request` can never run here (it does not fit the budget even alone), or None."""
        needs = self.slots(1, request.max_total_tokens)
        if needs <= self.kv_budget_tokens:
            return None
        return (f"the request needs {needs} KV-cache slots (prompt, max_tokens, room to grow); this server's budget "
                f"is {self.kv_budget_tokens}: lower max_tokens or send shorter audio")

    def admit(self, running: list[Schedulable], waiting: deque) -> list:
        """Pop from `waiting` the requests that join now (cancelled ones are popped and returned too, to be dropped)."""
        admitted: list = []
        rows = len(running)
        limit = min(self.max_batch_size, self.row_cap)
        width = max((r.max_total_tokens for r in running), default=0)
        while waiting and rows < limit:
            candidate = waiting[0]
            if candidate.cancelled:
                admitted.append(waiting.popleft())
                continue
            new_width = max(width, candidate.max_total_tokens)
            if self.slots(rows + 1, new_width) > self.kv_budget_tokens:
                break
            admitted.append(waiting.popleft())
            rows, width = rows + 1, new_width
        return admitted
