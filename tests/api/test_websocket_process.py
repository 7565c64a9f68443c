"""The realtime API in a real `serve` process: uvicorn's own WebSocket support, the key, and log lines that carry
each session's id."""

import re

import pytest
from openai import AsyncOpenAI

from tests.support.app import MODEL
from tests.support.realtime_client import checked, chunks, pcm24k
from tests.support.servers import output, start
from tests.support.speech import SENTENCES, requires_espeak, speak

KEY = "live-secret"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    process, base = start(tiny_model_dir, "--api-key", KEY, "--log-level", "info")
    yield base, process
    process.terminate()
    process.wait(timeout=30)


@requires_espeak
async def test_a_session_in_the_served_process_and_its_log_lines(server):
    base, process = server
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    async with client.realtime.connect(model=MODEL, extra_query={"intent": "transcription"}) as connection:
        session_id = checked(await connection.recv_bytes())["session"]["id"]
        await connection.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        for piece in chunks(pcm24k(speak(SENTENCES[0]))):
            await connection.input_audio_buffer.append(audio=piece)
        await connection.input_audio_buffer.commit()
        while (event := checked(await connection.recv_bytes()))["type"] != "conversation.item.done":
            assert event["type"] != "error", event
    assert session_id.startswith("sess_")
    log = output(process)
    lines = [line for line in log.splitlines() if f"[{session_id}]" in line]
    assert any("realtime transcription session opened" in line for line in lines), log
    assert any(re.search(r"turn item_\w+: [\d.]+ s of audio committed by the client", line) for line in lines), log
