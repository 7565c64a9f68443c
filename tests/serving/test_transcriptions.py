"""POST /v1/audio/transcriptions and /translations through the OpenAI SDK: every format, streaming, long audio."""

import json

import numpy as np
import pytest
import srt
import webvtt

from server.audio.decode import decode_audio
from server.engine.conversation import audio_question
from server.protocol.audio import TranscriptionRequest
from server.serving.prompts import instruction
from tests.support.app import MODEL, metric
from tests.support.audio_samples import encode, tone, wav
from tests.support.speech import requires_espeak, speech_track


def _transcribe_conversation(text: str) -> list[dict]:
    return audio_question(text)


async def test_json_matches_generate_and_reports_usage(client, reference):
    audio = wav(2.0, seed=3)
    result = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio, "audio/wav"))
    prompt = instruction(TranscriptionRequest(model=MODEL), "transcribe")
    expected, n_tokens = reference(_transcribe_conversation(prompt), [decode_audio(audio)], 64)
    assert result.text == expected
    usage = result.usage
    assert usage.output_tokens == n_tokens
    assert usage.input_token_details.audio_tokens == 50  # 25 per second
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_text_srt_vtt_are_plain_bodies(client, http):
    audio = wav(3.0, seed=4)
    text = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio), response_format="text")
    assert isinstance(text, str) and text
    subtitles = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio), response_format="srt")
    cues = list(srt.parse(subtitles))
    assert len(cues) == 1 and cues[0].start.total_seconds() == 0 and cues[0].end.total_seconds() == 3.0
    vtt = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio), response_format="vtt")
    captions = webvtt.from_string(vtt)
    assert [c.start for c in captions] == ["00:00:00.000"] and captions[0].end == "00:00:03.000"
    raw = await http.post("/v1/audio/transcriptions", data={"model": MODEL, "response_format": "vtt"},
                          files={"file": ("a.wav", audio)})
    assert raw.headers["content-type"].startswith("text/vtt") and raw.text.startswith("WEBVTT\n\n")


async def test_verbose_json_segments(client):
    audio = wav(4.0, seed=5)
    result = await client.audio.transcriptions.create(
        model=MODEL, file=("a.flac", encode(tone(4.0, seed=5), "flac")), response_format="verbose_json",
        timestamp_granularities=["segment"], language="de",
    )
    assert result.task == "transcribe" and result.language == "german"
    assert abs(result.duration - 4.0) < 0.05
    [segment] = result.segments
    assert segment.start == 0 and abs(segment.end - 4.0) < 0.05 and segment.text == result.text
    assert segment.avg_logprob < 0 and segment.tokens
    assert audio  # same clip as wav: both containers decode


@requires_espeak
async def test_long_audio_is_cut_at_pauses_into_timed_segments_not_truncated(client, reference):
    samples, utterances = speech_track(75.0, seed=6)
    audio = encode(samples[None], "wav")
    result = await client.audio.transcriptions.create(model=MODEL, file=("long.wav", audio), response_format="verbose_json")
    assert len(result.segments) == 3 and result.usage.seconds == result.duration == round(samples.shape[0] / 16_000, 3)
    assert result.text == " ".join(s.text for s in result.segments if s.text)
    for segment in result.segments:
        assert not any(start < t < end for t in (segment.start, segment.end) for start, end in utterances)
    assert result.segments[0].start > 0.2 and result.segments[-1].end < result.duration, "timed by the speech"
    # each piece is exactly a request of its own: the model hears the audio between the segment's times
    conversation = _transcribe_conversation(instruction(TranscriptionRequest(model=MODEL), "transcribe"))
    second = result.segments[1]
    clip = decode_audio(audio)[round(second.start * 16_000) : round(second.end * 16_000)]
    expected, _ = reference(conversation, [clip], len(second.tokens))
    assert second.text == expected
    tokens = await client.audio.transcriptions.create(model=MODEL, file=("long.wav", audio))
    assert tokens.text == result.text


@requires_espeak
async def test_streaming_deltas_add_up_to_the_non_streamed_text(client, http):
    audio = encode(speech_track(40.0, seed=7)[0][None], "wav")  # two pieces: the stream crosses a piece boundary
    full = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio))
    stream = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio), stream=True)
    deltas, done = [], None
    async for event in stream:
        if event.type == "transcript.text.delta":
            deltas.append(event.delta)
        elif event.type == "transcript.text.done":
            done = event
    assert len(deltas) > 2
    assert "".join(deltas) == done.text == full.text  # so no delta split a character into replacement marks
    assert done.usage.output_tokens == full.usage.output_tokens
    raw = await http.post("/v1/audio/transcriptions", data={"model": MODEL, "stream": "true"}, files={"file": ("a.wav", wav(1.0))})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in raw.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["type"] == "transcript.text.done"


@pytest.mark.parametrize("fmt", ["verbose_json", "srt", "vtt"])
async def test_stream_with_a_format_that_cannot_stream_is_answered_whole(http, fmt):
    """As OpenAI ignores `stream` for such a format (LiteLLM sends stream=true with verbose_json for whisper-1)."""
    form = {"model": "whisper-1", "response_format": fmt}
    whole = await http.post("/v1/audio/transcriptions", data=form, files={"file": ("a.wav", wav(1.0, seed=9))})
    streamed = await http.post("/v1/audio/transcriptions", data={**form, "stream": "true"},
                               files={"file": ("a.wav", wav(1.0, seed=9))})
    assert streamed.status_code == whole.status_code == 200
    assert streamed.headers["content-type"] == whole.headers["content-type"]
    assert not streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text == whole.text


async def test_translation_is_its_own_task(client, reference):
    audio = wav(2.0, seed=8)
    result = await client.audio.translations.create(model=MODEL, file=("a.mp3", encode(tone(2.0, seed=8), "mp3")),
                                                    response_format="verbose_json")
    assert result.task == "translate" and result.language == "english"
    prompt = instruction(TranscriptionRequest(model=MODEL), "translate")
    assert "into English" in prompt
    text = await client.audio.translations.create(model=MODEL, file=("a.wav", audio))
    expected, _ = reference(_transcribe_conversation(prompt), [decode_audio(audio)], 64)
    assert text.text == expected


async def test_translation_target_language_extension(http):
    response = await http.post("/v1/audio/translations", data={"model": MODEL, "target_language": "fr"},
                               files={"file": ("a.wav", wav(1.0))})
    assert response.status_code == 200 and "text" in response.json()
    bad = await http.post("/v1/audio/translations", data={"model": MODEL, "target_language": "klingon"},
                          files={"file": ("a.wav", wav(1.0))})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "target_language"


async def test_every_container_is_accepted(client):
    for fmt in ["wav", "mp3", "flac", "ogg", "m4a", "webm", "mp4"]:
        result = await client.audio.transcriptions.create(model=MODEL, file=(f"a.{fmt}", encode(tone(1.0, seed=9), fmt)))
        assert isinstance(result.text, str)


async def test_audio_seconds_are_counted(client, http):
    before = await metric(http, "qwen2_audio_audio_seconds_total")
    await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav(2.0)))
    assert abs(await metric(http, "qwen2_audio_audio_seconds_total") - before - 2.0) < 1e-6
    assert np.isfinite(await metric(http, "qwen2_audio_time_to_first_token_seconds_count"))
