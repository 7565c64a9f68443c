"""Where the speaker changes inside a stretch of speech with no pause.

First guess (before anyone's voice is known): at each boundary between windows, the cosine distance between the
mean of the CONTEXT windows before it and of those after it; a peak above `change` splits the region, so the
clustering sees single-speaker pieces. Final answer (once the speakers' centroids are known): each window is
labelled with the speaker it resembles most, a switch between windows costing `switch`, by Viterbi over the
region; averages of many windows tell voices apart far better than two windows do.
"""

import numpy as np

from server.audio.diarization.windows import Region

CONTEXT = 3  # windows each side of a boundary (2.4 s)


def pieces(region: Region, change: float) -> list[list[int]]:
    """The region's windows, split into runs at the peaks of the distance across the boundaries between them."""
    embeddings = region.embeddings
    count = embeddings.shape[0]
    distance = np.zeros(count + 1)  # at the boundary before window j
    for j in range(1, count):
        before = embeddings[max(0, j - CONTEXT) : j].mean(axis=0)
        after = embeddings[j : j + CONTEXT].mean(axis=0)
        distance[j] = 1.0 - before @ after / (np.linalg.norm(before) * np.linalg.norm(after))
    cuts = [j for j in range(1, count) if distance[j] > change and distance[j] >= distance[j - 1]
            and distance[j] >= distance[j + 1]]
    bounds = [0] + cuts + [count]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]


def relabel(regions: list[Region], centres: np.ndarray, switch: float) -> np.ndarray:
    """[windows of all regions] the speaker (row of `centres`) of every window, region by region."""
    return np.concatenate([viterbi(r.embeddings @ centres.T, switch) for r in regions])


def viterbi(scores: np.ndarray, switch: float) -> np.ndarray:
    """[windows] labels maximising the summed scores ([windows, speakers]) less `switch` per change of label."""
    count, speakers = scores.shape
    total = scores[0].copy()
    back = np.zeros((count, speakers), np.int64)
    for w in range(1, count):
        stay_or_switch = total[None, :] - switch * (1 - np.eye(speakers))  # [to, from]
        back[w] = stay_or_switch.argmax(axis=1)
        total = stay_or_switch.max(axis=1) + scores[w]
    labels = np.zeros(count, np.int64)
    labels[-1] = int(total.argmax())
    for w in range(count - 1, 0, -1):
        labels[w - 1] = back[w, labels[w]]
    return labels
