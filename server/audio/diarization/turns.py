"""Speaker turns: stretches of the audio with one speaker, labelled, grouped and cut into clips for transcription."""

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from string import ascii_uppercase

import numpy as np

from server.audio.chunking import Clip, SampleBlocks, Span
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


def merge_turns(turns: list[SpeakerTurn], max_samples: int = MAX_CLIP_SAMPLES,
                max_pause: int | None = None) -> list[SpeakerTurn]:
    """Consecutive turns of one speaker joined (the pause between them included) while the whole fits `max_samples`
    and, with `max_pause`, the pause is shorter than that: the clips of a diarized transcription, each one
    speaker's (`chunking_strategy` auto: no pause limit; server_vad: its silence_duration_ms)."""
    merged: list[SpeakerTurn] = []
    for turn in turns:
        last = merged[-1] if merged else None
        if (last is not None and last.speaker == turn.speaker and turn.end - last.start <= max_samples
                and (max_pause is None or turn.start - last.end < max_pause)):
            merged[-1] = SpeakerTurn(last.start, turn.end, turn.speaker)
        else:
            merged.append(turn)
    return merged


def turn_clips(blocks: Iterable[np.ndarray], turns: list[SpeakerTurn]) -> Iterator[Clip]:
    """The audio of each turn (ordered, not overlapping), cut from the decoded blocks as they come: memory stays
    that of the longest turn."""
    buffer, pending = SampleBlocks(), deque(turns)
    for block in blocks:
        buffer.append(block)
        while pending and pending[0].end <= buffer.end:
            yield _clip(pending.popleft(), buffer)
        buffer.drop_before(pending[0].start if pending else buffer.end)
    yield from (_clip(turn, buffer) for turn in pending if turn.start < buffer.end)  # audio shorter than said


def _clip(turn: SpeakerTurn, buffer: SampleBlocks) -> Clip:
    end = min(turn.end, buffer.end)
    return Clip(Span(turn.start, end, 1.0), buffer.slice(turn.start, end))
