import pytest

from server.audio.diarization.diarize import DiarizationOptions, Diarizer
from server.audio.diarization.encoder import SpeakerEncoder
from server.audio.vad import SpeechDetector


@pytest.fixture(scope="session")
def diarizer() -> Diarizer:
    return Diarizer(SpeechDetector(), SpeakerEncoder(), DiarizationOptions())
