"""Real speech for tests (server.bench.speech), and the mark for tests that need its synthesizer."""

import pytest

from server.bench.speech import SENTENCES, flac, have_espeak, speak, speech_track

requires_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed (scripts/system-deps installs it)")

__all__ = ["SENTENCES", "flac", "requires_espeak", "speak", "speech_track"]
