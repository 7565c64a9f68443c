"""Who is who: pieces of speech grouped into speakers, and speakers matched to known voices.

Average-linkage agglomerative clustering on cosine distance, stopped early (over-splitting is cheap to mend);
then clusters whose centroids are at least `merge` alike become one (`merge_similar`, the calibrated threshold), so
the number of speakers is found rather than given. Known speakers' references name the clusters they match
one-to-one, where alike enough (`match`); the rest stay anonymous.
"""

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment


def cluster(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """[n] cluster index (0, 1, ...) of each of n unit-length embeddings; merging stops at cosine distance
    `threshold` between the average members of two clusters."""
    if embeddings.shape[0] < 2:
        return np.zeros(embeddings.shape[0], np.int64)
    tree = linkage(embeddings.astype(np.float64), method="average", metric="cosine")
    labels = fcluster(tree, t=threshold, criterion="distance")
    return np.unique(labels, return_inverse=True)[1]


def centroids(embeddings: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """[count, dims] unit-length mean of each label's embeddings (zero for a label with none)."""
    sums = np.zeros((count, embeddings.shape[1]), np.float64)
    np.add.at(sums, labels, embeddings)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(norms > 0, norms, 1)).astype(np.float32)


def merge_similar(embeddings: np.ndarray, labels: np.ndarray, similarity: float) -> np.ndarray:
    """Labels renumbered 0.. after merging, closest first, every two clusters whose centroids are at least
    `similarity` alike (a centroid of many windows is far steadier than the windows the tree was built on)."""
    labels = np.unique(labels, return_inverse=True)[1]
    while labels.max() > 0:
        centres = centroids(embeddings, labels, int(labels.max()) + 1)
        alike = centres @ centres.T - 2 * np.eye(centres.shape[0])
        a, b = np.unravel_index(int(alike.argmax()), alike.shape)
        if alike[a, b] < similarity:
            break
        labels = np.unique(np.where(labels == max(a, b), min(a, b), labels), return_inverse=True)[1]
    return labels


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
