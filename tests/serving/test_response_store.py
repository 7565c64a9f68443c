"""Both response stores, memory and a real Redis, hold the same bounds (count, size, age: the oldest go first) and the
same ownership (another owner's response is one that does not exist); Redis's writes are atomic across replicas."""

import asyncio
import json

import pytest
import pytest_asyncio

from server.serving import memory_store
from server.serving.redis_store import PREFIX
from server.serving.response_store import Owner, StoreBounds, StoreUnavailable, encode, open_store
from tests.support.redis_server import RedisServer, client_for, requires_redis
from tests.support.waiting import eventually

ALICE, BOB = Owner("a" * 64), Owner("b" * 64)


@pytest_asyncio.fixture(params=["memory", pytest.param("redis", marks=requires_redis)])
async def make_store(request):
    """Stores of one kind (`make_store.kind`) with the given bounds, each empty (Redis: its database is flushed)."""
    opened = []

    def make(max_entries=100, max_bytes=1 << 20, ttl_s=0.0):
        url = request.getfixturevalue("redis_url") if request.param == "redis" else "memory"
        if url != "memory":
            client_for(url).flushdb()
        opened.append(open_store(url, StoreBounds(max_entries, max_bytes, ttl_s)))
        return opened[-1]

    make.kind = request.param
    yield make
    for store in opened:
        await store.close()


def body(response_id: str, text: str = "x") -> str:
    return encode({"id": response_id, "text": text}, [], [{"role": "user", "content": text}])


async def kept(store, ids, owner=ALICE) -> list[str]:
    return [i for i in ids if await store.get(owner, i) is not None]


async def test_past_its_count_the_oldest_go_first(make_store):
    store = make_store(max_entries=2)
    for response_id in ("a", "b", "c"):
        await store.put(ALICE, response_id, body(response_id))
    assert await kept(store, "abc") == ["b", "c"]
    assert (await store.get(ALICE, "c")).history == [{"role": "user", "content": "x"}]


async def test_past_its_size_the_oldest_go_first_and_one_too_large_is_not_kept(make_store):
    one = len(body("a", "x" * 100).encode())
    store = make_store(max_bytes=2 * one + 10)
    for response_id in ("a", "b", "c"):
        await store.put(ALICE, response_id, body(response_id, "x" * 100))
    assert await kept(store, "abc") == ["b", "c"]
    await store.put(ALICE, "huge", body("huge", "x" * 10 * one))
    assert await kept(store, ["huge", "b", "c"]) == ["b", "c"]  # nothing pushed out for it


async def test_sizes_count_bytes_not_characters(make_store):
    text = "语音" * 50  # three bytes a character in UTF-8
    store = make_store(max_bytes=len(body("a", text).encode()))
    await store.put(ALICE, "a", body("a", text))
    await store.put(ALICE, "b", body("b", text))
    assert await kept(store, "ab") == ["b"]


async def test_a_response_expires_after_its_lifetime(make_store, monkeypatch):
    if make_store.kind == "memory":
        now = [1000.0]
        monkeypatch.setattr(memory_store.time, "monotonic", lambda: now[0])
        store = make_store(ttl_s=60)
        await store.put(ALICE, "old", body("old"))
        now[0] += 30
        await store.put(ALICE, "new", body("new"))
        now[0] += 31
        assert await kept(store, ["old", "new"]) == ["new"]
        now[0] += 30
        assert await kept(store, ["new"]) == []
    else:  # Redis expires the key itself, on its own clock
        store = make_store(ttl_s=0.3)
        await store.put(ALICE, "old", body("old"))
        assert await kept(store, ["old"]) == ["old"]
        assert await eventually(lambda: _gone(store, "old"), timeout=10)


async def _gone(store, response_id) -> bool:
    return await store.get(ALICE, response_id) is None


async def test_another_owner_can_neither_read_nor_delete(make_store):
    store = make_store()
    await store.put(ALICE, "a", body("a"))
    assert await store.get(BOB, "a") is None and not await store.delete(BOB, "a")
    assert await kept(store, "a") == ["a"]  # Bob's delete did nothing
    assert await store.delete(ALICE, "a") and not await store.delete(ALICE, "a") and await kept(store, "a") == []


async def test_zero_entries_keeps_nothing(make_store):
    store = make_store(max_entries=0)
    await store.put(ALICE, "a", body("a"))
    assert await kept(store, "a") == []


@requires_redis
async def test_replicas_writing_at_once_keep_the_bounds_exactly(redis_url):
    """Two stores on one Redis (two replicas) put 200 responses concurrently: the count bound holds exactly, the
    newest are the ones kept, and the byte total is the sum of what is kept."""
    client_for(redis_url).flushdb()
    bounds = StoreBounds(max_entries=50, max_bytes=1 << 30, ttl_s=0)
    replicas = [open_store(redis_url, bounds), open_store(redis_url, bounds)]
    await asyncio.gather(*(replicas[i % 2].put(ALICE, f"r{i:03d}", body(f"r{i:03d}", "y" * i)) for i in range(200)))
    raw = client_for(redis_url)
    ids = sorted(member.decode() for member in raw.zrange(PREFIX + "index", 0, -1))
    assert len(ids) == 50 and len(await kept(replicas[0], [f"r{i:03d}" for i in range(200)])) == 50
    assert int(raw.get(PREFIX + "bytes")) == sum(len(body(i, "y" * int(i[1:])).encode()) for i in ids)
    assert raw.hlen(PREFIX + "sizes") == 50 and len(raw.keys(PREFIX + "r:*")) == 50
    for store in replicas:
        await store.close()


@requires_redis
async def test_a_password_is_sent_and_a_wrong_one_is_unavailable(tmp_path):
    server = RedisServer(tmp_path, password="s3cret-pass").start()
    try:
        good = open_store(server.url, StoreBounds(10, 1 << 20, 0))
        await good.put(ALICE, "a", body("a"))
        assert await kept(good, "a") == ["a"] and await good.problem() is None
        wrong = open_store(server.url.replace("s3cret", "wrong"), StoreBounds(10, 1 << 20, 0))
        with pytest.raises(StoreUnavailable):
            await wrong.get(ALICE, "a")
        assert "unavailable" in await wrong.problem() and "s3cret" not in await wrong.problem()
        await good.close()
        await wrong.close()
    finally:
        server.stop()


def test_stored_json_is_what_was_put():
    stored = json.loads(body("a", "hé"))
    assert stored == {"response": {"id": "a", "text": "hé"}, "input_items": [],
                      "history": [{"role": "user", "content": "hé"}]}


@requires_redis
async def test_tls_with_rediss_and_a_password(tmp_path):
    server = RedisServer(tmp_path, password="s3cret-pass", tls=True).start()
    try:
        store = open_store(server.url, StoreBounds(10, 1 << 20, 0))
        assert server.url.startswith("rediss://") and await store.problem() is None
        await store.put(ALICE, "a", body("a"))
        assert await kept(store, "a") == ["a"] and await store.get(BOB, "a") is None
        await store.close()
    finally:
        server.stop()
