"""Turns as the transcription will use them: each fits one clip, blocks give what the whole gives, and a speaker's
consecutive turns join into clips of up to 30 s."""

import numpy as np
import pytest

from server.audio.clip import MAX_CLIP_SAMPLES, SAMPLE_RATE
from server.audio.diarization import SpeakerTurn, merge_turns
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
