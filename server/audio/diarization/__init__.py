"""Speaker diarization, offline: who speaks when, as turns labelled A, B, ... or by known speakers' names.

- frontend.py: audio -> the 40-band mel frames the speaker encoder takes
- encoder.py: the GE2E speaker encoder (ge2e.onnx, from resemblyzer's wheel) on onnxruntime -> 256-d embeddings
- windows.py: speech regions cut into 0.8 s windows and embedded
- segmentation.py: where a region's speaker may change; Viterbi relabelling against speaker centroids
- clustering.py: centroids, merging alike clusters (the number of speakers), matching known speakers
- refine.py: a change of speaker with no pause placed to ~0.1 s
- references.py: known speakers' names and reference clips checked (errors name the field and index)
- turns.py: the labelled turns, turns joined into clips for transcription and cut from decoded audio
- diarize.py: the Diarizer that runs it all
"""

from server.audio.diarization.diarize import Audio, DiarizationOptions, Diarizer
from server.audio.diarization.encoder import SpeakerEncoder
from server.audio.diarization.references import (
    MAX_KNOWN_SPEAKERS,
    KnownSpeaker,
    KnownSpeakerError,
    check_known_speakers,
)
from server.audio.diarization.turns import SpeakerTurn, merge_turns, turn_clips

__all__ = ["MAX_KNOWN_SPEAKERS", "Audio", "DiarizationOptions", "Diarizer", "KnownSpeaker", "KnownSpeakerError",
           "SpeakerEncoder", "SpeakerTurn", "check_known_speakers", "merge_turns", "turn_clips"]
