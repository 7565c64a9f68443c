"""How well a diarization names the speakers: the share of speech time given the right speaker.

Time is scored in 10 ms steps over the reference's speech only (a label where no one speaks costs nothing; speech
left without a label counts as wrong). Anonymous labels (A, B, ...) are mapped one-to-one onto the true speakers
in the way that scores best (the Hungarian method); a known speaker (one the diarization had a reference for) is
right only under its own name.
"""

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

STEP = 0.01  # seconds


def speaker_accuracy(truth: Sequence[tuple[float, float, str]], hypothesis: Iterable[tuple[float, float, str]],
                     known: Iterable[str] = ()) -> float:
    """Share of `truth`'s speech time that `hypothesis` gives to the right speaker; each is (start, end, speaker)."""
    truth_labels = list(dict.fromkeys(s for _, _, s in truth))
    hypothesis = list(hypothesis)
    hypothesis_labels = list(dict.fromkeys(s for _, _, s in hypothesis))
    end = max([e for _, e, _ in truth] + [e for _, e, _ in hypothesis] + [0.0])
    steps = int(np.ceil(end / STEP)) + 1
    said, heard = _timeline(truth, truth_labels, steps), _timeline(hypothesis, hypothesis_labels, steps)
    speech = said >= 0
    if not speech.any():
        return 1.0
    overlap = np.zeros((len(truth_labels), max(1, len(hypothesis_labels))))
    both = speech & (heard >= 0)
    np.add.at(overlap, (said[both], heard[both]), 1)
    named = set(known)  # a known speaker's time is right only under its name, and its name only on its time
    for row, said_label in enumerate(truth_labels):
        for column, heard_label in enumerate(hypothesis_labels):
            if (said_label in named or heard_label in named) and said_label != heard_label:
                overlap[row, column] = 0
    rows, columns = linear_sum_assignment(overlap, maximize=True)
    return float(overlap[rows, columns].sum() / speech.sum())


def _timeline(turns: Iterable[tuple[float, float, str]], labels: list[str], steps: int) -> np.ndarray:
    """The label index spoken in each step (-1: nobody); a later turn overrides an earlier one where they overlap."""
    line = np.full(steps, -1, np.int64)
    for start, end, speaker in turns:
        line[int(round(start / STEP)) : int(round(end / STEP))] = labels.index(speaker)
    return line
