"""Synthetic conversations of distinct espeak-ng voices, with who spoke when known exactly.

Each turn is 1-8 s of one voice's sentences (made up at random; cut where the length drawn for it ends); most
turns follow the last after a pause of 0.3-1 s, some straight after it with no pause at all, so a speaker change
cannot always be found as a silence. The voices are espeak-ng variants at different base pitches and rates,
chosen to be mutually distinct; diarization's thresholds are calibrated on CALIBRATION_VOICES' conversations and
scored on conversations of HELD_OUT_VOICES and MORE_HELD_OUT_VOICES, which calibration never saw
(docs/diarization.md).
"""

from dataclasses import dataclass

import numpy as np

from server.audio.clip import SAMPLE_RATE
from server.bench.speech import speak

# Sentences are put together at random from these parts (8,000 of them), so no stretch of a long conversation is
# the same audio as another: espeak-ng says a sentence identically each time, and repeated audio is a shortcut real
# conversations do not offer (its windows cluster on their own).
SUBJECTS = ("The new team", "Our manager", "My neighbour", "The committee", "Everyone in the office",
            "The delivery driver", "Your sister", "The research group", "Nobody at the station", "The city council")
VERBS = ("wants to discuss", "has already finished", "will probably cancel", "keeps asking about",
         "is still waiting for", "forgot to mention", "would like to see", "was surprised by", "needs more time for",
         "is worried about")
OBJECTS = ("the budget for next year", "the broken printer", "the plans for the garden",
           "a long holiday in the mountains", "the results of the survey", "the new coffee machine",
           "the contract with the supplier", "the football match on Sunday", "the noise from the street",
           "the weather forecast")
ENDINGS = ("before the end of the week.", "and nobody knows why.", "if the weather stays dry.",
           "according to the latest email.", "as far as I can tell.", "but that is not a problem.",
           "so we should talk about it tomorrow.", "which surprised all of us.")


def sentence(rng: np.random.Generator) -> str:
    return " ".join(str(rng.choice(part)) for part in (SUBJECTS, VERBS, OBJECTS, ENDINGS))


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice (`en-us+VARIANT`), its base pitch (0-99) and its speaking rate."""

    name: str
    pitch: int
    words_per_minute: int

    def say(self, text: str) -> np.ndarray:
        return speak(text, self.name, self.words_per_minute, self.pitch)


CALIBRATION_VOICES = (
    Voice("en-us+steph", 50, 165), Voice("en-us+zac", 80, 175), Voice("en-us+iven", 25, 160),
    Voice("en-us+linda", 80, 170), Voice("en-us+Lee", 25, 155), Voice("en-us+edward", 25, 170),
    Voice("en-us+Gene", 25, 165), Voice("en-us+belinda", 25, 175), Voice("en-us+Andy", 80, 160),
    Voice("en-us+Annie", 25, 165), Voice("en-us+paul", 25, 150), Voice("en-us+m1", 50, 170),
)
HELD_OUT_VOICES = (Voice("en-us+Michael", 50, 160), Voice("en-us+f4", 25, 175), Voice("en-us+robert", 80, 150))
MORE_HELD_OUT_VOICES = (Voice("en-us+klatt2", 25, 165), Voice("en-us+f5", 80, 170))


@dataclass(frozen=True)
class Scene:
    """A conversation to render: who takes part, its random seed and its length."""

    voices: tuple[Voice, ...]
    seed: int
    seconds: float = 90.0

    def render(self) -> "Conversation":
        return conversation(self.voices, self.seconds, self.seed)

    def references(self, count: int, seconds: float = 6.0) -> list[tuple[str, np.ndarray]]:
        """Known-speaker references (name, speech of its own) of the first `count` voices."""
        return [(speaker_name(v), reference_speech(v, seconds, self.seed * 10 + i)) for i, v in
                enumerate(self.voices[:count])]


def _calibration_scenes() -> tuple[Scene, ...]:
    """Three conversations each of 2, 3 and 4 calibration voices, drawn at random (seeded)."""
    rng = np.random.default_rng(1)
    return tuple(Scene(tuple(CALIBRATION_VOICES[j] for j in rng.choice(len(CALIBRATION_VOICES), 2 + i % 3,
                                                                     replace=False)), 100 + i) for i in range(9))


CALIBRATION_SCENES = _calibration_scenes()
HELD_OUT_SCENES = (Scene(HELD_OUT_VOICES, 9001, 120.0), Scene(HELD_OUT_VOICES, 9002, 120.0),
                   Scene((HELD_OUT_VOICES[0], MORE_HELD_OUT_VOICES[0]), 9011, 120.0),
                   Scene(HELD_OUT_VOICES[1:] + MORE_HELD_OUT_VOICES, 9012, 120.0),
                   # a minute each: less speech per voice to find it by (a 60 s conversation once split a voice)
                   Scene(HELD_OUT_VOICES, 9021, 60.0), Scene((HELD_OUT_VOICES[2], MORE_HELD_OUT_VOICES[1]), 9022, 60.0))


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
    """`seconds` of one voice: random sentences 0.15 s apart, the last cut short (faded out)."""
    gap = np.zeros(int(0.15 * SAMPLE_RATE), np.float32)
    parts, length = [], 0
    while length < seconds * SAMPLE_RATE:
        line = voice.say(sentence(rng))
        parts += [line, gap]
        length += line.shape[0] + gap.shape[0]
    clip = np.concatenate(parts[:-1])[: int(seconds * SAMPLE_RATE)].copy()
    fade = min(clip.shape[0], int(0.01 * SAMPLE_RATE))
    clip[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return clip


def reference_speech(voice: Voice, seconds: float, seed: int) -> np.ndarray:
    """`seconds` of one voice alone, as a known speaker's reference clip."""
    return turn_speech(voice, seconds, np.random.default_rng(seed))

