"""A stored response belongs to the API key that made it, on both stores: another key's read, input items,
continuation and delete (streamed or not) are answered exactly as for an id that never existed, and its owner keeps
everything. Without keys every caller is one owner. Through the OpenAI SDK, one client per key."""

import base64

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from server.app import create_app
from server.config import Settings
from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL
from tests.support.audio_samples import wav
from tests.support.redis_server import client_for

ALICE, BOB = "sk-alice-1", "sk-bob-2"
NEVER = "resp_0000000000000000000000000000000"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture(params=["memory", "redis"])
async def clients(request, tiny_model_dir, loaded):
    """An app on the given store taking both keys, and an SDK client for each key."""
    store = "memory"
    if request.param == "redis":
        store = request.getfixturevalue("redis_url")
        client_for(store).flushdb()
    settings = Settings(model=tiny_model_dir, served_model_name=MODEL, api_key=[ALICE, BOB], response_store=store)
    app = create_app(settings, loaded)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120) as http:
            yield [AsyncOpenAI(base_url="http://test/v1", api_key=key, http_client=http, max_retries=0)
                   for key in (ALICE, BOB)]


def audio_turn() -> list[dict]:
    audio = base64.b64encode(wav(1.0, seed=41)).decode()
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
                                         {"type": "input_text", "text": "What is this sound?"}]}]


async def refusal(call, response_id: str, error=openai.NotFoundError) -> dict:
    """The error body a call about `response_id` gets, with the id taken out (so two ids' answers compare)."""
    with pytest.raises(error) as caught:
        await call(response_id)
    assert caught.value.status_code == (404 if error is openai.NotFoundError else 400)
    return {**caught.value.body, "message": caught.value.body["message"].replace(response_id, "ID")}


@pytest.mark.parametrize("stream", [False, True])
async def test_another_key_is_told_what_a_missing_id_is_told_on_every_route(clients, stream):
    alice, bob = clients
    if stream:
        events = await alice.responses.create(model=MODEL, input=audio_turn(), max_output_tokens=4, stream=True)
        mine = [event async for event in events][-1].response.id  # response.completed, or .incomplete
    else:
        mine = (await alice.responses.create(model=MODEL, input=audio_turn(), max_output_tokens=4)).id

    def follow_up(client):
        return lambda rid: client.responses.create(model=MODEL, input="And?", previous_response_id=rid,
                                                   max_output_tokens=2)

    routes = [(lambda c: c.responses.retrieve, openai.NotFoundError),
              (lambda c: c.responses.input_items.list, openai.NotFoundError),
              (follow_up, openai.BadRequestError),
              (lambda c: c.responses.delete, openai.NotFoundError)]
    for route, error in routes:
        assert await refusal(route(bob), mine, error) == await refusal(route(bob), NEVER, error)
    # Alice's response is whole: Bob's delete took nothing away
    assert (await alice.responses.retrieve(mine)).id == mine
    items = [item async for item in alice.responses.input_items.list(mine)]
    assert [part.type for part in items[0].content] == ["input_audio", "input_text"]
    later = await alice.responses.create(model=MODEL, input="And?", previous_response_id=mine, max_output_tokens=2)
    assert later.usage.input_tokens_details.audio_tokens == 25  # the first turn's audio is in the prompt
    await alice.responses.delete(mine)
    assert await refusal(alice.responses.retrieve, mine) == await refusal(alice.responses.retrieve, NEVER)


async def test_bob_continues_his_own_conversation_beside_alices(clients):
    alice, bob = clients
    hers = await alice.responses.create(model=MODEL, input="Alice's question", max_output_tokens=2)
    his = await bob.responses.create(model=MODEL, input="Bob's question", max_output_tokens=2)
    his_next = await bob.responses.create(model=MODEL, input="and?", previous_response_id=his.id, max_output_tokens=2)
    assert (await bob.responses.retrieve(his_next.id)).previous_response_id == his.id
    with pytest.raises(openai.NotFoundError):
        await bob.responses.retrieve(hers.id)


async def test_without_keys_every_caller_is_one_owner(tiny_model_dir, loaded):
    app = create_app(Settings(model=tiny_model_dir, served_model_name=MODEL), loaded)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            one, two = [AsyncOpenAI(base_url="http://test/v1", api_key=key, http_client=http, max_retries=0)
                        for key in ("anything", "something-else")]
            made = await one.responses.create(model=MODEL, input="hi", max_output_tokens=2)
            assert (await two.responses.retrieve(made.id)).id == made.id
            await two.responses.delete(made.id)


async def test_the_store_holds_a_digest_never_the_key(redis_url, tiny_model_dir, loaded):
    raw = client_for(redis_url)
    raw.flushdb()
    settings = Settings(model=tiny_model_dir, served_model_name=MODEL, api_key=[ALICE], response_store=redis_url)
    app = create_app(settings, loaded)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            sdk = AsyncOpenAI(base_url="http://test/v1", api_key=ALICE, http_client=http, max_retries=0)
            await sdk.responses.create(model=MODEL, input="hi", max_output_tokens=2)
    dump = b"".join(raw.dump(key) or b"" for key in raw.keys("*"))
    assert dump and ALICE.encode() not in dump
