"""Bad input gets a clear 4xx in OpenAI's error shape, and the server keeps serving."""

import base64

import openai
import pytest

from tests.support.app import MODEL
from tests.support.audio_samples import wav


def _assert_openai_error(response, status: int, param: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def _chat(content, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def _audio_url(url: str) -> list[dict]:
    return [{"type": "audio_url", "audio_url": {"url": url}}, {"type": "text", "text": "?"}]


UPLOAD_CASES = [
    ({"model": MODEL}, ("a.wav", b"definitely not audio"), 400, "file"),
    ({"model": MODEL}, ("a.mp3", bytes(range(256)) * 16), 400, "file"),
    ({"model": MODEL}, ("a.wav", b""), 400, "file"),
    ({"model": "no-such-model"}, ("a.wav", wav(1.0)), 400, "model"),  # OpenAI: 400 here, 404 on chat
    ({}, ("a.wav", wav(1.0)), 400, "model"),
    ({"model": MODEL, "response_format": "xml"}, ("a.wav", wav(1.0)), 400, "response_format"),
    ({"model": MODEL, "temperature": "3"}, ("a.wav", wav(1.0)), 400, "temperature"),
    ({"model": MODEL, "temperature": "warm"}, ("a.wav", wav(1.0)), 400, "temperature"),
    ({"model": MODEL, "language": "xx-klingon"}, ("a.wav", wav(1.0)), 400, "language"),
    ({"model": MODEL, "response_format": "verbose_json", "timestamp_granularities[]": "word"}, ("a.wav", wav(1.0)), 400, None),
    ({"model": MODEL, "timestamp_granularities[]": "segment"}, ("a.wav", wav(1.0)), 400, None),
]


@pytest.mark.parametrize(("fields", "file", "status", "param"), UPLOAD_CASES)
async def test_bad_uploads(http, fields, file, status, param):
    response = await http.post("/v1/audio/transcriptions", data=fields, files={"file": file})
    _assert_openai_error(response, status, param)


async def test_missing_file(http):
    _assert_openai_error(await http.post("/v1/audio/transcriptions", data={"model": MODEL}), 400, "file")


CHAT_CASES = [
    (_chat("hi", n=129), 400),
    (_chat("hi", modalities=["text", "audio"]), 400),
    (_chat("hi", audio={"voice": "alloy", "format": "wav"}), 400),
    (_chat("hi", temperature=3), 400),
    (_chat("hi", top_p=0), 400),
    (_chat("hi", max_tokens=0), 400),
    (_chat("hi", max_tokens=100_000), 400),
    (_chat("hi", top_logprobs=50, logprobs=True), 400),
    (_chat("hi", tools=[{"type": "function", "function": {"name": "f"}}]), 400),
    (_chat("hi", response_format={"type": "json_schema"}), 400),
    (_chat("hi", stop=["a", "b", "c", "d", "e"]), 400),
    (_chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]), 400),
    (_chat([{"type": "input_audio", "input_audio": {"data": "%%% not base64 %%%", "format": "wav"}}]), 400),
    (_chat([{"type": "input_audio", "input_audio": {"data": base64.b64encode(b"junk").decode(), "format": "wav"}}]), 400),
    (_chat([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]), 400),
    (_chat(_audio_url("https://example.com/a.wav")), 400),
    (_chat(_audio_url("file:///etc/passwd")), 400),
    (_chat(_audio_url("data:audio/wav,notbase64")), 400),
    ({"model": MODEL, "messages": []}, 400),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, 400),
    ({"model": MODEL, "messages": [{"role": "system", "content": "only a system prompt"}]}, 400),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404),
]


@pytest.mark.parametrize(("body", "status"), CHAT_CASES)
async def test_bad_chat_requests(http, body, status):
    _assert_openai_error(await http.post("/v1/chat/completions", json=body), status)


async def test_malformed_json_is_400_not_422(http):
    response = await http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    _assert_openai_error(response, 400)


async def test_unknown_route_is_404_in_openai_shape(http):
    error = _assert_openai_error(await http.get("/v1/nothing-here"), 404)
    assert (error["message"], error["type"]) == ("Invalid URL (GET /v1/nothing-here)", "invalid_request_error")


async def test_oversized_body_is_413(http):
    response = await http.post("/v1/audio/transcriptions", data={"model": MODEL},
                               files={"file": ("big.wav", b"\0" * (9 * 2**20))})
    _assert_openai_error(response, 413)


async def test_sdk_raises_typed_errors_and_the_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], n=9)
    assert "at most 8 samples" in bad.value.message and bad.value.body["param"] == "n"  # the tests' --max-batch-size
    with pytest.raises(openai.BadRequestError):  # OpenAI's audio routes answer an unknown model 400
        await client.audio.transcriptions.create(model="nope", file=("a.wav", wav(1.0)))
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as undecodable:
        await client.audio.transcriptions.create(model=MODEL, file=("a.wav", b"garbage"))
    assert undecodable.value.body["param"] == "file" and undecodable.value.body["type"] == "invalid_request_error"
    ok = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)))
    assert isinstance(ok.text, str)


MESSAGES = [
    (_chat([{"type": "text", "text": "a"}, {"type": "foo"}]), "messages[0].content[1]",
     "messages[0].content[1]: unknown content part type 'foo'; expected one of text, input_audio, audio_url, file"),
    (_chat([{"text": "a"}]), "messages[0].content[0]", "messages[0].content[0]: needs a 'type' field that says what it is"),
    (_chat([{"type": "input_audio"}]), "messages[0].content[0].input_audio",
     "messages[0].content[0].input_audio: this field is required"),
    (_chat(5), "messages[0].content", "messages[0].content: expected a string or a list, got the number 5"),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role",
     "messages[0].role: 'tool' is not accepted; expected 'system', 'developer', 'user' or 'assistant'"),
    ({"model": MODEL, "messages": "hi"}, "messages", "messages: expected a list, got the string 'hi'"),
    (_chat("hi", temperature="warm"), "temperature", "temperature: expected a number, got the string 'warm'"),
    (_chat("hi", stop=["a", "b", "c", "d", "e"]), "stop", "stop: at most 4 stop sequences"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model", "model: this field is required"),
]


@pytest.mark.parametrize(("body", "param", "message"), MESSAGES)
async def test_schema_errors_name_the_field_and_what_it_accepts(http, body, param, message):
    error = _assert_openai_error(await http.post("/v1/chat/completions", json=body), 400, param)
    assert error["message"] == message


async def test_upload_form_errors_name_the_field_too(http):
    response = await http.post("/v1/audio/transcriptions", data={"model": MODEL, "temperature": "warm"},
                               files={"file": ("a.wav", wav(1.0))})
    error = _assert_openai_error(response, 400, "temperature")
    assert error["message"] == "temperature: expected a number, got the string 'warm'"


JUNK = base64.b64encode(b"definitely not audio" * 20).decode()
UNDECODABLE = [
    ("/v1/audio/transcriptions", None, "file"),
    ("/v1/audio/translations", None, "file"),
    ("/v1/chat/completions", _chat([{"type": "text", "text": "?"}, {
        "type": "input_audio", "input_audio": {"data": JUNK, "format": "wav"}}]), "messages[0].content[1]"),
    ("/v1/chat/completions", _chat(_audio_url(f"data:audio/wav;base64,{JUNK}")), "messages[0].content[0]"),
    ("/v1/chat/completions", _chat([{"type": "file", "file": {"file_data": f"data:audio/mpeg;base64,{JUNK}"}}]),
     "messages[0].content[0]"),
    ("/v1/responses", {"model": MODEL, "input": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": JUNK, "format": "mp3"}}]}]}, "input[0].content[0]"),
    ("/v1/responses", {"model": MODEL, "input": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [
        {"type": "input_text", "text": "?"}, {"type": "input_file", "file_data": f"data:audio/wav;base64,{JUNK}"}]}]},
     "input[1].content[1]"),
]


@pytest.mark.parametrize(("path", "body", "param"), UNDECODABLE)
async def test_undecodable_audio_is_400_naming_the_input_on_every_route(http, path, body, param):
    """As OpenAI answers it (not 415, which the SDKs raise as a bare APIStatusError): the SDK's BadRequestError."""
    if body is None:
        response = await http.post(path, data={"model": MODEL}, files={"file": ("a.wav", b"definitely not audio")})
    else:
        response = await http.post(path, json=body)
    error = _assert_openai_error(response, 400, param)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_audio")
    assert "wav, mp3, flac" in error["message"]
