"""`keywords` and `languages` (OpenAI's gpt-transcribe fields) become hints in the Instruct model's instruction, and
the spoken language is detected by the model itself: one short generation constrained to the candidates' names.

Random weights answer at random, so the answers are scripted (tests/support/scripted.py) where the text matters, and
the mechanism is checked: the prompt built, the constraint applied, the field filled. On the real (random) model the
constraint alone must keep the answer among the candidates."""

import openai
import pytest
from transformers import AutoTokenizer

from server.runner.loader import LoadConfig, load_model
from server.serving.language_detection import DETECT_SECONDS, QUESTION
from tests.support.app import MODEL, sdk_for
from tests.support.audio_samples import wav
from tests.support.scripted import scripted

pytestmark = pytest.mark.transformers


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture(scope="module")
def decode(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return lambda prompt: tokenizer.decode(prompt.token_ids)


@pytest.fixture
def answering(loaded, tiny_model_dir):
    """An app whose model transcribes "Guten Morgen." and, asked which language it hears, answers `detected`."""
    def serve(detected: str = "German"):
        model = scripted(loaded, tiny_model_dir, lambda prompt, n: "Guten Morgen.", lambda prompt: detected)
        return model, sdk_for(tiny_model_dir, model)
    return serve


async def test_keywords_and_languages_are_hints_in_the_instruction(answering, decode):
    model, serving = answering()
    async with serving as (client, _):
        await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)), keywords=["Qwen2-Audio", "LiteLLM"],
                                                 languages=["de", "en", "fr"], prompt="A talk about servers.")
        await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)), language="en",
                                                 languages=["de", "fr"])
    hinted, named = (decode(p) for p in model.runner.prompts)
    assert ("Reply with the transcript only. The speech is in German, English or French. Words and phrases that may "
            "occur in it: Qwen2-Audio, LiteLLM. Context and spellings to follow: A talk about servers.") in hinted
    assert "The speech is in English." in named and "German" not in named  # `language` wins over `languages`


async def test_verbose_json_names_the_language_the_model_detects(answering, decode):
    model, serving = answering("German")
    async with serving as (client, _):
        verbose = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(14.0)),
                                                           response_format="verbose_json")
    assert verbose.language == "german" and verbose.text == "Guten Morgen."
    [(prompt, params)] = model.runner.constrained
    assert QUESTION in decode(prompt) and prompt.audio_seconds == DETECT_SECONDS  # the first seconds only
    assert params.grammar is not None and params.greedy and params.max_tokens <= 16


async def test_json_and_streams_list_the_detected_language_when_languages_ask(answering):
    model, serving = answering("French")
    async with serving as (client, _):
        body = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)), languages=["en", "fr"])
        stream = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)), languages=["en", "fr"],
                                                          stream=True)
        done = [event async for event in stream][-1]
        plain = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)))
    assert [lang.code for lang in body.languages] == ["fr"] and [lang.code for lang in done.languages] == ["fr"]
    assert plain.languages is None  # not asked: not detected
    assert len(model.runner.constrained) == 2


async def test_one_candidate_or_a_named_language_needs_no_generation(answering):
    model, serving = answering()
    async with serving as (client, _):
        one = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)), languages=["ja"],
                                                       response_format="verbose_json")
        named = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)), language="es",
                                                         response_format="verbose_json")
    assert (one.language, named.language) == ("japanese", "spanish") and not model.runner.constrained


async def test_an_answer_outside_the_languages_is_no_language(answering):
    """A model that strays (here scripted; a grammar prevents it for real) leaves the language unknown."""
    _, serving = answering("Klingon")
    async with serving as (client, _):
        verbose = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)),
                                                           response_format="verbose_json")
        body = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)), languages=["en", "de"])
    assert verbose.language == "unknown" and body.languages == []


async def test_the_constraint_keeps_a_random_model_among_the_candidates(client):
    for seed in range(3):
        verbose = await client.audio.transcriptions.create(
            model=MODEL, file=("a.wav", wav(2.0, seed=seed)), response_format="verbose_json", languages=["fr", "de", "sv"],
            extra_body={"max_tokens": 2})
        assert verbose.language in {"french", "german", "swedish"}
    body = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(2.0)), languages=["ko", "vi"],
                                                    extra_body={"max_tokens": 2})
    assert [lang.code for lang in body.languages] in (["ko"], ["vi"])


@pytest.mark.parametrize(("fields", "param"), [
    ({"languages": ["en", "xx"]}, "languages[1]"),
    ({"keywords": ["fine", "x" * 101]}, "keywords[1]"),
    ({"keywords": ["  "]}, "keywords[0]"),
    ({"languages": ["en"] * 21}, "languages"),
])
async def test_a_bad_hint_is_a_400_naming_it(client, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(1.0)), **fields)
    assert caught.value.body["param"] == param, caught.value.body
