"""A fine-tune's layout: the published weights' files with a chat template of its own (chat_template.jinja, here
the no-system template evaluation harnesses install). The server renders every request through that template."""

import base64
import shutil

import pytest
from transformers import AutoTokenizer

from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL, sdk_for
from tests.support.audio_samples import wav
from tests.support.checkpoint import NO_SYSTEM_CHAT_TEMPLATE
from tests.support.scripted import scripted

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too


@pytest.fixture(scope="module")
def finetune_dir(tiny_model_dir, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("models") / "tiny-finetune"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.json").unlink()
    (folder / "chat_template.jinja").write_text(NO_SYSTEM_CHAT_TEMPLATE)
    return str(folder)


async def test_requests_go_through_the_fine_tunes_own_template(finetune_dir):
    model = scripted(load_model(LoadConfig(finetune_dir)), finetune_dir, lambda prompt, n: "Fine.")
    clip = base64.b64encode(wav(1.0, seed=1)).decode()
    async with sdk_for(finetune_dir, model) as (client, _):
        await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(2.0, seed=2)))
        await client.chat.completions.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}},
            {"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}},
            {"type": "text", "text": "Same?"}]}])
    tokenizer = AutoTokenizer.from_pretrained(finetune_dir)
    transcription, chat = (tokenizer.decode(p.token_ids) for p in model.runner.prompts[-2:])
    assert transcription.startswith("<|im_start|>user\nAudio 1: <|audio_bos|>")  # no system turn: its template
    assert transcription.count("<|AUDIO|>") == 50 and "You are a helpful assistant" not in transcription
    assert chat.count("<|audio_bos|>") == 2 and chat.count("<|AUDIO|>") == 50 and "Audio 2:" in chat


async def test_the_real_runner_serves_it(finetune_dir):
    async with sdk_for(finetune_dir, load_model(LoadConfig(finetune_dir))) as (client, _):
        result = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.5, seed=3)),
                                                          response_format="verbose_json")
        reply = await client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0, messages=[
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {
                "data": base64.b64encode(wav(1.0, seed=4)).decode(), "format": "wav"}},
                {"type": "text", "text": "?"}]}])
    assert result.segments and reply.usage.prompt_tokens_details.audio_tokens == 25
