"""Two `serve` processes behind no sticky routing share one real Redis (--response-store): a conversation goes back
and forth between them, each key sees only its own, a delete on one is a delete on both; and a stream whose answer
cannot be kept because Redis went away mid-answer ends with an error event, not a response that is not there."""

import base64

import openai
import pytest
from openai import AsyncOpenAI

from tests.support.app import MODEL
from tests.support.audio_samples import wav
from tests.support.redis_server import RedisServer, requires_redis
from tests.support.servers import output, start

pytestmark = requires_redis
ALICE, BOB = "sk-alice-1", "sk-bob-2"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(tiny_model_dir, redis_server):
    started = [start(tiny_model_dir, "--response-store", redis_server.url, "--api-key", ALICE, "--api-key", BOB,
                     "--max-batch-size", "4") for _ in range(2)]
    yield [base for _, base in started]
    for process, _ in started:
        process.terminate()
        process.wait(timeout=30)
        assert process.returncode == 0, output(process)


def sdk(base: str, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


async def test_a_conversation_goes_back_and_forth_between_replicas(replicas):
    one, two = (sdk(base, ALICE) for base in replicas)
    audio = base64.b64encode(wav(1.0, seed=51)).decode()
    turn = await one.responses.create(model=MODEL, max_output_tokens=3, input=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
        {"type": "input_text", "text": "What is it?"}]}])
    sizes = [turn.usage.input_tokens]
    for hop in range(4):  # two, one, two, one: each turn continues the one the other replica answered
        turn = await (two if hop % 2 == 0 else one).responses.create(
            model=MODEL, input=f"and then {hop}?", previous_response_id=turn.id, max_output_tokens=3)
        sizes.append(turn.usage.input_tokens)
        assert turn.usage.input_tokens_details.audio_tokens == 25  # the first turn's audio, heard on every hop
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)  # each prompt holds the whole conversation
    assert (await one.responses.retrieve(turn.id)).model_dump() == (await two.responses.retrieve(turn.id)).model_dump()
    for replica in replicas:  # Bob, on either replica, finds nothing
        with pytest.raises(openai.NotFoundError):
            await sdk(replica, BOB).responses.retrieve(turn.id)
    await two.responses.delete(turn.id)
    with pytest.raises(openai.NotFoundError):
        await one.responses.retrieve(turn.id)


async def test_a_stream_ends_with_an_error_event_when_its_answer_cannot_be_kept(replicas, redis_server):
    one = sdk(replicas[0], ALICE)
    stream = await one.responses.create(model=MODEL, input="Count slowly.", max_output_tokens=1000, stream=True)
    kinds = []
    try:
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta" and redis_server.process is not None:
                redis_server.stop()  # the store was there when the request began, and is gone when it ends
        assert kinds[-1] == "error" and event.code == "response_store_unavailable"
        assert "response.completed" not in kinds and "response.incomplete" not in kinds
        with pytest.raises(openai.InternalServerError):
            await one.responses.create(model=MODEL, input="hi", max_output_tokens=2)
    finally:
        redis_server.start()
    after = await one.responses.create(model=MODEL, input="hi", max_output_tokens=2)  # back by itself
    assert (await sdk(replicas[1], ALICE).responses.retrieve(after.id)).id == after.id
