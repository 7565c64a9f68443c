"""For the realtime tests: the app on a real port (WebSockets need one), audio as clients send it, and every server
event checked against the `openai` package's own types, so that drift from OpenAI's schema fails a test."""

import asyncio
import base64
import io
import json
import typing
import wave
from contextlib import asynccontextmanager

import numpy as np
import uvicorn
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest
from openai.types.realtime.realtime_transcription_session_create_request import (
    RealtimeTranscriptionSessionCreateRequest,
)

from server.bench.realtime import pcm24k  # noqa: F401 (the tests stream what the bench streams)
from tests.support.servers import free_port

SERVER_EVENTS = {cls.model_fields["type"].annotation.__args__[0]: cls
                 for cls in typing.get_args(typing.get_args(RealtimeServerEvent)[0])}
SESSIONS = {"realtime": RealtimeSessionCreateRequest, "transcription": RealtimeTranscriptionSessionCreateRequest}


def checked(raw: str | bytes) -> dict:
    """A server event, after checking it is one of the SDK's server events with no field the SDK does not know."""
    body = json.loads(raw)
    cls = SERVER_EVENTS[body["type"]]
    cls.model_validate(body)
    unknown = set(body) - set(cls.model_fields)
    assert not unknown, f"{body['type']} has fields the SDK does not know: {unknown}"
    if "session" in body:
        session = SESSIONS[body["session"]["type"]]
        session.model_validate(body["session"])
        assert not set(body["session"]) - set(session.model_fields) - {"id", "object"}, body["session"]
    return body


@asynccontextmanager
async def listening(app):
    """`app` (its lifespan already entered) served by uvicorn on a free loopback port: its http:// base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task.exception()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def wav24k(pcm: bytes) -> bytes:
    """The same PCM as a WAV file, for /v1/audio/transcriptions."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24_000)
        out.writeframes(pcm)
    return buffer.getvalue()


def chunks(data: bytes, size: int = 4800) -> list[str]:
    """Base64 appends of `size` bytes (4800: 100 ms of audio/pcm)."""
    return [base64.b64encode(data[i : i + size]).decode() for i in range(0, len(data), size)]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16_000), np.float32)
