"""Stored responses (`store: true`): what GET /v1/responses/{id}, its input items and `previous_response_id` read.

Held in this process's memory, bounded by count, by size and by age: the oldest go first. A restart forgets them, and
replicas behind a load balancer do not share them (README, "Responses API").
"""

import json
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class StoredResponse:
    response: dict  # the response object as it was answered
    input_items: list[dict]  # this request's input, as message items with ids
    history: list[dict]  # the conversation up to and including this answer, as chat messages (instructions excluded)
    size: int  # bytes it takes, about (its JSON)
    stored_at: float


class ResponseStore:
    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()  # oldest first
        self._bytes = 0

    def put(self, response: dict, input_items: list[dict], history: list[dict]) -> None:
        size = len(json.dumps([response, input_items, history]))
        if size > self.max_bytes or self.max_entries == 0:
            return  # larger than the whole store: kept nowhere, as a store=false response
        self._entries[response["id"]] = StoredResponse(response, input_items, history, size, time.monotonic())
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def get(self, response_id: str) -> StoredResponse | None:
        self._expire()
        return self._entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        self._expire()
        if response_id not in self._entries:
            return False
        self._drop(response_id)
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        if self.ttl_s <= 0:
            return
        deadline = time.monotonic() - self.ttl_s
        while self._entries and next(iter(self._entries.values())).stored_at < deadline:
            self._drop(next(iter(self._entries)))

    def _drop(self, response_id: str) -> None:
        self._bytes -= self._entries.pop(response_id).size
