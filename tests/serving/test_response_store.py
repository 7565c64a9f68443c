"""The responses store keeps what it may, by count, by size and by age, and drops the oldest first."""

import json

from server.serving import response_store
from server.serving.response_store import ResponseStore


def put(store: ResponseStore, response_id: str, text: str = "x") -> None:
    store.put({"id": response_id, "text": text}, [], [{"role": "user", "content": text}])


def test_past_its_count_the_oldest_go_first():
    store = ResponseStore(max_entries=2, max_bytes=1 << 20, ttl_s=0)
    for response_id in ("a", "b", "c"):
        put(store, response_id)
    assert store.get("a") is None and [store.get(i).response["id"] for i in ("b", "c")] == ["b", "c"]


def test_past_its_size_the_oldest_go_first_and_one_too_large_is_not_kept():
    one = len(json.dumps([{"id": "a", "text": "x" * 100}, [], [{"role": "user", "content": "x" * 100}]]))
    store = ResponseStore(max_entries=100, max_bytes=2 * one + 10, ttl_s=0)
    for response_id in ("a", "b", "c"):
        put(store, response_id, "x" * 100)
    assert store.get("a") is None and len(store) == 2
    put(store, "huge", "x" * 10 * one)
    assert store.get("huge") is None and len(store) == 2  # nothing pushed out for it


def test_a_response_expires_after_its_lifetime(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(response_store.time, "monotonic", lambda: now[0])
    store = ResponseStore(max_entries=10, max_bytes=1 << 20, ttl_s=60)
    put(store, "old")
    now[0] += 30
    put(store, "new")
    now[0] += 31
    assert store.get("old") is None and store.get("new") is not None
    now[0] += 30
    assert store.get("new") is None and len(store) == 0


def test_delete_says_whether_it_held_the_response():
    store = ResponseStore(max_entries=10, max_bytes=1 << 20, ttl_s=0)
    put(store, "a")
    assert store.delete("a") and not store.delete("a") and store.get("a") is None


def test_zero_entries_keeps_nothing():
    store = ResponseStore(max_entries=0, max_bytes=1 << 20, ttl_s=0)
    put(store, "a")
    assert store.get("a") is None
