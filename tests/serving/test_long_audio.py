"""Hours of real speech (espeak-ng) through a real server process and the OpenAI SDK: segments cut at pauses, timed
where the speech is, subtitles a standard parser reads, streaming that starts long before the end, flat memory."""

import asyncio
import time

import httpx
import psutil
import pytest
import srt
import webvtt
from openai import AsyncOpenAI

from tests.support.app import MODEL
from tests.support.audio_samples import encode
from tests.support.servers import process_metric
from tests.support.servers import start as start_server
from tests.support.speech import flac, requires_espeak, speech_track

pytestmark = requires_espeak

FORMATS = ["mp3", "ogg", "m4a", "flac"]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    process, base = start_server(tiny_model_dir, "--max-batch-size", "16", "--max-upload-mb", "256")
    yield base, process.pid
    process.terminate()
    process.communicate(timeout=30)


@pytest.fixture
async def sdk(server):
    async with AsyncOpenAI(base_url=f"{server[0]}/v1", api_key="none", max_retries=0, timeout=900) as client:
        yield client


@pytest.fixture(scope="module")
def minutes():
    """Four minutes of sentences with pauses of 0.7-2.5 s, and where each utterance really is."""
    return speech_track(240.0, seed=3)


def _assert_pause_aligned(segments, utterances, duration, tolerance=0.08):
    """In order, no overlap, each fits the encoder, boundaries in pauses, every utterance inside one segment."""
    bounds = [(s.start, s.end) for s in segments]
    assert all(a[1] <= b[0] for a, b in zip(bounds, bounds[1:])), bounds
    assert all(0 < end - start <= 30.0 for start, end in bounds)
    for t in (t for bound in bounds for t in bound):
        assert not any(start + tolerance < t < end - tolerance for start, end in utterances), f"{t} cuts speech"
    for start, end in utterances:
        assert any(a - tolerance <= start and end <= b + tolerance for a, b in bounds), f"{start}-{end} missed"
    assert bounds[-1][1] <= duration + 0.01


@pytest.mark.parametrize("fmt", FORMATS)
async def test_verbose_json_segments_are_pause_aligned_in_every_format(sdk, minutes, fmt):
    samples, utterances = minutes
    result = await sdk.audio.transcriptions.create(
        model=MODEL, file=(f"talk.{fmt}", encode(samples[None], fmt)), response_format="verbose_json",
        timestamp_granularities=["segment"], extra_body={"max_tokens": 4},
    )
    assert abs(result.duration - samples.shape[0] / 16_000) < 0.1  # the real duration, not a window count
    assert 8 <= len(result.segments) <= 12  # ~240 s in pieces of up to 30 s
    _assert_pause_aligned(result.segments, utterances, result.duration)
    assert all(0 <= s.no_speech_prob < 0.1 for s in result.segments)
    assert result.text == " ".join(s.text for s in result.segments if s.text)


async def test_srt_and_vtt_cues_follow_the_segments(sdk, minutes):
    samples, _ = minutes
    audio = encode(samples[None], "flac")
    kwargs = dict(model=MODEL, file=("talk.flac", audio), extra_body={"max_tokens": 4})
    verbose = await sdk.audio.transcriptions.create(response_format="verbose_json", **kwargs)
    subtitles = await sdk.audio.transcriptions.create(response_format="srt", **kwargs)
    captions = await sdk.audio.transcriptions.create(response_format="vtt", **kwargs)
    expected = [(round(s.start, 3), round(s.end, 3)) for s in verbose.segments if s.text.strip()]  # no text, no cue
    assert expected, "the random model said something in some segment"
    assert [(c.start.total_seconds(), c.end.total_seconds()) for c in srt.parse(subtitles)] == expected
    assert [(c.start, c.end) for c in webvtt.from_string(captions)] == [(_vtt(a), _vtt(b)) for a, b in expected]


def _vtt(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


async def test_server_vad_makes_a_segment_per_utterance(server, minutes):
    samples, utterances = minutes
    async with httpx.AsyncClient(base_url=server[0], timeout=600) as http:
        response = await http.post("/v1/audio/transcriptions", files={"file": ("talk.flac", encode(samples[None], "flac"))},
                                   data={"model": MODEL, "response_format": "verbose_json", "max_tokens": "2",
                                         "chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "0.5",
                                         "chunking_strategy[prefix_padding_ms]": "300",
                                         "chunking_strategy[silence_duration_ms]": "500"})
    assert response.status_code == 200, response.text
    segments = response.json()["segments"]
    assert len(segments) == len(utterances)
    for segment, (start, end) in zip(segments, utterances):
        assert segment["start"] <= start + 0.08 and end - 0.08 <= segment["end"]


async def test_a_stream_starts_long_before_the_transcription_ends(sdk, server, minutes):
    samples, _ = minutes
    audio = encode(samples[None], "flac")
    tokens_before = process_metric(server[0], "qwen2_audio_generated_tokens_total")
    started = time.perf_counter()
    stream = await sdk.audio.transcriptions.create(model=MODEL, file=("talk.flac", audio), stream=True,
                                                   extra_body={"max_tokens": 48, "ignore_eos": True})
    first = tokens_at_first = None
    deltas = []
    async for event in stream:
        if event.type == "transcript.text.delta":
            if first is None:
                first = time.perf_counter() - started
                tokens_at_first = process_metric(server[0], "qwen2_audio_generated_tokens_total") - tokens_before
            deltas.append(event.delta)
        elif event.type == "transcript.text.done":
            done = time.perf_counter() - started
            tokens_at_done = process_metric(server[0], "qwen2_audio_generated_tokens_total") - tokens_before
            assert event.text == "".join(deltas)
            assert event.usage.output_tokens == tokens_at_done and tokens_at_done % 48 == 0  # 48 per piece
    assert len(deltas) > tokens_at_done / 48, "text arrives token by token, not piece by piece"
    assert first < done / 2 and tokens_at_first < tokens_at_done / 2, "most of the work was still ahead"


async def test_an_hour_transcribes_into_every_timed_format_with_flat_memory(sdk, server):
    """The issue's bar: one hour through the SDK into verbose_json, srt and vtt; memory does not grow with length."""
    base, pid = server
    samples, utterances = speech_track(3600.0, seed=4)
    hour, ten_minutes = flac(samples), flac(samples[: 600 * 16_000])
    del samples
    process = psutil.Process(pid)

    async def peak_rss_during(coroutine) -> tuple[object, int]:
        peak = process.memory_info().rss
        task = asyncio.ensure_future(coroutine)
        while not task.done():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.05)
        return task.result(), peak

    async def every_format(audio: bytes):
        return await asyncio.gather(*(
            sdk.audio.transcriptions.create(model=MODEL, file=("speech.flac", audio), response_format=fmt,
                                            extra_body={"max_tokens": 2})
            for fmt in ("verbose_json", "srt", "vtt")))

    _, peak_ten = await peak_rss_during(every_format(ten_minutes))
    results, peak_hour = await peak_rss_during(every_format(hour))
    verbose, subtitles, captions = results
    assert abs(verbose.duration - 3600) < 2
    _assert_pause_aligned(verbose.segments, utterances, verbose.duration)
    expected = [(round(s.start, 3), round(s.end, 3)) for s in verbose.segments if s.text.strip()]
    assert [(c.start.total_seconds(), c.end.total_seconds()) for c in srt.parse(subtitles)] == expected
    assert [(c.start, c.end) for c in webvtt.from_string(captions)] == [(_vtt(a), _vtt(b)) for a, b in expected]
    # three requests of an hour at once against three of ten minutes: the same memory, give or take allocator noise
    assert peak_hour < peak_ten * 1.25, (peak_ten, peak_hour)
