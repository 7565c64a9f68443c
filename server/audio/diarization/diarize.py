"""Who spoke when in 16 kHz mono audio: speaker turns labelled A, B, ... in order of first speech, or by name
where a known speaker's reference matches.

1. Speech regions between pauses (Silero VAD), cut into back-to-back 0.8 s windows, each embedded (GE2E).
2. Regions split where the windows before and after a boundary differ most (a speaker may follow another with
   no pause); the pieces merged, most alike first, while their centroids are alike enough (a calibrated
   threshold), so the number of speakers is found; clusters with too little speech to be a speaker are dropped.
3. Every window relabelled with the speaker centroid it resembles most (Viterbi, a cost per switch), twice,
   the centroids recomputed in between: a centroid of many windows tells voices apart far better than a window.
4. Known speakers name the clusters their references match; other clusters stay anonymous.
5. Where the label switches between two windows (no pause there), short windows place the boundary to ~0.1 s;
   at a pause the turn ends where the speech does.

Runs on the calling thread (a worker: never the event loop or the model's thread): numpy, and the encoder on
one onnxruntime thread of its own, which releases the GIL.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from server.audio.chunking import SampleBlocks, SpeechSpans, VadOptions
from server.audio.diarization.clustering import centroids, match_known, merge_similar
from server.audio.diarization.encoder import DIMENSIONS, SpeakerEncoder
from server.audio.diarization.references import KnownSpeaker, check_reference, check_reference_speech
from server.audio.diarization.refine import frame_labels
from server.audio.diarization.segmentation import pieces, relabel
from server.audio.diarization.turns import SpeakerTurn, label_turns
from server.audio.diarization.windows import WINDOW_FRAMES, Region, embed, speech_region
from server.audio.vad import SpeechDetector

Audio = np.ndarray | Iterable[np.ndarray]  # 16 kHz mono float32 samples, whole or as consecutive blocks


@dataclass(frozen=True)
class DiarizationOptions:
    merge: float = 0.89
    """Similarity of two clusters' centroids at and above which they are one speaker (calibrated on synthetic
    voices: `bench --diarization --calibrate`, docs/diarization.md)."""
    match: float = 0.9
    """Least similarity of a cluster's centroid to a known speaker's reference for it to take that name (calibrated
    the same way)."""
    change: float = 0.15
    """Distance across a boundary between windows (up to 2.4 s each side) that splits a region before clustering."""
    switch: float = 0.1
    """Similarity a window gives up to change speaker when windows are relabelled (Viterbi)."""
    min_speaker_seconds: float = 3.0
    """A cluster with less speech than this, or than `min_speaker_share`, is not a speaker of its own, known or
    not: such small clusters gather a few windows of one phrase said alike, or of two voices at once. Their windows
    go to the speakers they resemble most."""
    min_speaker_share: float = 0.02
    """... or than this share of all the speech (a long recording makes more such clusters)."""
    vad: VadOptions = field(default_factory=lambda: VadOptions(silence_ms=150, padding_ms=100, merge=False))
    """Speech regions: a pause of 150 ms ends one (a turn change with a pause then needs no voice to be found)."""


class Diarizer:
    """Holds the models (shared by all requests; each call keeps its own state)."""

    def __init__(self, detector: SpeechDetector, encoder: SpeakerEncoder, options: DiarizationOptions) -> None:
        self.detector, self.encoder, self.options = detector, encoder, options

    def known_speaker(self, index: int, name: str, samples: np.ndarray) -> KnownSpeaker:
        """The voice in a reference clip (raises KnownSpeakerError naming `known_speaker_references[index]`)."""
        check_reference(index, samples)
        regions = self.regions(samples)
        check_reference_speech(index, sum(r.end - r.start for r in regions))
        embeddings = np.concatenate([r.embeddings for r in regions])
        return KnownSpeaker(name, centroids(embeddings, np.zeros(len(embeddings), np.int64), 1)[0])

    def diarize(self, audio: Audio, known: Sequence[KnownSpeaker] = (), threshold: float | None = None
                ) -> list[SpeakerTurn]:
        """The speaker turns of the audio, in order; none where no one speaks. `threshold`: the speech probability
        that starts speech, if not the options' (OpenAI's server_vad threshold)."""
        return self.turns(self.regions(audio, threshold), known)

    def regions(self, audio: Audio, threshold: float | None = None) -> list[Region]:
        """The costly half: the speech regions and their windows' embeddings. `audio` is the samples, or blocks of
        them as they are decoded: only the mel frames of speech are kept (16 kB a second), not the samples."""
        regions, buffer = [], SampleBlocks()
        vad_options = self.options.vad if threshold is None else replace(self.options.vad, threshold=threshold)
        spans, vad = SpeechSpans(vad_options), self.detector.stream()
        for block in [audio] if isinstance(audio, np.ndarray) else audio:
            buffer.append(block)
            regions += [speech_region(s.start, buffer.slice(s.start, s.end)) for s in spans.feed(*vad.feed(block))]
            buffer.drop_before(spans.keep_from)
        done = spans.feed(*vad.flush()) + spans.finish(buffer.end)
        return embed(regions + [speech_region(s.start, buffer.slice(s.start, s.end)) for s in done], self.encoder)

    def turns(self, regions: list[Region], known: Sequence[KnownSpeaker] = ()) -> list[SpeakerTurn]:
        """The cheap half: who speaks in each window, and where exactly each turn changes hands."""
        if not regions:
            return []
        windows = np.concatenate([r.embeddings for r in regions])
        references = np.array([k.embedding for k in known], np.float32).reshape(len(known), DIMENSIONS)
        centres = self._speakers(regions, windows)
        for _ in range(2):
            speakers = relabel(regions, centres, self.options.switch)
            # relabelled, two clusters may now be alike enough to be one speaker (a voice split at first)
            speakers = merge_similar(windows, speakers, self.options.merge)
            centres = self._large(windows, speakers, int(speakers.max()) + 1)
            speakers = relabel(regions, centres, self.options.switch)  # the windows of any dropped speaker
        matched = match_known(centres, references, self.options.match)
        names = {speaker: known[m].name for speaker, m in enumerate(matched) if m is not None}
        return label_turns(regions, frame_labels(regions, speakers, centres, self.encoder), names)

    def _speakers(self, regions: list[Region], windows: np.ndarray) -> np.ndarray:
        """[speakers, 256] first centroids: the regions' single-speaker pieces, merged while alike, those with too
        little speech dropped."""
        runs, first = [], 0
        for region in regions:
            runs += [[first + w for w in run] for run in pieces(region, self.options.change)]
            first += len(region.windows)
        speakers = np.zeros(len(windows), np.int64)
        for label, run in enumerate(runs):
            speakers[run] = label
        speakers = merge_similar(windows, speakers, self.options.merge)
        return self._large(windows, speakers, int(speakers.max()) + 1)

    def _large(self, windows: np.ndarray, speakers: np.ndarray, count: int) -> np.ndarray:
        """The centroids of the clusters with speech enough to be a speaker (the largest at least)."""
        sizes = np.bincount(speakers, minlength=count)
        seconds = self.options.min_speaker_seconds * 100 / WINDOW_FRAMES  # 100 frames a second
        least = math.ceil(max(seconds, self.options.min_speaker_share * windows.shape[0]))
        return centroids(windows, speakers, count)[sizes >= min(least, sizes.max())]
