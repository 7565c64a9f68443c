"""Voice-activity detection with Silero VAD: a speech probability for every 32 ms of 16 kHz audio.

The model file ships inside the `silero-vad` wheel, so it runs offline. We run its torch-free "sequence" ONNX
export through onnxruntime directly: one call scores up to 512 frames, and the LSTM state is carried between
calls, so audio can be scored block by block as it is decoded. (Importing the `silero_vad` package itself is
avoided: it sets torch's process-wide thread count to 1, which would slow the model on CPU.)
"""

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime

FRAME = 512  # samples per frame: 32 ms at 16 kHz, the model's step
CONTEXT = 64  # trailing samples of the previous frame the model sees before each frame
MAX_FRAMES_PER_CALL = 512
MODEL_FILE = "silero_vad_16k_sequence.onnx"


def _model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # locates the installed package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed")
    return Path(spec.submodule_search_locations[0]) / "data" / MODEL_FILE


class SpeechDetector:
    """One ONNX session shared by all requests (onnxruntime's run is thread-safe); state lives per stream."""

    def __init__(self) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # a small LSTM: one thread is fastest and leaves the cores to the model
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(_model_path()), options, providers=["CPUExecutionProvider"])

    def stream(self) -> "VadStream":
        return VadStream(self)

    def frames(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Speech probability and RMS level of every frame of a whole clip (the last frame zero-padded)."""
        vad = self.stream()
        probs, levels = vad.feed(samples)
        tail_probs, tail_levels = vad.flush()
        return np.concatenate([probs, tail_probs]), np.concatenate([levels, tail_levels])


@dataclass
class VadStream:
    """Scores audio fed in arbitrary blocks, frame by frame, exactly as one pass over the whole would."""

    detector: SpeechDetector
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))
    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))

    def feed(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and levels of the frames completed by `samples` (the rest waits for more audio)."""
        audio = np.concatenate([self.pending, samples]) if self.pending.size else samples
        whole = audio.shape[0] // FRAME * FRAME
        self.pending = audio[whole:].copy()
        return self._score(audio[:whole].reshape(-1, FRAME))

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """The last, partial frame, zero-padded."""
        if not self.pending.size:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        frame = np.zeros((1, FRAME), np.float32)
        frame[0, : self.pending.size] = self.pending
        self.pending = np.zeros(0, np.float32)
        return self._score(frame)

    def _score(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = []
        for first in range(0, frames.shape[0], MAX_FRAMES_PER_CALL):
            block = frames[first : first + MAX_FRAMES_PER_CALL]
            contexts = np.concatenate([self.context[None], block[:-1, -CONTEXT:]])
            values, self.h, self.c = self.detector.session.run(
                ["speech_probs", "hn", "cn"], {"input": np.concatenate([contexts, block], axis=1), "h": self.h, "c": self.c}
            )
            self.context = block[-1, -CONTEXT:].copy()
            probs.append(values.reshape(-1))
        levels = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)).astype(np.float32)
        return (np.concatenate(probs) if probs else np.zeros(0, np.float32)), levels
