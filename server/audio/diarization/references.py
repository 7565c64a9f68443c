"""Known speakers: a name and 2-10 s of that person's speech (OpenAI's `known_speaker_names[]` and
`known_speaker_references[]`), checked here so that each fault names its field and index."""

from dataclasses import dataclass

import numpy as np

from server.audio.clip import SAMPLE_RATE

MAX_KNOWN_SPEAKERS = 4
MIN_REFERENCE_SECONDS = 2.0
MAX_REFERENCE_SECONDS = 10.0
MIN_REFERENCE_SPEECH_SECONDS = 0.5  # less than this is no voice to compare with


class KnownSpeakerError(ValueError):
    """A known speaker's name or reference that cannot be used (400); `param` is the form field and index,
    e.g. `known_speaker_references[1]`."""

    def __init__(self, field: str, index: int | None, message: str) -> None:
        self.param = field if index is None else f"{field}[{index}]"
        super().__init__(f"{self.param}: {message}")


@dataclass(frozen=True)
class KnownSpeaker:
    name: str
    embedding: np.ndarray  # [256], unit length


def check_known_speakers(names: list[str], references: list[np.ndarray]) -> None:
    """The counts and names (their audio is checked as it is embedded: check_reference)."""
    if len(names) != len(references):
        field = "known_speaker_references" if len(names) > len(references) else "known_speaker_names"
        raise KnownSpeakerError(field, None, f"{len(names)} known_speaker_names[] and {len(references)} "
                                f"known_speaker_references[] were given: each name needs exactly one reference")
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise KnownSpeakerError("known_speaker_names", MAX_KNOWN_SPEAKERS,
                                f"at most {MAX_KNOWN_SPEAKERS} known speakers are supported, {len(names)} were given")
    for index, name in enumerate(names):
        if not name.strip():
            raise KnownSpeakerError("known_speaker_names", index, "a speaker's name must not be empty")
        if name in names[:index]:
            raise KnownSpeakerError("known_speaker_names", index, f"{name!r} is given twice")


def check_reference(index: int, samples: np.ndarray) -> None:
    seconds = samples.shape[0] / SAMPLE_RATE
    if seconds < MIN_REFERENCE_SECONDS or seconds > MAX_REFERENCE_SECONDS:
        raise KnownSpeakerError("known_speaker_references", index, f"a reference must hold {MIN_REFERENCE_SECONDS:g} "
                                f"to {MAX_REFERENCE_SECONDS:g} s of audio; this one is {seconds:.2f} s long")


def check_reference_speech(index: int, speech_samples: int) -> None:
    if speech_samples < MIN_REFERENCE_SPEECH_SECONDS * SAMPLE_RATE:
        raise KnownSpeakerError("known_speaker_references", index,
                                f"no speech was found in this reference ({speech_samples / SAMPLE_RATE:.2f} s; at "
                                f"least {MIN_REFERENCE_SPEECH_SECONDS:g} s is needed)")
