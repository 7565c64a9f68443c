"""The response store in Redis or Valkey (`--response-store redis://HOST:PORT/DB`), shared by every replica behind a
load balancer, through redis-py's asyncio client.

Each response is a hash (its owner and its body) whose key expires with the TTL; an index (a sorted set by the time
Redis stored it), a size per id and a byte total carry the count and size bounds. A put or a delete is one Lua
script, so replicas writing at once never see half a change. Every key shares one hash tag, so a script's keys sit in
one slot. While Redis is unreachable each call raises StoreUnavailable at once; redis-py reconnects on the next call,
so the store comes back by itself.
"""

import logging
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from server.serving.response_store import Owner, ResponseStore, StoreBounds, StoredResponse, StoreUnavailable, decode

logger = logging.getLogger(__name__)

PREFIX = "qwen2-audio:{responses}:"
TIMEOUT_S = 2.0  # a store that does not answer within this fails the request (503) instead of holding it

_COMMON = """
local index, sizes, total, prefix = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local function drop(id)
  redis.call('DECRBY', total, tonumber(redis.call('HGET', sizes, id) or '0'))
  redis.call('HDEL', sizes, id)
  redis.call('ZREM', index, id)
  redis.call('DEL', prefix .. id)
end
"""

# ARGV: prefix, id, owner, body, size, max entries, max bytes, TTL in ms (0: none)
_PUT = _COMMON + """
local id, size = ARGV[2], tonumber(ARGV[5])
local max_entries, max_bytes, ttl_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])  -- microseconds: exact in a double
if ttl_ms > 0 then
  local expired = redis.call('ZRANGEBYSCORE', index, '-inf', string.format('%.0f', now - ttl_ms * 1000))
  for _, old in ipairs(expired) do drop(old) end
end
if redis.call('ZSCORE', index, id) then drop(id) end
redis.call('HSET', prefix .. id, 'owner', ARGV[3], 'body', ARGV[4])
if ttl_ms > 0 then redis.call('PEXPIRE', prefix .. id, ttl_ms) end
redis.call('ZADD', index, string.format('%.0f', now), id)
redis.call('HSET', sizes, id, size)
redis.call('INCRBY', total, size)
while redis.call('ZCARD', index) > max_entries or tonumber(redis.call('GET', total)) > max_bytes do
  local oldest = redis.call('ZRANGE', index, 0, 0)[1]
  if not oldest then redis.call('SET', total, 0) break end
  drop(oldest)
end
"""

# ARGV: prefix, id, owner
_DELETE = _COMMON + """
if redis.call('HGET', ARGV[1] .. ARGV[2], 'owner') ~= ARGV[3] then return 0 end
drop(ARGV[2])
return 1
"""


class RedisResponseStore(ResponseStore):
    shared = True

    def __init__(self, url: str, bounds: StoreBounds) -> None:
        self.bounds = bounds
        self.where = _without_password(url)
        # one quick retry for a connection that went stale; a store that is down fails the call at once
        self.client = redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                                     retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1), health_check_interval=30)
        self._keys = [PREFIX + "index", PREFIX + "sizes", PREFIX + "bytes"]
        self._put = self.client.register_script(_PUT)
        self._delete = self.client.register_script(_DELETE)
        self._down: str | None = None

    async def put(self, owner: Owner, response_id: str, body: str) -> None:
        size = len(body.encode())
        if not self.bounds.keeps(size):
            return
        ttl_ms = int(self.bounds.ttl_s * 1000)
        await self._call(self._put(keys=self._keys, args=[
            PREFIX + "r:", response_id, owner, body, size, self.bounds.max_entries, self.bounds.max_bytes, ttl_ms]))

    async def get(self, owner: Owner, response_id: str) -> StoredResponse | None:
        stored_owner, body = await self._call(self.client.hmget(PREFIX + "r:" + response_id, ["owner", "body"]))
        return decode(body) if body is not None and stored_owner == owner.encode() else None

    async def delete(self, owner: Owner, response_id: str) -> bool:
        return bool(await self._call(self._delete(keys=self._keys, args=[PREFIX + "r:", response_id, owner])))

    async def problem(self) -> str | None:
        try:
            await self._call(self.client.ping())
        except StoreUnavailable as exc:
            return str(exc)
        return None

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, command):
        try:
            result = await command
        except RedisError as exc:  # unreachable, timed out, refused the password, loading, read-only...
            reason = f"{type(exc).__name__}: {exc}"
            if self._down is None:
                logger.error("the response store %s is unavailable: %s", self.where, reason)
            self._down = reason
            raise StoreUnavailable(f"the response store (Redis) is unavailable: {type(exc).__name__}") from exc
        if self._down is not None:
            logger.warning("the response store %s is back", self.where)
            self._down = None
        return result


def _without_password(url: str) -> str:
    """The URL as logs may show it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
