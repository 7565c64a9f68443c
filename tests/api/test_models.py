"""GET /v1/models/{model} through the OpenAI SDK: every id the server accepts, and OpenAI's 404 for the rest; no
answer names the model's local folder."""

import json

import openai
import pytest
from websockets.asyncio.client import connect

from server.app import create_app
from server.config import Settings
from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL
from tests.support.realtime_client import listening

ALIASES = Settings.model_fields["model_alias"].default  # whisper-1, gpt-4o-transcribe-diarize


async def test_retrieve_each_listed_model(client):
    listed = (await client.models.list()).data
    assert [m.id for m in listed] == [MODEL, "whisper-1", "gpt-4o-transcribe-diarize"]
    for card in listed:
        fetched = await client.models.retrieve(card.id)
        assert fetched.model_dump() == card.model_dump()


async def test_retrieve_by_the_model_folder_too(client, settings):
    """The folder path is accepted as a model id (with its slashes), so it can be retrieved as well."""
    fetched = await client.models.retrieve(settings.model_path)
    assert fetched.id == settings.model_path and fetched.object == "model"


async def test_an_unknown_model_is_404_in_openai_shape(client, http):
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-4o")
    assert caught.value.body == {"message": "the model 'gpt-4o' does not exist; GET /v1/models lists what this server "
                                            "serves", "type": "invalid_request_error", "param": "model",
                                 "code": "model_not_found"}
    raw = await http.get("/v1/models/no/such/model")
    assert raw.status_code == 404 and raw.json()["error"]["code"] == "model_not_found"


async def test_no_answer_shows_the_model_folder(tiny_model_dir):
    """Served from a local folder without --served-model-name: the id is the folder's name, and neither /v1/models,
    the answers, nor a realtime session (opened with the folder as its model) carry the server's path."""
    folder = tiny_model_dir.rstrip("/")
    app = create_app(Settings(model=folder), load_model(LoadConfig(folder)))
    async with app.router.lifespan_context(app), listening(app) as base:
        sdk = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="-", max_retries=0)
        name = folder.rsplit("/", 1)[1]
        listed = (await sdk.models.list()).data
        chat = await sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        by_path = await sdk.chat.completions.create(model=folder, messages=[{"role": "user", "content": "hi"}],
                                                    max_tokens=2)  # the folder is still accepted as the model
        response = await sdk.responses.create(model=name, input="hi", max_output_tokens=2)
        answers = [card.model_dump() for card in listed] + [chat.model_dump(), by_path.model_dump(),
                                                             response.model_dump()]
        async with connect(base.replace("http", "ws") + f"/v1/realtime?model={folder}") as ws:
            created = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "model": folder}}))
            updated = json.loads(await ws.recv())
    assert [card.id for card in listed] == [name, *ALIASES] and listed[0].model_extra["root"] == name
    assert created["session"]["model"] == updated["session"]["model"] == name == chat.model == by_path.model
    assert folder not in json.dumps(answers + [created, updated]) and response.model == name
