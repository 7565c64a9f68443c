"""Stored responses (`store: true`): what GET /v1/responses/{id}, its input items and `previous_response_id` read.

One interface, two backends with the same bounds and the same ownership: `memory_store.py` (this process's memory; a
restart forgets, replicas do not share) and `redis_store.py` (Redis or Valkey, shared by every replica behind a load
balancer). A response belongs to whoever made it: any other caller is told, on every route, exactly what it would be
told for an id that never existed.
"""

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NewType

Owner = NewType("Owner", str)
"""Who made a response: a digest of the caller's API key (never the key), computed once at the edge."""

EVERYONE = Owner("open")
"""The one owner of every response when the server takes no API keys."""


@dataclass(frozen=True)
class StoredResponse:
    response: dict  # the response object as it was answered
    input_items: list[dict]  # this request's input, as message items with ids
    history: list[dict]  # the conversation up to and including this answer, as chat messages (instructions excluded)


@dataclass(frozen=True)
class StoreBounds:
    """Oldest first out past `max_entries` or `max_bytes`; gone after `ttl_s` (0: no age limit)."""

    max_entries: int
    max_bytes: int
    ttl_s: float

    def keeps(self, size: int) -> bool:
        """Whether one response of `size` bytes may be kept at all (one larger than the whole store is not)."""
        return self.max_entries > 0 and size <= self.max_bytes


class StoreUnavailable(Exception):
    """The store cannot be reached or did not answer; what was asked of it did not happen."""


class ResponseStore(ABC):
    """Where stored responses live. Each method is atomic; `get` and `delete` see only `owner`'s responses."""

    shared = False  # whether every replica sees the same store

    @abstractmethod
    async def put(self, owner: Owner, response_id: str, body: str) -> None:
        """Keep `body` (from `encode`) for `owner`, pushing out the oldest past the bounds."""

    @abstractmethod
    async def get(self, owner: Owner, response_id: str) -> StoredResponse | None:
        """The response if `owner` made it and it is still kept; None otherwise, whoever else made it."""

    @abstractmethod
    async def delete(self, owner: Owner, response_id: str) -> bool:
        """Drop the response if `owner` made it; whether it did."""

    async def problem(self) -> str | None:
        """What keeps the store from working right now (for /ready), or None."""
        return None

    async def close(self) -> None:  # noqa: B027 (a store without connections has nothing to do)
        """Let go of connections at shutdown."""


def encode(response: dict, input_items: list[dict], history: list[dict]) -> str:
    """A stored response as both backends keep it; its length is what it counts against the byte bound."""
    return json.dumps({"response": response, "input_items": input_items, "history": history}, ensure_ascii=False)


def decode(body: str | bytes) -> StoredResponse:
    return StoredResponse(**json.loads(body))


def open_store(url: str, bounds: StoreBounds) -> ResponseStore:
    """The store `--response-store` names: `memory`, or a redis:// / rediss:// / unix:// URL."""
    if url == "memory":
        from server.serving.memory_store import MemoryResponseStore

        return MemoryResponseStore(bounds)
    from server.serving.redis_store import RedisResponseStore  # redis-py is imported only for a Redis store

    return RedisResponseStore(url, bounds)
