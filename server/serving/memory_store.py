"""The response store in this process's memory (`--response-store memory`, the default): a restart forgets it, and
replicas behind a load balancer each have their own (the Redis store is the shared one)."""

import time
from collections import OrderedDict
from dataclasses import dataclass

from server.serving.response_store import Owner, ResponseStore, StoreBounds, StoredResponse, decode


@dataclass(frozen=True)
class _Entry:
    owner: Owner
    body: str
    size: int
    stored_at: float


class MemoryResponseStore(ResponseStore):
    def __init__(self, bounds: StoreBounds) -> None:
        self.bounds = bounds
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._bytes = 0

    async def put(self, owner: Owner, response_id: str, body: str) -> None:
        size = len(body.encode())
        if not self.bounds.keeps(size):
            return  # larger than the whole store: kept nowhere, as a store=false response
        self._expire()
        self._entries[response_id] = _Entry(owner, body, size, time.monotonic())
        self._bytes += size
        while len(self._entries) > self.bounds.max_entries or self._bytes > self.bounds.max_bytes:
            self._drop(next(iter(self._entries)))

    async def get(self, owner: Owner, response_id: str) -> StoredResponse | None:
        self._expire()
        entry = self._entries.get(response_id)
        return decode(entry.body) if entry is not None and entry.owner == owner else None

    async def delete(self, owner: Owner, response_id: str) -> bool:
        self._expire()
        entry = self._entries.get(response_id)
        if entry is None or entry.owner != owner:
            return False
        self._drop(response_id)
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        if self.bounds.ttl_s <= 0:
            return
        deadline = time.monotonic() - self.bounds.ttl_s
        while self._entries and next(iter(self._entries.values())).stored_at < deadline:
            self._drop(next(iter(self._entries)))

    def _drop(self, response_id: str) -> None:
        self._bytes -= self._entries.pop(response_id).size
