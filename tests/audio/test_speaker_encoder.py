"""The speaker encoder: loaded offline from the package, resemblyzer's front end exactly, and voices told apart."""

import socket

import numpy as np
import pytest

from server.audio.diarization.encoder import DIMENSIONS, SpeakerEncoder
from server.audio.diarization.frontend import mel_frames
from server.bench.conversation import CALIBRATION_VOICES, HELD_OUT_VOICES, reference_speech
from tests.support.speech import requires_espeak


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


def test_the_encoder_loads_and_runs_with_the_network_cut_off(monkeypatch):
    """Nothing is fetched: the model ships in the package (no hub, nothing for `pull`)."""

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    embeddings = SpeakerEncoder().embed([np.ones((80, 40), np.float32), np.ones((30, 40), np.float32)])
    assert embeddings.shape == (2, DIMENSIONS) and np.isfinite(embeddings).all()


def test_embeddings_are_unit_length_and_256_wide_for_windows_of_any_length(encoder):
    rng = np.random.default_rng(0)
    windows = [np.abs(rng.normal(0, 1, (length, 40))).astype(np.float32) for length in (160, 80, 33, 1, 200)]
    embeddings = encoder.embed(windows)
    assert embeddings.shape == (5, DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # a window's embedding does not depend on what it is batched with (shorter rows are not padded into)
    np.testing.assert_allclose(encoder.embed(windows[2:3])[0], embeddings[2], atol=1e-5)


def test_the_front_end_is_resemblyzers_librosa_mel_spectrogram():
    librosa = pytest.importorskip("librosa")
    samples = np.random.default_rng(1).normal(0, 0.1, 16_000 * 3 + 37).astype(np.float32)
    expected = librosa.feature.melspectrogram(y=samples, sr=16_000, n_fft=400, hop_length=160, n_mels=40).T
    np.testing.assert_allclose(mel_frames(samples), expected, rtol=1e-4, atol=1e-6 * expected.max())


@requires_espeak
def test_the_same_voice_matches_and_different_voices_do_not(diarizer):
    """Embeddings of two different clips of one voice are far more alike than those of two voices, on either side
    of the calibrated match threshold."""
    voices = [CALIBRATION_VOICES[0], CALIBRATION_VOICES[3], HELD_OUT_VOICES[1]]
    first = [diarizer.known_speaker(0, "x", reference_speech(v, 6.0, seed=1)).embedding for v in voices]
    second = [diarizer.known_speaker(0, "x", reference_speech(v, 6.0, seed=2)).embedding for v in voices]
    similarity = np.array(first) @ np.array(second).T
    same, different = np.diag(similarity), similarity[~np.eye(3, dtype=bool)]
    assert same.min() > diarizer.options.match > different.max(), similarity
