"""Real speech for tests and benchmarks: sentences spoken by espeak-ng (a real formant synthesizer), with pauses of
known length, so where the speech is (and is not) is known exactly.

Where QWEN2_AUDIO_SPEECH_DIR names a folder, espeak-ng's output is kept there and read back: a machine without
espeak-ng (the GPU image) runs the speech benches on what `speak_all` spoke elsewhere (scripts/gpu-wheels).
"""

import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np

from server.audio.clip import SAMPLE_RATE
from server.audio.decode import decode_audio

SENTENCES = [
    "The quarterly meeting will now come to order.",
    "First, the budget for next year has been approved by the board.",
    "Second, we are hiring three new engineers for the audio team.",
    "Please send your questions to the office before Friday.",
    "The weather today is cloudy with a chance of rain in the evening.",
    "Our new product ships to customers in the spring.",
    "Thank you all for coming, and see you next week.",
    "Revenue grew by twelve percent compared with last year.",
]


def have_espeak() -> bool:
    """espeak-ng can speak, or a speech folder holds what it said."""
    folder = os.environ.get("QWEN2_AUDIO_SPEECH_DIR")
    return shutil.which("espeak-ng") is not None or bool(folder and any(Path(folder).glob("*.wav")))


def speak(text: str, voice: str = "en-us", words_per_minute: int = 165, pitch: int | None = None) -> np.ndarray:
    """16 kHz mono float32 speech, trimmed of the synthesizer's own leading and trailing silence.

    `voice` is an espeak-ng voice, optionally with a variant (`en-us+f3`); `pitch` (0-99) replaces its base pitch."""
    pitched = ["-p", str(pitch)] if pitch is not None else []
    samples = decode_audio(_espeak(["-v", voice, "-s", str(words_per_minute), *pitched, "--stdout", text]))
    loud = np.flatnonzero(np.abs(samples) > 1e-3)
    return samples[loud[0] : loud[-1] + 1]


def speak_all() -> None:
    """Speak every sentence the benches use (into QWEN2_AUDIO_SPEECH_DIR, where it is set)."""
    for sentence in SENTENCES:
        speak(sentence)


def _espeak(args: list[str]) -> bytes:
    """espeak-ng's WAV output for `args`, through the speech folder where one is set."""
    folder = os.environ.get("QWEN2_AUDIO_SPEECH_DIR")
    path = Path(folder, hashlib.sha256("\0".join(args).encode()).hexdigest()[:16] + ".wav") if folder else None
    if path is not None and path.exists():
        return path.read_bytes()
    wav = subprocess.run(["espeak-ng", *args], check=True, capture_output=True).stdout
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav)
    return wav


def speech_track(seconds: float, pauses: tuple[float, ...] = (0.7, 1.5, 1.0, 2.5), seed: int = 0,
                 noise: float = 0.002) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """About `seconds` of sentences with pauses between them (cycling through `pauses`), over faint noise.

    Returns the samples and each utterance's (start, end) in seconds: where speech really is.
    """
    rng = np.random.default_rng(seed)
    spoken = [speak(s) for s in SENTENCES]
    parts, utterances, t = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)], [], 0.5
    i = 0
    while t < seconds:
        clip = spoken[i % len(spoken)]
        utterances.append((t, t + clip.shape[0] / SAMPLE_RATE))
        gap = pauses[i % len(pauses)]
        parts += [clip, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        t += clip.shape[0] / SAMPLE_RATE + int(gap * SAMPLE_RATE) / SAMPLE_RATE
        i += 1
    samples = np.concatenate(parts)
    samples += rng.normal(0, noise, samples.shape).astype(np.float32)
    return samples, utterances


def flac(samples: np.ndarray) -> bytes:
    """16 kHz mono FLAC of float32 samples: lossless, so the file holds exactly the speech the track describes."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        for start in range(0, pcm.shape[0], SAMPLE_RATE * 10):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + SAMPLE_RATE * 10], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
