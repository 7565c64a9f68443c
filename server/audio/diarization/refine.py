"""Where exactly one speaker hands over to the next with no pause: within the two windows labelled differently,
the boundary that best separates short windows resembling the first speaker from those resembling the second.

Windows of SHORT frames are embedded every STEP frames across the pair; each candidate boundary is scored by the
window just before it (first speaker's centroid minus the second's) and the one just after (the reverse). Short
windows are noisy alone but only need to choose between two known centroids, which they do reliably.
"""

import numpy as np

from server.audio.diarization.encoder import SpeakerEncoder
from server.audio.diarization.windows import Region

SHORT = 40  # frames (0.4 s)
STEP = 20  # candidate boundaries 0.2 s apart


def frame_labels(regions: list[Region], speakers: np.ndarray, centres: np.ndarray,
                 encoder: SpeakerEncoder) -> list[np.ndarray]:
    """Each region's [frames] speaker, the windows' labels with every switch between windows moved to its best
    boundary."""
    labels, switches, first = [], [], 0
    for index, region in enumerate(regions):
        own = speakers[first : first + len(region.windows)]
        first += len(region.windows)
        labels.append(np.repeat(own, [b - a for a, b in region.windows]))
        switches += [(index, region.windows[k][0], region.windows[k + 1][1], int(own[k]), int(own[k + 1]))
                     for k in range(len(own) - 1) if own[k] != own[k + 1]]
    starts = sorted({(i, s) for i, lo, hi, _, _ in switches for s in range(lo, hi - SHORT + 1, STEP)})
    embedded = encoder.embed([regions[i].window(s, s + SHORT) for i, s in starts])
    similarity = dict(zip(starts, embedded @ centres.T))
    for i, lo, hi, before, after in switches:
        scores = {p: _score(similarity, i, p, before, after) for p in range(lo + SHORT, hi - SHORT + 1, STEP)}
        if scores:
            best = max(scores, key=scores.get)
            labels[i][lo:best], labels[i][best:hi] = before, after
    return labels


def _score(similarity: dict, region: int, boundary: int, before: int, after: int) -> float:
    left, right = similarity[(region, boundary - SHORT)], similarity[(region, boundary)]
    return float(left[before] - left[after] + right[after] - right[before])
