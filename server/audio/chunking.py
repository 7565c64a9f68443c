"""Cut audio into pieces the encoder can take whole (it sees at most 30 s)."""

import numpy as np

from server.audio.decode import SAMPLE_RATE

MAX_PIECE_SECONDS = 30.0


def split_fixed(samples: np.ndarray, max_seconds: float = MAX_PIECE_SECONDS) -> list[tuple[float, np.ndarray]]:
    """Consecutive pieces of at most `max_seconds`, with the start time of each in the original audio."""
    step = int(max_seconds * SAMPLE_RATE)
    return [(start / SAMPLE_RATE, samples[start : start + step]) for start in range(0, max(len(samples), 1), step)]
