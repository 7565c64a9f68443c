"""A generated corpus of hostile and odd inputs: each gets a 4xx in OpenAI's shape (or a 200 when it is valid
audio after all), none gets a 5xx, and the server serves a normal request right after."""

import base64
import json

import numpy as np
import pytest

from tests.support.app import MODEL
from tests.support.audio_samples import encode, tone, wav
from tests.support.hostile_inputs import AUDIO_EDGES, BAD, TOO_LARGE, UNDECODABLE, assert_openai_error, upload_cases
from tests.support.speech import requires_espeak, speak

UPLOADS = upload_cases()


@pytest.mark.parametrize(("name", "data", "ext", "allowed"), UPLOADS, ids=[c[0] for c in UPLOADS])
async def test_hostile_uploads(http, name, data, ext, allowed):
    response = await http.post("/v1/audio/transcriptions", data={"model": MODEL, "max_tokens": "4"},
                               files={"file": (f"clip.{ext}", data)})
    assert response.status_code in allowed, (name, response.status_code, response.text[:300])
    if response.status_code != 200:
        assert_openai_error(response)


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
    assert_openai_error(response)


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
    assert_openai_error(response)


def test_the_corpus_is_big_enough():
    assert len(UPLOADS) + len(CHAT_CASES) + len(RAW_CASES) + len(DIARIZED_CASES) >= 80


async def test_a_normal_request_right_after(client):
    result = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)))
    assert isinstance(result.text, str)
    reply = await client.chat.completions.create(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content is not None




def _reference(samples) -> str:
    return f"data:audio/wav;base64,{base64.b64encode(encode(samples[None], 'wav')).decode()}"


def _diarized(**fields) -> dict:
    """A diarized_json form: fields as the SDK sends them (a list is `name[]` repeated; None leaves a field out)."""
    form = {"model": MODEL, "response_format": "diarized_json", "chunking_strategy": "auto"}
    for name, value in fields.items():
        form.pop(name, None)
        if value is not None:
            form[f"{name}[]" if isinstance(value, list) else name] = value
    return form


SILENT = _reference(np.zeros(3 * 16_000, np.float32))
# (name, form, param the 400 must name); a reference that is fine in itself but says nothing is refused as it is read
DIARIZED_CASES = [
    ("no-chunking-strategy", _diarized(chunking_strategy=None), "chunking_strategy"),
    ("chunking-strategy-unknown", _diarized(chunking_strategy="sometimes"), "chunking_strategy"),
    ("server-vad-threshold-2", _diarized(chunking_strategy=None) | {"chunking_strategy[type]": "server_vad",
                                                                     "chunking_strategy[threshold]": "2"},
     "chunking_strategy.threshold"),
    ("stream-maybe", _diarized(stream="maybe"), "stream"),
    ("names-without-references", _diarized(known_speaker_names=["ann"]), "known_speaker_references"),
    ("references-without-names", _diarized(known_speaker_references=[SILENT]), "known_speaker_names"),
    ("five-known-speakers", _diarized(known_speaker_names=list("abcde"), known_speaker_references=[SILENT] * 5),
     "known_speaker_names[4]"),
    ("empty-name", _diarized(known_speaker_names=[" "], known_speaker_references=[SILENT]), "known_speaker_names[0]"),
    ("same-name-twice", _diarized(known_speaker_names=["ann", "ann"], known_speaker_references=[SILENT] * 2),
     "known_speaker_names[1]"),
    ("reference-1-s", _diarized(known_speaker_names=["ann"], known_speaker_references=[
        _reference(tone(1.0)[0])]), "known_speaker_references[0]"),
    ("reference-12-s", _diarized(known_speaker_names=["ann"], known_speaker_references=[
        _reference(tone(12.0)[0])]), "known_speaker_references[0]"),
    ("reference-an-hour", _diarized(known_speaker_names=["ann"], known_speaker_references=[
        f"data:audio/flac;base64,{base64.b64encode(encode(np.zeros((1, 16_000 * 3600), np.float32), 'flac')).decode()}"]),
     "known_speaker_references[0]"),
    ("reference-silent", _diarized(known_speaker_names=["ann"], known_speaker_references=[SILENT]),
     "known_speaker_references[0]"),
    ("reference-not-audio", _diarized(known_speaker_names=["ann"], known_speaker_references=[
        "data:audio/wav;base64," + base64.b64encode(b"not audio at all" * 64).decode()]), "known_speaker_references[0]"),
    ("reference-not-a-data-url", _diarized(known_speaker_names=["ann"], known_speaker_references=["https://x/a.wav"]),
     "known_speaker_references[0]"),
    ("reference-bad-base64", _diarized(known_speaker_names=["ann"], known_speaker_references=[
        "data:audio/wav;base64,@@@"]), "known_speaker_references[0]"),
    ("reference-empty", _diarized(known_speaker_names=["ann"], known_speaker_references=["data:audio/wav;base64,"]),
     "known_speaker_references[0]"),
    ("keyword-too-long", _diarized(keywords=["x" * 101]), "keywords[0]"),
    ("language-unknown", _diarized(languages=["en", "klingon"]), "languages[1]"),
    ("language-named-unknown", _diarized(language="xx"), "language"),
]


@pytest.mark.parametrize(("name", "form", "param"), DIARIZED_CASES, ids=[c[0] for c in DIARIZED_CASES])
async def test_a_malformed_diarized_request_is_a_400_naming_its_field(http, name, form, param):
    response = await http.post("/v1/audio/transcriptions", data=form, files={"file": ("a.wav", wav(3.0))})
    assert response.status_code == 400, (name, response.status_code, response.text[:300])
    assert_openai_error(response)
    assert response.json()["error"]["param"] == param, response.json()


@requires_espeak
async def test_a_bad_second_reference_is_named_by_its_index(http):
    speech = _reference(speak("The committee wants to discuss the budget for next year before the end of the week."))
    form = _diarized(known_speaker_names=["ann", "bob"], known_speaker_references=[speech, SILENT])
    response = await http.post("/v1/audio/transcriptions", data=form, files={"file": ("a.wav", wav(3.0))})
    assert response.status_code == 400 and response.json()["error"]["param"] == "known_speaker_references[1]"
    assert "no speech" in response.json()["error"]["message"]


@pytest.mark.parametrize(("name", "data", "ext", "allowed"), UPLOADS[::3], ids=[c[0] for c in UPLOADS[::3]])
async def test_hostile_uploads_diarized(http, name, data, ext, allowed):
    """A share of the upload corpus again, diarized: the same answers (silence and tones are zero segments)."""
    response = await http.post("/v1/audio/transcriptions", data=_diarized(max_tokens="2"),
                               files={"file": (f"clip.{ext}", data)})
    assert response.status_code in allowed, (name, response.status_code, response.text[:300])
    if response.status_code != 200:
        assert_openai_error(response)
