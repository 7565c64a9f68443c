"""The benchmark's requests: clips of a chosen length, a task mix, and an output length forced on every system."""

import base64
import io
import wave
from dataclasses import dataclass

import numpy as np

from server.audio.clip import SAMPLE_RATE
from server.serving.prompts import TRANSCRIBE_INSTRUCTION

INSTRUCTIONS = {
    "transcribe": TRANSCRIBE_INSTRUCTION,  # what the server sends for a transcription, so the recipe does the same
    "chat": "What is happening in this recording? Describe the sounds you hear.",
}


@dataclass(frozen=True)
class BenchRequest:
    task: str  # transcribe | chat
    samples: np.ndarray  # float32 mono 16 kHz
    wav: bytes

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / SAMPLE_RATE

    @property
    def instruction(self) -> str:
        return INSTRUCTIONS[self.task]

    @property
    def wav_base64(self) -> str:
        return base64.b64encode(self.wav).decode()


@dataclass(frozen=True)
class Workload:
    requests: int = 16
    clip_seconds: float = 5.0
    output_tokens: int = 32
    tasks: tuple[str, ...] = ("transcribe", "chat")

    def build(self) -> list[BenchRequest]:
        """Distinct clips (a chord with noise, seeded by index), tasks taken in turn."""
        return [BenchRequest(self.tasks[i % len(self.tasks)], *_clip(self.clip_seconds, i)) for i in range(self.requests)]


def _clip(seconds: float, seed: int) -> tuple[np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    samples = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(120, 1200, 3)) / 4 + 0.02 * rng.standard_normal(t.size)
    samples = samples.astype(np.float32)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return samples, buffer.getvalue()
