"""LiteLLM against a running server: its transcription, chat and responses calls, and the exception class each bad
request raises (for bad audio: BadRequestError, as against OpenAI). Not part of the suite (LiteLLM is large); run it by hand (docs/api.md, Errors):

    .venv/bin/python -m pip install litellm
    .venv/bin/qwen2-audio-server serve --random-weights --port 8765 --api-key sk-local &
    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python scripts/litellm_check.py http://127.0.0.1:8765/v1 sk-local
"""

import asyncio
import base64
import importlib.metadata
import io
import math
import struct
import sys
import wave

import litellm
import openai

BASE, KEY = sys.argv[1], sys.argv[2]
MODEL = "openai/qwen2-audio-random"
ASR = "openai/whisper-1"
OPTIONS = {"api_base": BASE, "api_key": KEY, "num_retries": 0}


def tone(seconds: float = 1.0) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(16_000)
        file.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(int(16_000 * seconds))))
    return out.getvalue()


def named(data: bytes, name: str) -> io.BytesIO:
    file = io.BytesIO(data)
    file.name = name
    return file


def audio_message(data: bytes) -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}},
        {"type": "text", "text": "What is this sound?"}]}]


def works(name: str, call) -> bool:
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 (the check reports whatever LiteLLM raised)
        print(f"FAIL {name}: {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:160]}")
        return False
    print(f"ok   {name}: {str(result)[:100]!s}")
    return True


def raises(name: str, expected: type[Exception], call) -> bool:
    try:
        call()
    except expected as exc:
        print(f"ok   {name}: {type(exc).__name__} (HTTP {getattr(exc, 'status_code', '?')})")
        return True
    except Exception as exc:  # noqa: BLE001
        print(f"FAIL {name}: expected {expected.__name__}, got {type(exc).__name__}: {str(exc)[:160]}")
        return False
    print(f"FAIL {name}: expected {expected.__name__}, nothing raised")
    return False


junk = b"definitely not audio" * 50
checks = [
    works("transcription json", lambda: litellm.transcription(model=ASR, file=named(tone(), "a.wav"), **OPTIONS).text),
    works("transcription verbose_json (LiteLLM's default)", lambda: litellm.transcription(
        model=ASR, file=named(tone(), "a.wav"), response_format="verbose_json", **OPTIONS).text),
    works("chat with audio", lambda: litellm.completion(model=MODEL, messages=audio_message(tone()), max_tokens=4,
                                                         **OPTIONS).choices[0].message.content),
    works("chat streamed", lambda: [c for c in litellm.completion(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True, **OPTIONS)][-1]),
    works("responses create and continue", lambda: litellm.responses(
        model=MODEL, input="And?", max_output_tokens=2, previous_response_id=litellm.responses(
            model=MODEL, input="hi", max_output_tokens=2, **OPTIONS).id, **OPTIONS).status),
    # LiteLLM maps an error to its own class on the async path; its sync transcription passes the SDK's on
    raises("atranscription of undecodable audio", litellm.BadRequestError, lambda: asyncio.run(litellm.atranscription(
        model=ASR, file=named(junk, "a.wav"), **OPTIONS))),
    raises("transcription of undecodable audio", openai.BadRequestError, lambda: litellm.transcription(
        model=ASR, file=named(junk, "a.wav"), **OPTIONS)),
    raises("chat with undecodable audio", litellm.BadRequestError, lambda: litellm.completion(
        model=MODEL, messages=audio_message(junk), max_tokens=4, **OPTIONS)),
    raises("atranscription with an unknown model", litellm.BadRequestError, lambda: asyncio.run(litellm.atranscription(
        model="openai/no-such-model", file=named(tone(), "a.wav"), **OPTIONS))),
    raises("chat with an unknown model", litellm.NotFoundError, lambda: litellm.completion(
        model="openai/no-such-model", messages=[{"role": "user", "content": "hi"}], **OPTIONS)),
    raises("chat with a wrong key", litellm.AuthenticationError, lambda: litellm.completion(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], **{**OPTIONS, "api_key": "wrong"})),
    raises("chat past the context", litellm.BadRequestError, lambda: litellm.completion(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=10_000_000, **OPTIONS)),
    raises("chat with a bad temperature", litellm.BadRequestError, lambda: litellm.completion(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=9, **OPTIONS)),
    raises("responses with an unknown previous_response_id", litellm.BadRequestError, lambda: litellm.responses(
        model=MODEL, input="hi", previous_response_id="resp_0000", **OPTIONS)),
]
print(f"LiteLLM {importlib.metadata.version('litellm')}: {sum(checks)} of {len(checks)} checks pass")
sys.exit(0 if all(checks) else 1)
