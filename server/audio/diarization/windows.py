"""Speech regions cut into the encoder's windows, and each window's speaker embedding.

A region is a stretch of speech between pauses (the Silero VAD's). Its mel frames are computed once and cut into
back-to-back windows of about WINDOW_FRAMES each (the region split evenly), so every frame is embedded once and
labelling the windows labels the region. Each window is brought to -30 dBFS, as the encoder's training speech was.
"""

from dataclasses import dataclass

import numpy as np

from server.audio.diarization.encoder import SpeakerEncoder
from server.audio.diarization.frontend import HOP, frame_energy, loudness_gain, mel_frames

WINDOW_FRAMES = 80  # 0.8 s: speakers' centroids of such windows stay apart; changes are then placed finer (refine)


@dataclass
class Region:
    """A stretch of speech, [start, end) in samples, and its windows: [start, end) in frames of the region."""

    start: int
    end: int
    mels: np.ndarray  # [frames, MELS]
    energy: np.ndarray  # [frames] mean square of each frame's samples
    windows: list[tuple[int, int]]
    embeddings: np.ndarray | None = None  # [len(windows), 256], once embedded

    def window(self, start: int, end: int) -> np.ndarray:
        """Frames [start, end) as the encoder takes them: brought to the loudness it was trained on."""
        return self.mels[start:end] * loudness_gain(self.energy[start:end])

    @property
    def frames(self) -> int:
        return -(-(self.end - self.start) // HOP)

    def sample(self, frame: int) -> int:
        return min(self.end, self.start + frame * HOP)


def window_bounds(frames: int, length: int = WINDOW_FRAMES) -> list[tuple[int, int]]:
    """`frames` split into back-to-back windows of 0.75-1.5x `length` (one window if shorter)."""
    edges = np.linspace(0, frames, max(1, round(frames / length)) + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def speech_region(start: int, audio: np.ndarray) -> Region:
    """The region of `audio`, which starts at sample `start`: its mel frames and windows (not yet embedded)."""
    return Region(start, start + audio.shape[0], mel_frames(audio), frame_energy(audio),
                  window_bounds(-(-audio.shape[0] // HOP)))


def embed(regions: list[Region], encoder: SpeakerEncoder) -> list[Region]:
    """The regions with every window embedded (in batches across regions)."""
    embeddings = encoder.embed([r.window(a, b) for r in regions for a, b in r.windows])
    first = 0
    for r in regions:
        r.embeddings = embeddings[first : first + len(r.windows)]
        first += len(r.windows)
    return regions
