"""/openapi.json: a valid OpenAPI 3.1 document that resolves completely, one line of server/api/openapi.py's ERRORS
per route, 405s that name every method of their path, and a Python client generated from it that works.
(That the server answers exactly what it documents: schemathesis, tests/protocol/test_fuzz.py.)"""

import base64
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from server.api.openapi import ERRORS
from tests.support.app import MODEL
from tests.support.audio_samples import wav


@pytest.fixture(scope="module")
async def document(http) -> dict:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_the_document_is_valid_openapi_3_1_and_every_reference_resolves(document):
    validate(document)  # raises on an invalid document
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    refs = set(_refs(document))
    assert refs and all(ref.startswith("#/components/schemas/") for ref in refs), refs
    assert {ref.rsplit("/", 1)[1] for ref in refs} <= set(schemas)
    assert not [name for name in schemas if name not in {ref.rsplit("/", 1)[1] for ref in refs}]  # none unused


def test_every_route_has_its_line_of_error_statuses_and_no_fastapi_422(document):
    # a route without a line fails at import (answers() looks it up); a line without a route fails here
    assert {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item} == set(ERRORS)
    for operation in ERRORS:
        method, path = operation.split(" ")
        responses = document["paths"][path][method.lower()]["responses"]
        assert sorted(int(status) for status in responses) == sorted({200, *ERRORS[operation]}), operation
        for status in ERRORS[operation]:
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (operation, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_streams_plain_text_metrics_and_the_realtime_api_are_described(document):
    paths = document["paths"]
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/chat/completions", "/v1/responses"):
        assert "text/event-stream" in paths[path]["post"]["responses"]["200"]["content"], path
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert "docs/realtime.md" in document["info"]["description"]
    form = paths["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["chunking_strategy"]["anyOf"][1] == {"$ref": "#/components/schemas/ServerVad"}


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PATCH", "/v1/responses/resp_1", "DELETE, GET"),
    ("OPTIONS", "/v1/responses/resp_1", "DELETE, GET"),
    ("PUT", "/v1/chat/completions", "POST"),
    ("POST", "/v1/models", "GET"),
    ("DELETE", "/metrics", "GET"),
])
async def test_a_405_names_every_method_of_its_path(http, method, path, allowed):
    response = await http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_form_takes_chunking_strategy_as_json_as_openapi_encodes_an_object(http):
    strategy = {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 300}
    response = await http.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav(1.0))}, data={
        "model": MODEL, "max_tokens": "4", "chunking_strategy": json.dumps(strategy)})
    assert response.status_code == 200, response.text
    response = await http.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav(1.0))}, data={
        "model": MODEL, "chunking_strategy": json.dumps({"type": "server_vad", "threshold": 2})})
    assert response.status_code == 400 and response.json()["error"]["param"] == "chunking_strategy.threshold"


async def test_a_client_generated_from_the_document_builds_and_talks_to_the_server(app, document, tmp_path):
    """openapi-python-client generates a package without a warning; every module imports, and its calls work."""
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    scripts = Path(sys.executable).parent  # the generator formats its output with ruff, from PATH
    generated = subprocess.run(
        [str(scripts / "openapi-python-client"), "generate", "--path", "openapi.json", "--meta", "none",
         "--output-path", "qwen_client"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert generated.returncode == 0 and "Warning" not in generated.stdout + generated.stderr, generated.stdout
    sys.path.insert(0, str(tmp_path))
    try:
        modules = {path.relative_to(tmp_path).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
                   for path in (tmp_path / "qwen_client").rglob("*.py")}
        imported = {name: importlib.import_module(name) for name in sorted(modules)}
        await _use(imported, app)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.startswith("qwen_client")]:
            del sys.modules[name]


async def _use(modules: dict, app) -> None:
    """The generated calls against the app: list the models, a chat completion with audio, a transcription."""
    api, models, types = (lambda name: modules[f"qwen_client.api.default.{name}"]), modules["qwen_client.models"], \
        modules["qwen_client.types"]
    transport = httpx.ASGITransport(app=app)
    client = modules["qwen_client"].Client(base_url="http://test", raise_on_unexpected_status=True)
    client.set_async_httpx_client(httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120))
    assert MODEL in [card.id for card in (await api("models").asyncio(client=client)).data]
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(1.0)).decode(), "format": "wav"}}
    request = models.ChatCompletionRequest.from_dict({"model": MODEL, "max_tokens": 3, "messages": [
        {"role": "user", "content": [audio, {"type": "text", "text": "What is this?"}]}]})
    chat = await api("chat_completions").asyncio(client=client, body=request)
    assert chat.usage.completion_tokens <= 3 and chat.usage.prompt_tokens_details.audio_tokens > 0
    form = models.TranscriptionsBody(file=types.File(payload=io.BytesIO(wav(1.0)), file_name="a.wav"), model=MODEL,
                                     max_tokens=4)
    transcription = await api("transcriptions").asyncio(client=client, body=form)
    assert transcription.usage.input_token_details.audio_tokens > 0


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from [value] if key == "$ref" else _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
