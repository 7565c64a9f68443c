"""Speaker turns: stretches of the audio with one speaker, labelled, and grouped into clips for transcription."""

from dataclasses import dataclass
from string import ascii_uppercase

import numpy as np

from server.audio.clip import MAX_CLIP_SAMPLES, SAMPLE_RATE
from server.audio.diarization.windows import Region


@dataclass(frozen=True)
class SpeakerTurn:
    """[start, end) in samples of the audio, and who speaks: a letter, or a known speaker's name."""

    start: int
    end: int
    speaker: str

    @property
    def start_seconds(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_seconds(self) -> float:
        return self.end / SAMPLE_RATE


def label_turns(regions: list[Region], frames: list[np.ndarray], names: dict[int, str]) -> list[SpeakerTurn]:
    """Runs of one speaker within each region, labelled: names, then letters in order of first speech."""
    raw = []
    for region, labels in zip(regions, frames):
        changes = [0] + [f for f in range(1, labels.shape[0]) if labels[f] != labels[f - 1]] + [labels.shape[0]]
        raw += [(region.sample(a), region.sample(b), int(labels[a])) for a, b in zip(changes, changes[1:])]
    anonymous = [s for s in dict.fromkeys(s for _, _, s in raw) if s not in names]
    letters = {s: _letters(i) for i, s in enumerate(anonymous)}
    return [SpeakerTurn(a, b, names[s] if s in names else letters[s]) for a, b, s in raw if b > a]


def _letters(index: int) -> str:
    """A, B, ..., Z, AA, AB, ..."""
    return _letters(index // 26 - 1) + ascii_uppercase[index % 26] if index >= 26 else ascii_uppercase[index]


def merge_turns(turns: list[SpeakerTurn], max_samples: int = MAX_CLIP_SAMPLES) -> list[SpeakerTurn]:
    """Consecutive turns of one speaker joined (the pause between them included) while the whole fits `max_samples`:
    the clips `chunking_strategy` auto transcribes, each one speaker's; server_vad keeps the turns as they are."""
    merged: list[SpeakerTurn] = []
    for turn in turns:
        last = merged[-1] if merged else None
        if last is not None and last.speaker == turn.speaker and turn.end - last.start <= max_samples:
            merged[-1] = SpeakerTurn(last.start, turn.end, turn.speaker)
        else:
            merged.append(turn)
    return merged
