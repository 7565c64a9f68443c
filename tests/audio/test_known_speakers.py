"""Known speakers' names and references are checked before use; each fault names its field and index (phase 2
answers them with a 400 carrying that `param`)."""

import numpy as np
import pytest

from server.audio.clip import SAMPLE_RATE
from server.audio.diarization import MAX_KNOWN_SPEAKERS, KnownSpeakerError, check_known_speakers
from server.bench.conversation import HELD_OUT_VOICES, reference_speech
from tests.support.speech import requires_espeak


def _seconds(n: float) -> np.ndarray:
    return np.zeros(int(n * SAMPLE_RATE), np.float32)


@pytest.mark.parametrize("names, references, param", [
    (["ann", "bob"], [_seconds(3)], "known_speaker_references"),
    (["ann"], [_seconds(3), _seconds(3)], "known_speaker_names"),
    (["a", "b", "c", "d", "e"], [_seconds(3)] * 5, f"known_speaker_names[{MAX_KNOWN_SPEAKERS}]"),
    (["ann", " "], [_seconds(3)] * 2, "known_speaker_names[1]"),
    (["ann", "bob", "ann"], [_seconds(3)] * 3, "known_speaker_names[2]"),
])
def test_counts_and_names_are_checked(names, references, param):
    with pytest.raises(KnownSpeakerError) as error:
        check_known_speakers(names, references)
    assert error.value.param == param and param in str(error.value)


def test_up_to_four_named_references_pass():
    check_known_speakers(["ann", "bob", "cy", "di"], [_seconds(3)] * 4)
    check_known_speakers([], [])


@pytest.mark.parametrize("seconds", [1.9, 10.1, 0.0])
def test_a_reference_must_hold_2_to_10_seconds(diarizer, seconds):
    with pytest.raises(KnownSpeakerError, match=r"2 to 10 s") as error:
        diarizer.known_speaker(2, "ann", _seconds(seconds))
    assert error.value.param == "known_speaker_references[2]"


@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_a_reference_without_speech_is_refused(diarizer, kind):
    samples = _seconds(4) if kind == "silence" else np.random.default_rng(0).normal(0, 0.01, 4 * SAMPLE_RATE).astype(np.float32)
    with pytest.raises(KnownSpeakerError, match="no speech") as error:
        diarizer.known_speaker(1, "ann", samples)
    assert error.value.param == "known_speaker_references[1]"


@requires_espeak
@pytest.mark.parametrize("seconds", [2.0, 10.0])
def test_references_of_2_and_10_seconds_give_a_unit_embedding(diarizer, seconds):
    known = diarizer.known_speaker(0, "ann", reference_speech(HELD_OUT_VOICES[0], seconds, seed=4))
    assert known.name == "ann" and abs(float(np.linalg.norm(known.embedding)) - 1) < 1e-5
