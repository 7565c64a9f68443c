"""Speaker embeddings: resemblyzer's GE2E encoder (256-d, unit length; cosine similarity compares voices).

The network (a 3-layer LSTM over 40 mel bands, trained on 1.6 s stretches of speech) ships with this package as
`ge2e.onnx`, written by scripts/speaker-encoder from the weights inside resemblyzer 0.1.4's wheel on PyPI
(Apache-2.0, `ge2e-LICENSE.txt`). It runs on onnxruntime, torch-free and offline, like the Silero VAD, on one
thread of its own so the model keeps the cores; one session serves every request (onnxruntime's run is
thread-safe).
"""

from importlib.resources import files

import numpy as np
import onnxruntime

from server.audio.diarization.frontend import MELS

MODEL_FILE = "ge2e.onnx"
DIMENSIONS = 256
BATCH = 128  # windows per call: bounds the LSTM's activations (frames x batch x 256 floats per layer)


class SpeakerEncoder:
    def __init__(self) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        model = files("server.audio.diarization").joinpath(MODEL_FILE).read_bytes()
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def embed(self, windows: list[np.ndarray]) -> np.ndarray:
        """[len(windows), DIMENSIONS] unit-length embeddings of [frames, MELS] mel windows of any lengths >= 1."""
        out = np.zeros((len(windows), DIMENSIONS), np.float32)
        for first in range(0, len(windows), BATCH):
            out[first : first + BATCH] = self._run(windows[first : first + BATCH])
        return out

    def _run(self, windows: list[np.ndarray]) -> np.ndarray:
        lengths = np.array([w.shape[0] for w in windows], np.int32)
        mels = np.zeros((len(windows), int(lengths.max()), MELS), np.float32)
        for row, window in enumerate(windows):
            mels[row, : window.shape[0]] = window
        (embeddings,) = self.session.run(["embeddings"], {"mels": mels, "lengths": lengths})
        return embeddings
