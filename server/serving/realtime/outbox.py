"""Server events on their way to one client: a bounded queue and the task that writes it to the socket.

The engine and the session's turns only ever put events here, never wait on the socket, so a slow client cannot
stall them; a client that falls `size` events behind is disconnected (close code 4003) rather than let its events
pile up in memory.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable

EventSink = Callable[[dict], None]  # how a session's parts send a server event: put it in the outbox, never wait


class Outbox:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue(size)
        self.overflowed = asyncio.Event()

    def put(self, event: dict) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()

    async def run(self, send_text: Callable[[str], Awaitable[None]]) -> None:
        while True:
            event = await self.queue.get()
            await send_text(json.dumps(event, ensure_ascii=False))
            self.queue.task_done()

    async def drained(self, sender: asyncio.Task, timeout_s: float) -> None:
        """Wait (a little) for what is queued to be written before the socket closes; not if the `sender` (the
        task running `run`) has stopped: then the client is gone."""
        joined = asyncio.create_task(self.queue.join())
        await asyncio.wait({joined, sender}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        joined.cancel()
