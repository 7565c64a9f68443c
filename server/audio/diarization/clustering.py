"""Who is who: pieces of speech grouped into speakers, and speakers matched to known voices.

Agglomerative clustering with centroid linkage: the two clusters whose centroids (unit-length means of their
windows' embeddings) are most alike merge, until no two are `merge` alike (the calibrated threshold), so the number
of speakers is found rather than given. Known speakers' references name the clusters they match one-to-one, where
alike enough (`match`); the rest stay anonymous.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment


def centroids(embeddings: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """[count, dims] unit-length mean of each label's embeddings (zero for a label with none)."""
    return _unit(_sums(embeddings, labels, count))


def merge_similar(embeddings: np.ndarray, labels: np.ndarray, similarity: float) -> np.ndarray:
    """Labels renumbered 0.. after merging, most alike first, every two clusters whose centroids are at least
    `similarity` alike (centroid linkage: a centroid of many windows is far steadier than any window)."""
    labels = np.unique(labels, return_inverse=True)[1]
    sums = _sums(embeddings, labels, int(labels.max()) + 1)
    alike = _unit(sums) @ _unit(sums).T
    np.fill_diagonal(alike, -np.inf)
    while True:
        a, b = np.unravel_index(int(alike.argmax()), alike.shape)
        if alike[a, b] < similarity:
            break
        sums[a] += sums[b]
        labels[labels == b] = a
        alike[b, :] = alike[:, b] = -np.inf
        alike[a, :] = alike[:, a] = np.where(np.isinf(alike[a]), -np.inf, _unit(sums) @ _unit(sums[a]))
        alike[a, a] = -np.inf
    return np.unique(labels, return_inverse=True)[1]


def match_known(centres: np.ndarray, references: np.ndarray, match: float) -> list[int | None]:
    """For each cluster centre, the index of the reference it is named after, or None: references and clusters
    paired one-to-one so that the pairs are as alike as can be, a pair kept if at least `match` alike."""
    named: list[int | None] = [None] * centres.shape[0]
    if references.shape[0] == 0 or centres.shape[0] == 0:
        return named
    similarity = centres @ references.T
    for cluster_index, reference in zip(*linear_sum_assignment(similarity, maximize=True)):
        if similarity[cluster_index, reference] >= match:
            named[cluster_index] = int(reference)
    return named


def _sums(embeddings: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    sums = np.zeros((count, embeddings.shape[1]), np.float64)
    for label in np.unique(labels):
        sums[label] = embeddings[labels == label].sum(axis=0)
    return sums


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1)).astype(np.float32)
