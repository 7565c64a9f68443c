"""The base checkpoint (Qwen/Qwen2-Audio-7B): transcriptions and translations with the official evaluation's task
prompts and no chat template, the language the model names reported, and chat refused with a clear 400."""


import openai
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer, Qwen2AudioForConditionalGeneration

from server.audio.decode import decode_audio
from server.runner.loader import LoadConfig, load_model
from server.tiny_model import write_tiny_model
from tests.support.app import MODEL, sdk_for
from tests.support.audio_samples import wav
from tests.support.scripted import scripted

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> str:
    return str(write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-base", layout="base"))


@pytest.fixture(scope="module")
def base_model(base_dir):
    return load_model(LoadConfig(base_dir))


def test_the_prompt_format_follows_the_checkpoint(base_model, base_dir, tiny_model_dir):
    assert base_model.info.prompt_format == "base"
    assert load_model(LoadConfig(tiny_model_dir)).info.prompt_format == "chat"  # it ships a chat template
    assert load_model(LoadConfig(base_dir, prompt_format="chat")).info.prompt_format == "chat"


@pytest.mark.parametrize(("task", "options", "prompt"), [
    ("transcribe", {"language": "en"}, "Detect the language and recognize the speech: <|en|>"),
    ("transcribe", {}, "Detect the language and recognize the speech:"),
    ("translate", {"extra_body": {"language": "de"}},
     "Detect the language and translate the speech into English: <|de|>"),
    ("translate", {"extra_body": {"target_language": "fr"}},
     "Detect the language and translate the speech into French:"),
])
async def test_the_official_evaluation_prompts_with_no_chat_template(base_model, base_dir, task, options, prompt):
    model = scripted(base_model, base_dir, lambda p, n: "Hello there.")
    async with sdk_for(base_dir, model) as (client, _):
        create = client.audio.transcriptions.create if task == "transcribe" else client.audio.translations.create
        await create(model=MODEL, file=("a.wav", wav(1.0, seed=1)), **options)
    text = AutoTokenizer.from_pretrained(base_dir).decode(model.runner.prompts[-1].token_ids)
    audio = "<|AUDIO|>" * 25  # one second of audio
    assert text == f"<|audio_bos|>{audio}<|audio_eos|>{prompt}"  # nothing else: no system turn, no role


async def test_the_language_the_model_names_is_reported_and_its_tag_is_not(base_model, base_dir):
    model = scripted(base_model, base_dir, lambda p, n: "<|de|>Guten Morgen zusammen.")
    async with sdk_for(base_dir, model) as (client, _):
        named = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0, seed=2)),
                                                         response_format="verbose_json")
        asked = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0, seed=2)),
                                                         response_format="verbose_json", language="de")
        text = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0, seed=2)))
    assert named.language == "german" and named.text == "Guten Morgen zusammen."
    assert asked.language == "german" and text.text == "Guten Morgen zusammen."


async def test_chat_needs_the_instruct_checkpoint(base_model, base_dir):
    async with sdk_for(base_dir, base_model) as (client, _):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_supported" and "Instruct" in caught.value.body["message"]


async def test_a_base_transcription_is_what_generate_makes_of_the_raw_prompt(base_model, base_dir):
    """Through the real runner: greedy tokens equal model.generate on the same raw prompt (float32)."""
    audio = wav(2.0, seed=3)
    async with sdk_for(base_dir, base_model) as (client, _):
        result = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio), language="en",
                                                          response_format="verbose_json")
    processor = AutoProcessor.from_pretrained(base_dir)
    reference = Qwen2AudioForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32).eval()
    inputs = processor(text=f"{MARKER}Detect the language and recognize the speech: <|en|>",
                       audio=[decode_audio(audio)], sampling_rate=16_000, return_tensors="pt")
    [segment] = result.segments
    with torch.inference_mode():
        out = reference.generate(**inputs, do_sample=False, max_new_tokens=len(segment.tokens))
    assert out[0, inputs["input_ids"].shape[1]:].tolist()[: len(segment.tokens)] == segment.tokens
