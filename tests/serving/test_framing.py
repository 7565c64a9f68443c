"""Transcripts and translations without the Instruct model's frame, in every format, streamed, on long audio.

The model's answers are scripted (tests/scripted.py) with the frames the published checkpoint is seen to put
around them (server/serving/framing.py lists the sources); everything around the runner is the real pipeline,
driven through the OpenAI SDK.
"""

import json

import pytest
import srt
import webvtt
from openai import AsyncOpenAI
from transformers import AutoTokenizer

from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL, sdk_for
from tests.support.audio_samples import encode, wav
from tests.support.scripted import scripted
from tests.support.speech import requires_espeak, speech_track

WORDS = "Mister Quiller is the apostle of the middle classes."
FRAMED = f"The original content of this audio is: '{WORDS}'"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def answering(loaded, tiny_model_dir):
    def serve(answer):
        model = scripted(loaded, tiny_model_dir, answer if callable(answer) else lambda prompt, n: answer)
        return sdk_for(tiny_model_dir, model, max_batch_size=4)
    return serve


async def transcribe(client: AsyncOpenAI, audio: bytes, **options):
    return await client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio), **options)


async def test_every_format_gets_the_words_without_the_frame(answering):
    audio = wav(2.0, seed=1)
    async with answering(FRAMED) as (client, _):
        assert (await transcribe(client, audio)).text == WORDS
        assert (await transcribe(client, audio, response_format="text")).strip() == WORDS
        verbose = await transcribe(client, audio, response_format="verbose_json")
        assert verbose.text == WORDS and [s.text for s in verbose.segments] == [WORDS]
        assert [cue.content for cue in srt.parse(await transcribe(client, audio, response_format="srt"))] == [WORDS]
        vtt = webvtt.from_buffer(__import__("io").StringIO(await transcribe(client, audio, response_format="vtt")))
        assert [cue.text for cue in vtt] == [WORDS]
        translation = await client.audio.translations.create(model=MODEL, file=("a.wav", audio))
        assert translation.text == WORDS


async def test_a_stream_holds_back_only_until_the_frame_is_ruled_in_or_out(answering):
    audio = wav(2.0, seed=2)
    for answer, expected in [(FRAMED, WORDS), ("The audio system failed at noon.", "The audio system failed at noon.")]:
        async with answering(answer) as (client, _):
            stream = await transcribe(client, audio, stream=True)
            events = [event async for event in stream]
        deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
        assert "".join(deltas) == expected and events[-1].text == expected
        assert len(deltas) > 5, "text still streams token by token once the frame is ruled in or out"
        assert not any("original content" in d or d.startswith("'") for d in deltas)


@pytest.mark.parametrize(("answer", "expected", "options"), [
    ("The original content of this audio is:'yet these thoughts affected Hester less.'",
     "yet these thoughts affected Hester less.", {}),
    ("The speech transcribed verbatim is: the law of beauty.", "the law of beauty.", {}),
    ("这段音频的原始内容是:'今天天气很好，我们去公园散步吧。'", "今天天气很好，我们去公园散步吧。", {"language": "zh"}),
    ("这段音频的原始内容是：'语音识别和翻译'", "语音识别和翻译", {}),
    ("English: The budget meeting is at ten.", "The budget meeting is at ten.", {"language": "en"}),
    ("English is spoken here.", "English is spoken here.", {"language": "en"}),
    ("'Hello,' she said.", "'Hello,' she said.", {}),
    ("quarterly budget office meeting. We moved it.", "We moved it.", {"prompt": "Quarterly budget, office meeting"}),
])
async def test_each_known_frame_comes_off_and_nothing_else_does(answering, answer, expected, options):
    async with answering(answer) as (client, _):
        assert (await transcribe(client, wav(1.0, seed=3), **options)).text == expected


async def test_a_translation_loses_its_frame(answering):
    async with answering('The French translation is: "Tout le monde veut être apprécié."') as (client, _):
        result = await client.audio.translations.create(model=MODEL, file=("a.wav", wav(1.5, seed=4)),
                                                        extra_body={"target_language": "fr"})
    assert result.text == "Tout le monde veut être apprécié."


async def test_tokens_and_logprobs_hold_the_words_returned_and_usage_counts_every_token(answering, tokenizer):
    """A token whose text lies wholly in the frame leaves `tokens` and `logprobs` with it; usage still counts
    what the model generated."""
    audio = wav(2.0, seed=5)
    async with answering(FRAMED) as (client, http):
        verbose = await transcribe(client, audio, response_format="verbose_json")
        response = await http.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                                   data={"model": MODEL, "include[]": "logprobs"})
    body = response.json()
    assert body["text"] == WORDS
    assert bytes(b for lp in body["logprobs"] for b in lp["bytes"]).decode() == WORDS
    [segment] = verbose.segments
    assert tokenizer.decode(segment.tokens, skip_special_tokens=True) == WORDS
    generated = len(tokenizer.encode(FRAMED, add_special_tokens=False)) + 1  # and the end id
    assert body["usage"]["output_tokens"] == generated > len(body["logprobs"])


@requires_espeak
async def test_long_audio_every_clip_loses_its_frame_in_every_format(answering):
    samples, _ = speech_track(75.0, seed=6)
    audio = encode(samples[None], "wav")
    said = [f"Sentence number {n} of the meeting." for n in range(10)]
    async with answering(lambda prompt, n: f"The original content of this audio is: '{said[n]}'") as (client, _):
        verbose = await transcribe(client, audio, response_format="verbose_json")
        clips = len(verbose.segments)
        assert clips == 3 and [s.text for s in verbose.segments] == said[:clips]
        assert verbose.text == " ".join(said[:clips])
    for response_format in ("srt", "vtt"):
        async with answering(lambda prompt, n: f"The original content of this audio is: '{said[n]}'") as (client, _):
            subtitles = await transcribe(client, audio, response_format=response_format)
        assert "original content" not in subtitles and all(s in subtitles for s in said[:clips])
    async with answering(lambda prompt, n: f"The original content of this audio is: '{said[n]}'") as (client, _):
        events = [e async for e in await transcribe(client, audio, stream=True)]
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta") == " ".join(said[:clips])


async def test_chat_answers_keep_what_the_model_said(answering):
    async with answering(FRAMED) as (client, _):
        reply = await client.chat.completions.create(model=MODEL, max_tokens=100, messages=[
            {"role": "user", "content": "What does the person say?"}])
    assert reply.choices[0].message.content == FRAMED


def test_the_scripted_answers_are_what_the_tokenizer_round_trips(tokenizer):
    for text in (FRAMED, "这段音频的原始内容是:'今天天气很好，我们去公园散步吧。'", json.dumps("Tout le monde")):
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
