"""Synthetic conversations of distinct espeak-ng voices, with who spoke when known exactly.

Each turn is 1-8 s of one voice's sentences (cut where the length drawn for it ends); most turns follow the last
after a pause of 0.3-1 s, some straight after it with no pause at all, so a speaker change can not always be
found as a silence. The voices are espeak-ng variants at different base pitches and rates, chosen to be mutually
distinct; the diarization threshold is calibrated on CALIBRATION_VOICES and scored on HELD_OUT_VOICES, which it
never saw (docs/diarization.md).
"""

from dataclasses import dataclass
from functools import cache

import numpy as np

from server.audio.clip import SAMPLE_RATE
from server.bench.speech import SENTENCES, speak

LINES = SENTENCES + [
    "I think we should ask the customers what they need first.",
    "That sounds fine to me, but the schedule is very tight.",
    "Could you share the numbers from the last release?",
    "We tried that approach two years ago and it did not work.",
    "Let me check with the design team and come back to you.",
    "The new office opens on the first of March.",
    "Honestly, I would rather wait until the tests are green.",
    "Does anyone have a question about the travel policy?",
    "The train was late again, so I missed the first talk.",
    "We could move the launch to the week after.",
]


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice (`en-us+VARIANT`), its base pitch (0-99) and its speaking rate."""

    name: str
    pitch: int
    words_per_minute: int

    def say(self, text: str) -> np.ndarray:
        return _spoken(text, self)


CALIBRATION_VOICES = (
    Voice("en-us+steph", 50, 165), Voice("en-us+zac", 80, 175), Voice("en-us+iven", 25, 160),
    Voice("en-us+linda", 80, 170), Voice("en-us+Lee", 25, 155), Voice("en-us+edward", 25, 170),
    Voice("en-us+Gene", 25, 165), Voice("en-us+belinda", 25, 175), Voice("en-us+Andy", 80, 160),
    Voice("en-us+Annie", 25, 165), Voice("en-us+paul", 25, 150), Voice("en-us+m1", 50, 170),
)
HELD_OUT_VOICES = (Voice("en-us+Michael", 50, 160), Voice("en-us+f4", 25, 175), Voice("en-us+robert", 80, 150))


@dataclass(frozen=True)
class SpokenTurn:
    start: float
    end: float
    speaker: str


@dataclass
class Conversation:
    samples: np.ndarray
    turns: list[SpokenTurn]

    @property
    def speakers(self) -> list[str]:
        return list(dict.fromkeys(t.speaker for t in self.turns))


def speaker_name(voice: Voice) -> str:
    return f"{voice.name.split('+')[-1]}-p{voice.pitch}"


def conversation(voices: tuple[Voice, ...], seconds: float, seed: int, back_to_back: float = 0.25,
                 noise: float = 0.002) -> Conversation:
    """About `seconds` of turns between `voices` (the next speaker always another one); `back_to_back` is the share
    of turns that start the moment the last one ends."""
    rng = np.random.default_rng(seed)
    parts, turns, t = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)], [], 0.5
    speaker = int(rng.integers(len(voices)))
    while t < seconds:
        clip = turn_speech(voices[speaker], float(rng.uniform(1.0, 8.0)), rng)
        turns.append(SpokenTurn(t, t + clip.shape[0] / SAMPLE_RATE, speaker_name(voices[speaker])))
        pause = 0 if rng.random() < back_to_back else int(rng.uniform(0.3, 1.0) * SAMPLE_RATE)
        parts += [clip, np.zeros(pause, np.float32)]
        t += (clip.shape[0] + pause) / SAMPLE_RATE
        speaker = (speaker + int(rng.integers(1, len(voices)))) % len(voices)
    samples = np.concatenate(parts + [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)])
    samples += rng.normal(0, noise, samples.shape).astype(np.float32)
    return Conversation(samples, turns)


def turn_speech(voice: Voice, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of one voice: its lines from a random one on, 0.15 s apart, the last cut short (faded out)."""
    gap = np.zeros(int(0.15 * SAMPLE_RATE), np.float32)
    first = int(rng.integers(len(LINES)))
    parts, length, i = [], 0, 0
    while length < seconds * SAMPLE_RATE:
        line = voice.say(LINES[(first + i) % len(LINES)])
        parts += [line, gap]
        length += line.shape[0] + gap.shape[0]
        i += 1
    clip = np.concatenate(parts[:-1])[: int(seconds * SAMPLE_RATE)].copy()
    fade = min(clip.shape[0], int(0.01 * SAMPLE_RATE))
    clip[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return clip


def reference_speech(voice: Voice, seconds: float, seed: int) -> np.ndarray:
    """`seconds` of one voice alone, as a known speaker's reference clip."""
    return turn_speech(voice, seconds, np.random.default_rng(seed))


@cache
def _spoken(text: str, voice: Voice) -> np.ndarray:
    return speak(text, voice.name, voice.words_per_minute, voice.pitch)
