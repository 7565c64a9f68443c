"""Hostile and odd requests to /v1/responses and its stored-response routes: each a 4xx in OpenAI's shape that
names the field, never a 5xx, and the server answers a normal request right after."""

import base64

import pytest

from tests.support.app import MODEL
from tests.support.hostile_inputs import AUDIO_EDGES, assert_openai_error


def _response(**fields) -> dict:
    return {"model": MODEL, "input": "hi", "max_output_tokens": 4, **fields}


def _user(*parts) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


CASES = [
    ("input-missing", {"model": MODEL}, 400, "input"),
    ("input-a-number", _response(input=5), 400, "input"),
    ("input-null", _response(input=None), 400, "input"),
    ("input-empty-list", _response(input=[]), 400, "input"),
    ("input-list-of-strings", _response(input=["hi"]), 400, "input[0]"),
    ("item-without-role", _response(input=[{"content": "hi"}]), 400, "input[0].role"),
    ("item-role-tool", _response(input=[{"role": "tool", "content": "hi"}]), 400, "input[0].role"),
    ("only-a-system-message", _response(input=[{"role": "system", "content": "be brief"}]), 400, "input"),
    ("part-without-type", _response(input=_user({"text": "hi"})), 400, "input[0].content[0]"),
    ("input-audio-bad-base64", _response(input=_user({"type": "input_audio", "input_audio": {"data": "!!!"}})), 400,
     "input[0].content[0]"),
    ("input-audio-garbage", _response(input=_user({"type": "input_audio", "input_audio": {
        "data": base64.b64encode(b"x" * 99).decode(), "format": "mp3"}})), 400, "input[0].content[0]"),
    ("input-file-empty", _response(input=_user({"type": "input_file"})), 400, "input[0].content[0]"),
    ("input-file-url-not-allowed", _response(input=_user({"type": "input_file", "file_url": "file:///etc/passwd"})),
     400, "input[0].content[0]"),
    ("text-format-unknown", _response(text={"format": {"type": "xml"}}), 400, "text.format.type"),
    ("text-not-an-object", _response(text="json"), 400, "text"),
    ("max-output-tokens-zero", _response(max_output_tokens=0), 400, "max_output_tokens"),
    ("top-p-zero", _response(top_p=0), 400, "top_p"),
    ("store-maybe", _response(store="maybe"), 400, "store"),
    ("stream-maybe", _response(stream="maybe"), 400, "stream"),
    ("metadata-not-strings", _response(metadata={"a": {"b": 1}}), 400, "metadata.a"),
    ("previous-id-a-number", _response(previous_response_id=7), 400, "previous_response_id"),
    ("previous-id-unknown", _response(previous_response_id="resp_nope"), 400, "previous_response_id"),
    ("tool-choice-required", _response(tool_choice="required"), 400, "tools"),
]


@pytest.mark.parametrize(("name", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_responses_requests(http, name, body, status, param):
    response = await http.post("/v1/responses", json=body)
    assert response.status_code == status, (name, response.text[:300])
    assert_openai_error(response)
    assert response.json()["error"]["param"] == param, response.json()


@pytest.mark.parametrize(("name", "data", "status", "code", "words"), AUDIO_EDGES, ids=[c[0] for c in AUDIO_EDGES])
async def test_audio_edges_get_the_error_that_names_them(http, name, data, status, code, words):
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}
    response = await http.post("/v1/responses", json=_response(input=_user(part)))
    assert response.status_code in status, (name, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"] and error["param"] == "input[0].content[0]", error


STORED_ROUTES = [
    ("GET", "/v1/responses/resp_nope", 404), ("DELETE", "/v1/responses/resp_nope", 404),
    ("GET", "/v1/responses/resp_nope/input_items", 404), ("GET", "/v1/responses/x/input_items?limit=0", 400),
    ("GET", "/v1/responses/x/input_items?limit=many", 400), ("GET", "/v1/responses/x/input_items?order=up", 400),
]


@pytest.mark.parametrize(("method", "path", "status"), STORED_ROUTES)
async def test_stored_response_routes_refuse_clearly(http, method, path, status):
    response = await http.request(method, path)
    assert response.status_code == status, response.text
    assert_openai_error(response)


async def test_a_normal_request_right_after(client):
    reply = await client.responses.create(model=MODEL, input="hi", max_output_tokens=3)
    assert reply.usage.output_tokens >= 1
