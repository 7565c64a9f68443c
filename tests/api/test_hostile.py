"""A generated corpus of hostile and odd inputs: each gets a 4xx in OpenAI's shape (or a 200 when it is valid
audio after all), none gets a 5xx, and the server serves a normal request right after."""

import base64
import io
import json
import struct
import wave

import av
import numpy as np
import pytest

from tests.api.conftest import MODEL
from tests.audio_samples import FORMATS, encode, tone, wav

OK, BAD, UNDECODABLE, TOO_LARGE = {200}, {400}, {415}, {413}


def _wav_int(samples: np.ndarray, width: int, rate: int = 16_000) -> bytes:
    """[channels, n] float -> integer PCM WAV of 1, 2, 3 or 4 bytes per sample, any channel count."""
    channels, _ = samples.shape
    scaled = np.clip(samples.T, -1, 1)
    if width == 1:
        raw = ((scaled * 127) + 128).astype(np.uint8).tobytes()
    else:
        ints = (scaled * (2 ** (8 * width - 1) - 1)).astype("<i4")
        raw = ints.reshape(-1, 1).view(np.uint8)[:, :width].tobytes()  # the low bytes of each little-endian int
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels), w.setsampwidth(width), w.setframerate(rate)
        w.writeframes(raw)
    return out.getvalue()


def _wav_header(rate: int = 16_000, bits: int = 16, data: bytes = b"\0" * 3200, claimed: int | None = None) -> bytes:
    """A PCM WAV written byte by byte, so its header can say what the samples are not."""
    block = (bits + 7) // 8
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * block, block, bits)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", claimed or len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _wav_float(samples: np.ndarray, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def _corrupt(data: bytes) -> bytes:
    middle = bytearray(data)
    for i in range(len(middle) // 3, len(middle) // 3 + 64):
        middle[i] ^= 0x5A
    return bytes(middle)


def upload_cases() -> list[tuple[str, bytes, str, set[int]]]:
    rng = np.random.default_rng(7)
    cases: list[tuple[str, bytes, str, set[int]]] = []
    for fmt in sorted(FORMATS):
        good = encode(tone(1.0, seed=3), fmt)
        cases += [
            (f"{fmt}-truncated-header", good[:24], fmt, BAD | UNDECODABLE),
            (f"{fmt}-truncated-half", good[: len(good) // 2], fmt, OK | BAD | UNDECODABLE),
            (f"{fmt}-corrupted", _corrupt(good), fmt, OK | BAD | UNDECODABLE),
            (f"{fmt}-random-bytes", rng.bytes(4096), fmt, UNDECODABLE),
        ]
    cases += [
        ("zero-length", b"", "wav", BAD),
        ("one-sample", _wav_int(np.zeros((1, 1)), 2), "wav", BAD),
        ("header-only-wav", _wav_int(np.zeros((1, 0)), 2), "wav", BAD),
        ("nan-and-inf-samples", _wav_float(np.array([np.nan, np.inf, -np.inf, 0.5] * 4000)), "wav", OK),
        ("float32-wav", _wav_float(tone(1.0)[0]), "wav", OK),
        ("hour-of-silence-flac", encode(np.zeros((1, 16_000 * 3600), np.float32), "flac"), "flac", BAD),
        ("text-file", b"hello, this is not audio\n" * 10, "txt", UNDECODABLE),
        ("png-image", b"\x89PNG\r\n\x1a\n" + rng.bytes(512), "png", UNDECODABLE),
        ("oversized-upload", b"\0" * (9 * 2**20), "wav", TOO_LARGE),
    ]
    cases += [(name, data, "wav", expected) for name, data, expected, _, _ in AUDIO_EDGES]
    cases += [(f"{8 * w}-bit-wav", _wav_int(tone(1.0), w), "wav", OK) for w in (1, 2, 3, 4)]
    cases += [(f"{r}-hz", _wav_int(tone(1.0, rate=r), 2, r), "wav", OK) for r in (8_000, 22_050, 44_100, 96_000, 192_000)]
    cases += [(f"{c}-channels", _wav_int(tone(0.5, channels=c), 2), "wav", OK) for c in range(1, 9)]
    return cases


# What OpenAI refuses, and headers that lie: (name, file, status, error code, words the message must hold)
AUDIO_EDGES = [
    ("0.05-s", _wav_int(tone(0.05), 2), BAD, "audio_too_short", "minimum is 0.1 s"),
    ("1-hz-header", _wav_header(rate=1, data=b"\1" * 200), BAD, "invalid_audio", "1 Hz"),
    ("7-bit-samples", _wav_header(bits=7), UNDECODABLE, "invalid_audio", "7-bit"),
    ("4-gb-claimed-over-100-bytes", _wav_header(data=b"\1" * 100, claimed=0xFFFF_FFF0), BAD, "invalid_audio",
     "claims 4294967280 bytes"),
]

UPLOADS = upload_cases()


@pytest.mark.parametrize(("name", "data", "ext", "allowed"), UPLOADS, ids=[c[0] for c in UPLOADS])
async def test_hostile_uploads(http, name, data, ext, allowed):
    response = await http.post("/v1/audio/transcriptions", data={"model": MODEL, "max_tokens": "4"},
                               files={"file": (f"clip.{ext}", data)})
    assert response.status_code in allowed, (name, response.status_code, response.text[:300])
    if response.status_code != 200:
        _openai_error(response)


@pytest.mark.parametrize(("name", "data", "status", "code", "words"), AUDIO_EDGES, ids=[c[0] for c in AUDIO_EDGES])
async def test_audio_edges_get_the_error_that_names_them_on_every_route(http, name, data, status, code, words):
    upload = await http.post("/v1/audio/transcriptions", data={"model": MODEL}, files={"file": ("a.wav", data)})
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}
    chat = await http.post("/v1/chat/completions", json=_chat([part]))
    for response in (upload, chat):
        assert response.status_code in status, (name, response.text[:300])
        error = response.json()["error"]
        assert error["code"] == code and words in error["message"], error


def _chat(content="hi", **extra) -> dict:
    return {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": content}], **extra}


def _audio(url: str) -> list[dict]:
    return [{"type": "audio_url", "audio_url": {"url": url}}]


OUT_OF_RANGE = [
    ("temperature", -0.1), ("temperature", 2.5), ("top_p", 0), ("top_p", 1.5), ("max_tokens", 0),
    ("max_tokens", -5), ("max_tokens", 10**9), ("max_completion_tokens", 0), ("n", 0), ("n", 129),
    ("presence_penalty", 3), ("frequency_penalty", -2.5), ("top_logprobs", 21), ("seed", 2**70), ("top_k", -2),
    ("min_p", 1.5), ("repetition_penalty", 0), ("repetition_penalty", 11), ("min_tokens", -1),
    ("temperature", "hot"), ("max_tokens", "many"), ("max_tokens", 3.5), ("stream", "maybe"), ("stop", 12), ("logprobs", "yes"),
]

CHAT_CASES = [(f"{field}={value!r}", _chat(**{field: value}), BAD) for field, value in OUT_OF_RANGE] + [
    ("unknown-model", {**_chat(), "model": "gpt-5"}, {404}),
    ("missing-model", {"messages": [{"role": "user", "content": "hi"}]}, BAD),
    ("missing-messages", {"model": MODEL}, BAD),
    ("messages-not-a-list", {"model": MODEL, "messages": "hi"}, BAD),
    ("message-without-role", {"model": MODEL, "messages": [{"content": "hi"}]}, BAD),
    ("content-part-without-type", _chat([{"text": "hi"}]), BAD),
    ("malformed-base64", _chat([{"type": "input_audio", "input_audio": {"data": "!!!", "format": "wav"}}]), BAD),
    ("base64-of-garbage", _chat([{"type": "input_audio", "input_audio": {"data": base64.b64encode(b"x" * 99).decode(),
                                                                         "format": "mp3"}}]), UNDECODABLE),
    ("data-url-without-base64", _chat(_audio("data:audio/wav,abcd")), BAD),
    ("data-url-bad-base64", _chat(_audio("data:audio/wav;base64,@@@")), BAD),
    ("data-url-no-comma", _chat(_audio("data:audio/wav;base64")), BAD),
    ("remote-url-not-allowed", _chat(_audio("http://127.0.0.1:9/a.wav")), BAD),
    ("file-url-not-allowed", _chat(_audio("file:///etc/passwd")), BAD),
    ("ftp-url", _chat(_audio("ftp://example.com/a.wav")), BAD),
    ("audio-in-system-message", {"model": MODEL, "messages": [
        {"role": "system", "content": [{"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(0.5)).decode()}}]},
        {"role": "user", "content": "hi"}]}, BAD),
]


@pytest.mark.parametrize(("name", "body", "allowed"), CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
async def test_hostile_chat_requests(http, name, body, allowed):
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code in allowed, (name, response.status_code, response.text[:300])
    _openai_error(response)


# Valid values at the edges of their ranges: the sampler must take them (200), not fail the batch they join.
EDGE_VALUES = [
    {"temperature": 5e-324}, {"temperature": 1e-45}, {"temperature": 1e-5}, {"temperature": 2.0, "top_p": 1e-300},
    {"temperature": 1.0, "repetition_penalty": 1e-300}, {"temperature": 1e-30, "repetition_penalty": 1e-300},
    {"temperature": 1.0, "min_p": 1.0}, {"temperature": 1.0, "top_k": 10**9}, {"temperature": 2.0, "top_k": 1},
    {"temperature": 1.0, "presence_penalty": -2, "frequency_penalty": 2, "logprobs": True, "top_logprobs": 20},
]


@pytest.mark.parametrize("extra", EDGE_VALUES, ids=[",".join(f"{k}={v}" for k, v in e.items()) for e in EDGE_VALUES])
async def test_sampling_settings_at_the_edges_of_their_ranges_are_served(http, extra):
    response = await http.post("/v1/chat/completions", json=_chat(**{"max_tokens": 6, "seed": 1, **extra}))
    assert response.status_code == 200, (extra, response.text[:300])
    assert response.json()["usage"]["completion_tokens"] >= 1


async def test_a_whole_float_token_count_is_that_many_tokens(http):
    """JSON has one kind of number: 3.0 tokens are 3 (and 3.5 a 400, above). The fuzz test met 6082.0 this way."""
    response = await http.post("/v1/chat/completions", json=_chat(max_tokens=3.0, ignore_eos=True))
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 3


RAW_CASES = [
    ("json-to-transcriptions", "/v1/audio/transcriptions", b'{"model": "tiny"}', "application/json", BAD),
    ("form-to-chat", "/v1/chat/completions", b"model=tiny", "application/x-www-form-urlencoded", BAD),
    ("text-to-chat", "/v1/chat/completions", b"hello", "text/plain", BAD),
    ("truncated-json", "/v1/chat/completions", b'{"model": "tiny", "messages": [', "application/json", BAD),
    ("json-array", "/v1/chat/completions", b"[1, 2, 3]", "application/json", BAD),
    ("deeply-nested-json", "/v1/chat/completions", b"[" * 5000 + b"]" * 5000, "application/json", BAD),
    ("oversized-json", "/v1/chat/completions", json.dumps(_chat("x" * (9 * 2**20))).encode(), "application/json",
     TOO_LARGE),
    ("multipart-without-boundary", "/v1/audio/transcriptions", b"--x\r\n", "multipart/form-data", BAD),
]


@pytest.mark.parametrize(("name", "path", "body", "content_type", "allowed"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
async def test_hostile_bodies(http, name, path, body, content_type, allowed):
    response = await http.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code in allowed, (name, response.status_code, response.text[:300])
    _openai_error(response)


def test_the_corpus_is_big_enough():
    assert len(UPLOADS) + len(CHAT_CASES) + len(RAW_CASES) >= 60


async def test_a_normal_request_right_after(client):
    result = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)))
    assert isinstance(result.text, str)
    reply = await client.chat.completions.create(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content is not None


def _openai_error(response) -> None:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in error["message"] and "/site-packages/" not in error["message"]
