"""Waiting for a condition in tests without timing assumptions: poll until true or a generous limit."""

import asyncio
import inspect


async def eventually(check, timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Poll `check` (a function, sync or async) until it returns true; False if `timeout` passes first."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result or asyncio.get_running_loop().time() > deadline:
            return bool(result)
        await asyncio.sleep(interval)
