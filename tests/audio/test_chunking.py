"""Cutting audio at pauses: the voice-activity detector, the span planner, and the streaming clip cutter."""

import numpy as np
import pytest

from server.audio.chunking import (
    FRAME,
    SpeechClips,
    SpeechSpans,
    VadOptions,
    contiguous_spans,
)
from server.audio.clip import MAX_CLIP_SAMPLES, SAMPLE_RATE
from server.audio.vad import SpeechDetector
from tests.support.speech import requires_espeak, speech_track

pytestmark = requires_espeak


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector()


@pytest.fixture(scope="module")
def track():
    return speech_track(150.0, seed=1)


def _blocks(samples: np.ndarray, size: int):
    return (samples[i : i + size] for i in range(0, samples.shape[0], size))


def _inside_speech(t: float, utterances, tolerance: float = 0.05) -> bool:
    return any(start + tolerance < t < end - tolerance for start, end in utterances)


def test_probabilities_equal_silero_s_own_sequence_runner(detector, track):
    """Our block-by-block runner scores every frame exactly as the silero-vad package's own code does."""
    import torch

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # its import sets torch's thread count to 1 ...

    torch.set_num_threads(threads)  # ... which the rest of the suite must not inherit
    samples, _ = track
    theirs = load_silero_vad(sequence=True).audio_forward(samples)
    vad = detector.stream()
    ours = np.concatenate([vad.feed(b)[0] for b in _blocks(samples, 7_777)] + [vad.flush()[0]])
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_clips_fall_in_pauses_cover_all_speech_and_fit_the_encoder(detector, track):
    samples, utterances = track
    clips = list(SpeechClips(_blocks(samples, 1_152), detector, VadOptions()))
    spans = [(p.span.start / SAMPLE_RATE, p.span.end / SAMPLE_RATE) for p in clips]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "in order, no overlap"
    assert all(p.samples.shape[0] <= MAX_CLIP_SAMPLES for p in clips)
    assert all(p.samples.shape[0] == p.span.end - p.span.start for p in clips)
    np.testing.assert_array_equal(clips[1].samples, samples[clips[1].span.start : clips[1].span.end])
    for start, end in spans:
        assert not _inside_speech(start, utterances) and not _inside_speech(end, utterances), (start, end)
    for start, end in utterances:
        assert any(a <= start and end <= b for a, b in spans), f"utterance {start:.2f}-{end:.2f} not covered"
    assert len(clips) <= int(150 / 25) + 1, "auto merges utterances into long clips"


def test_cutting_does_not_depend_on_how_the_audio_arrives(detector, track):
    samples, _ = track
    cuts = [[(p.span.start, p.span.end) for p in SpeechClips(_blocks(samples, size), detector, VadOptions())]
            for size in (512, 1_000, 48_000, samples.shape[0])]
    assert cuts[0] == cuts[1] == cuts[2] == cuts[3]


def test_server_vad_gives_one_clip_per_utterance(detector, track):
    samples, utterances = track
    clips = list(SpeechClips(_blocks(samples, 4_096), detector, VadOptions(silence_ms=200, padding_ms=300, merge=False)))
    assert len(clips) == len(utterances)
    for clip, (start, end) in zip(clips, utterances):
        assert clip.span.start / SAMPLE_RATE <= start and end <= clip.span.end / SAMPLE_RATE
        assert clip.span.speech > 0.9
    # a pause must last silence_ms to split: with 1.2 s, only the 1.5 s and 2.5 s pauses do
    longer = list(SpeechClips(_blocks(samples, 4_096), detector, VadOptions(silence_ms=1_200, merge=False)))
    assert len(utterances) // 2 - 1 <= len(longer) <= len(utterances) // 2 + 1


def test_short_audio_without_a_strategy_goes_whole_timed_by_its_speech(detector):
    samples, [(start, end)] = speech_track(3.0, pauses=(3.0,))
    [clip] = SpeechClips(_blocks(samples, 1_000), detector, None)
    np.testing.assert_array_equal(clip.samples, samples)
    assert abs(clip.span.start / SAMPLE_RATE - start) < 0.3 and abs(clip.span.end / SAMPLE_RATE - end) < 0.3
    silence = np.zeros(SAMPLE_RATE * 2, np.float32)
    [quiet] = SpeechClips(iter([silence]), detector, None)
    assert (quiet.span.start, quiet.span.end) == (0, silence.shape[0]) and quiet.span.speech < 0.5
    assert list(SpeechClips(iter([silence]), detector, VadOptions())) == [], "auto drops audio without speech"


def test_speech_without_a_pause_is_cut_at_its_quietest_moment_near_the_limit():
    spans = SpeechSpans(VadOptions(padding_ms=0))
    frames = 70 * SAMPLE_RATE // FRAME
    levels = np.full(frames, 0.3, np.float32)
    dip = round(27.0 * SAMPLE_RATE / FRAME)
    levels[dip - 1 : dip + 2] = 0.01  # a breath, too short to count as a pause
    found = spans.feed(np.full(frames, 0.95, np.float32), levels) + spans.finish(frames * FRAME)
    assert [round(s.start / SAMPLE_RATE, 1) for s in found] == [0.0, 27.0, round(27.0 + 29.98, 1)][: len(found)]
    assert found[0].end == found[1].start == dip * FRAME, "contiguous: nothing lost at a forced cut"
    assert all(s.end - s.start <= MAX_CLIP_SAMPLES for s in found) and found[-1].end == frames * FRAME


def test_chat_audio_is_cut_in_pauses_and_nothing_is_dropped(detector):
    samples, utterances = speech_track(95.0, seed=2)
    spans = contiguous_spans(samples, detector)
    assert spans[0].start == 0 and spans[-1].end == samples.shape[0]
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
    assert all(s.end - s.start <= MAX_CLIP_SAMPLES for s in spans) and len(spans) == 4
    assert not any(_inside_speech(s.start / SAMPLE_RATE, utterances) for s in spans)


def test_chat_audio_without_speech_is_cut_at_its_quietest_moment(detector):
    rng = np.random.default_rng(0)
    t = np.arange(45 * SAMPLE_RATE) / SAMPLE_RATE
    music = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    music[int(24.0 * SAMPLE_RATE) : int(24.2 * SAMPLE_RATE)] *= 0.02
    spans = contiguous_spans(music, detector)
    assert len(spans) == 2 and 24.0 <= spans[0].end / SAMPLE_RATE <= 24.2
