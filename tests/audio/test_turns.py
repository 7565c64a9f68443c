"""Turns as the transcription will use them: each fits one clip, blocks give what the whole gives, and a speaker's
consecutive turns join into clips of up to 30 s."""

import numpy as np
import pytest

from server.audio.clip import MAX_CLIP_SAMPLES, SAMPLE_RATE
from server.audio.diarization import SpeakerTurn, merge_turns, turn_clips
from server.bench.conversation import HELD_OUT_VOICES, Scene, turn_speech
from tests.support.speech import requires_espeak


@requires_espeak
def test_audio_fed_in_blocks_gives_the_turns_of_the_whole(diarizer):
    samples = Scene(HELD_OUT_VOICES[:2], 9004, 40.0).render().samples
    blocks = (samples[i : i + 4_000] for i in range(0, samples.shape[0], 4_000))
    assert diarizer.diarize(blocks) == diarizer.diarize(samples)


@requires_espeak
def test_every_turn_fits_one_clip_even_without_pauses(diarizer):
    """70 s of one voice with no pause long enough for the VAD: turns are still at most 30 s."""
    samples = turn_speech(HELD_OUT_VOICES[2], 70.0, np.random.default_rng(6))
    turns = diarizer.diarize(samples)
    assert turns and all(t.end - t.start <= MAX_CLIP_SAMPLES for t in turns)
    assert {t.speaker for t in turns} == {"A"}


def _turn(start: float, end: float, speaker: str) -> SpeakerTurn:
    return SpeakerTurn(int(start * SAMPLE_RATE), int(end * SAMPLE_RATE), speaker)


def test_merge_joins_one_speakers_consecutive_turns_up_to_a_clip():
    turns = [_turn(0, 5, "A"), _turn(5.5, 12, "A"), _turn(12, 14, "B"), _turn(15, 20, "A"), _turn(21, 40, "A"),
             _turn(41, 50, "A")]
    merged = merge_turns(turns)
    assert merged == [_turn(0, 12, "A"), _turn(12, 14, "B"), _turn(15, 40, "A"), _turn(41, 50, "A")]
    assert all(t.end - t.start <= MAX_CLIP_SAMPLES for t in merged)
    assert merge_turns([]) == []


@pytest.mark.parametrize("limit", [1, 10 * SAMPLE_RATE])
def test_merge_never_exceeds_its_limit(limit):
    turns = [_turn(i, i + 0.5, "A") for i in range(30)]
    assert all(t.end - t.start <= max(limit, SAMPLE_RATE // 2) for t in merge_turns(turns, limit))


def test_server_vad_joins_only_across_pauses_shorter_than_its_silence():
    turns = [_turn(0, 5, "A"), _turn(5.1, 8, "A"), _turn(9, 12, "A"), _turn(12, 14, "B")]
    assert merge_turns(turns, max_pause=int(0.2 * SAMPLE_RATE)) == [_turn(0, 8, "A"), _turn(9, 12, "A"),
                                                                    _turn(12, 14, "B")]


def test_turn_clips_are_cut_from_blocks_as_from_the_whole():
    samples = np.random.default_rng(0).normal(0, 0.1, 40 * SAMPLE_RATE).astype(np.float32)
    turns = [_turn(0.5, 5, "A"), _turn(5, 12, "B"), _turn(20, 39.5, "A")]
    blocks = (samples[i : i + 1_152] for i in range(0, samples.shape[0], 1_152))  # an mp3 frame's worth
    clips = list(turn_clips(blocks, turns))
    assert [(c.span.start, c.span.end) for c in clips] == [(t.start, t.end) for t in turns]
    assert all(np.array_equal(c.samples, samples[t.start : t.end]) for c, t in zip(clips, turns))


def test_a_turn_past_the_end_of_the_audio_is_cut_where_the_audio_ends():
    samples = np.ones(10 * SAMPLE_RATE, np.float32)
    clips = list(turn_clips(iter([samples]), [_turn(2, 12, "A"), _turn(13, 14, "B")]))
    assert [(c.span.start, c.span.end) for c in clips] == [(2 * SAMPLE_RATE, 10 * SAMPLE_RATE)]
