"""GET /v1/models/{model} through the OpenAI SDK: every id the server accepts, and OpenAI's 404 for the rest."""

import openai
import pytest

from tests.support.app import MODEL


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
                                            "serves", "type": "not_found_error", "param": "model",
                                 "code": "model_not_found"}
    raw = await http.get("/v1/models/no/such/model")
    assert raw.status_code == 404 and raw.json()["error"]["code"] == "model_not_found"
