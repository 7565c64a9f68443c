"""`bench --diarization --calibrate`: where diarization's two thresholds come from (DiarizationOptions' defaults).

On the calibration conversations only (CALIBRATION_VOICES; the held-out voices are never looked at):
- `merge`: every value on a grid is tried; the default is the middle of the widest run of values at which every
  conversation's number of speakers comes out right.
- `match`: a known speaker's reference (6 s of its own speech) against each true speaker's centroid in the
  conversation (its windows that lie wholly inside its turns): the default sits midway between the most alike
  pair of different speakers and the least alike pair of the same speaker.
"""

from dataclasses import replace

import numpy as np

from server.audio.diarization.clustering import centroids
from server.audio.diarization.diarize import Diarizer
from server.audio.diarization.frontend import HOP
from server.audio.diarization.windows import Region
from server.bench.conversation import CALIBRATION_SCENES, Conversation
from server.bench.diarization import said, truth
from server.bench.speaker_score import speaker_accuracy

MERGE_GRID = np.round(np.arange(0.80, 0.975, 0.01), 2)


def calibrate(diarizer: Diarizer) -> dict:
    rendered = [(scene, scene.render()) for scene in CALIBRATION_SCENES]
    regions = [diarizer.regions(conversation.samples) for _, conversation in rendered]
    sweep = []
    for merge in MERGE_GRID:
        trial = Diarizer(diarizer.detector, diarizer.encoder, replace(diarizer.options, merge=float(merge)))
        turns = [trial.turns(r) for r in regions]
        sweep.append({"merge": float(merge),
                      "counts_right": sum(len({t.speaker for t in found}) == len(scene.voices)
                                          for (scene, _), found in zip(rendered, turns)),
                      "mean": float(np.mean([speaker_accuracy(truth(c), said(found))
                                             for (_, c), found in zip(rendered, turns)]))})
    same, different = _reference_similarities(diarizer, rendered, regions)
    return {"conversations": len(rendered), "sweep": sweep, "merge": _middle_of_widest_run(sweep, len(rendered)),
            "match_same_min": min(same), "match_different_max": max(different),
            "match": round((min(same) + max(different)) / 2, 2)}


def _middle_of_widest_run(sweep: list[dict], conversations: int) -> float | None:
    runs, current = [], []
    for row in sweep:
        current = current + [row["merge"]] if row["counts_right"] == conversations else []
        runs.append(current)
    widest = max(runs, key=len)
    return round(float(np.median(widest)), 2) if widest else None


def _reference_similarities(diarizer: Diarizer, rendered: list, regions: list[list[Region]]):
    same, different = [], []
    for (scene, conversation), scene_regions in zip(rendered, regions):
        centres = _true_centroids(conversation, scene_regions)
        for index, (name, samples) in enumerate(scene.references(len(scene.voices))):
            reference = diarizer.known_speaker(index, name, samples).embedding
            for speaker, centre in zip(conversation.speakers, centres):
                (same if speaker == name else different).append(float(reference @ centre))
    return same, different


def _true_centroids(conversation: Conversation, regions: list[Region]) -> np.ndarray:
    """Each true speaker's centroid (in order of first speech) over the windows wholly inside its turns."""
    embeddings, labels = [], []
    for region in regions:
        for (a, b), embedding in zip(region.windows, region.embeddings):
            start, end = (region.start + a * HOP) / 16000, (region.start + b * HOP) / 16000
            owner = [t.speaker for t in conversation.turns if t.start <= start and end <= t.end]
            if owner:
                embeddings.append(embedding)
                labels.append(conversation.speakers.index(owner[0]))
    return centroids(np.array(embeddings), np.array(labels), len(conversation.speakers))


def table(result: dict) -> str:
    lines = [f"Calibration on {result['conversations']} conversations of calibration voices only.", "",
             "| merge | conversations with the right number of speakers | mean accuracy |", "|---|---|---|"]
    lines += [f"| {r['merge']:.2f} | {r['counts_right']} of {result['conversations']} | {r['mean']:.1%} |"
              for r in result["sweep"]]
    lines += ["", f"merge: {result['merge']} (the middle of the widest run with every count right)",
              f"match: {result['match']} (same speaker at least {result['match_same_min']:.3f}, different speakers at "
              f"most {result['match_different_max']:.3f})"]
    return "\n".join(lines) + "\n"
