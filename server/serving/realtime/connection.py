"""GET /v1/realtime: one WebSocket session from the first event to the close, within the server's limits.

The route hands over three plain callables (receive a message, send text, close), so this layer knows nothing of
the web framework. Every log line of a session carries its id, as a request's carry the request id.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from server.protocol.realtime import error_event
from server.request_context import request_id
from server.serving.realtime.outbox import Outbox
from server.serving.realtime.refusals import (
    CLOSE_CLIENT_TOO_SLOW,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_SERVER_ERROR,
    CLOSE_SESSION_EXPIRED,
    CLOSE_TRY_AGAIN_LATER,
    Close,
)
from server.serving.realtime.services import RealtimeLimits, Services
from server.serving.realtime.session import RealtimeSession

logger = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict]]
SendText = Callable[[str], Awaitable[None]]
CloseSocket = Callable[[int, str], Awaitable[None]]
DRAIN_S = 2.0  # how long a closing session waits for its last events (the error saying why) to be written


class RealtimeServing:
    def __init__(self, services: Services, limits: RealtimeLimits, model_id: str, accepted_models: frozenset[str]) -> None:
        self.services = services
        self.limits = limits
        self.model_id = model_id  # what every session reports, whichever accepted id it was opened with
        self.accepted_models = accepted_models
        self.metrics = services.metrics
        self.open = 0

    async def serve(self, receive: Receive, send_text: SendText, close: CloseSocket, intent: str | None,
                    model: str | None) -> None:
        outbox = Outbox(self.limits.send_queue)
        sender = asyncio.create_task(outbox.run(send_text))
        try:
            code, reason = await self._session(receive, outbox, sender, intent, model)
        except Close as exc:  # refused before the session began
            outbox.put(exc.event(None))
            code, reason = exc.close_code, exc.code or ""
        if code != CLOSE_CLIENT_TOO_SLOW:
            await outbox.drained(sender, DRAIN_S)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        try:
            await close(code, reason)
        except Exception:  # the client is already gone
            pass

    async def _session(self, receive: Receive, outbox: Outbox, sender: asyncio.Task, intent: str | None,
                       model: str | None) -> tuple[int, str]:
        if model is not None and model not in self.accepted_models:
            raise Close(CLOSE_POLICY, f"the model {model!r} does not exist; GET /v1/models lists what this server "
                        "serves", "model_not_found")
        if self.open >= self.limits.max_sessions:
            raise Close(CLOSE_TRY_AGAIN_LATER, f"the server already has {self.open} realtime sessions open, its limit "
                        "(--realtime-max-sessions); try again later", "too_many_sessions", "rate_limit_error")
        session_type: Literal["realtime", "transcription"] = "transcription" if intent == "transcription" else "realtime"
        session = RealtimeSession(self.services, self.limits, session_type, self.model_id, outbox.put)
        token = request_id.set(session.id)
        self.open += 1
        self.metrics.realtime_sessions.inc()
        logger.info("realtime %s session opened", session_type)
        try:
            outbox.put(session.created())
            return await self._run(session, receive, outbox, sender)
        finally:
            await session.close()
            self.open -= 1
            self.metrics.realtime_sessions.dec()
            logger.info("realtime session closed")
            request_id.reset(token)

    async def _run(self, session: RealtimeSession, receive: Receive, outbox: Outbox,
                   sender: asyncio.Task) -> tuple[int, str]:
        reader = asyncio.create_task(self._read(session, receive))
        overflow = asyncio.create_task(outbox.overflowed.wait())
        try:
            done, _ = await asyncio.wait({reader, overflow, sender}, timeout=self.limits.max_session_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            overflow.cancel()
            await asyncio.gather(reader, overflow, return_exceptions=True)
        if not done:
            limit = self.limits.max_session_s
            outbox.put(error_event(f"the session reached the server's limit of {limit:g} s "
                                   "(--realtime-max-session-s)", code="session_expired"))
            return CLOSE_SESSION_EXPIRED, "session_expired"
        if overflow in done:
            logger.warning("the client fell %d events behind; disconnecting it", self.limits.send_queue)
            return CLOSE_CLIENT_TOO_SLOW, "client_too_slow"
        if sender in done:  # the socket failed under the sender: the client is gone
            return CLOSE_NORMAL, ""
        try:
            reader.result()
        except Close as exc:
            outbox.put(exc.event(None))
            return exc.close_code, exc.code or ""
        except Exception:
            logger.exception("the realtime session failed")
            outbox.put(error_event(f"internal server error (session {session.id})", "server_error", "server_error"))
            return CLOSE_SERVER_ERROR, "server_error"
        return CLOSE_NORMAL, ""

    async def _read(self, session: RealtimeSession, receive: Receive) -> None:
        """Client messages until it disconnects; binary frames are refused (events are JSON text)."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await session.receive(message["text"])
            else:
                session.emit(error_event("binary frames are not accepted: send each event as JSON text, with audio "
                                         "base64-encoded in input_audio_buffer.append", code="invalid_frame"))
