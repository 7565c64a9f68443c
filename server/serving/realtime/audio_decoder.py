"""Audio the client appends (base64 audio/pcm at 24 kHz, audio/pcmu or audio/pcma at 8 kHz) -> 16 kHz float32.

Resampled by libswresample, as uploaded files are (server.audio.decode), one resampler per session kept across
appends, so audio cut into any pieces comes out as one pass over the whole would give it.
"""

import base64
import binascii

import av
import numpy as np

from server.audio.clip import SAMPLE_RATE

RATES = {"audio/pcm": 24_000, "audio/pcmu": 8_000, "audio/pcma": 8_000}


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


G711 = {"audio/pcmu": _ulaw_table(), "audio/pcma": _alaw_table()}  # byte -> 16-bit sample (ITU-T G.711)


class InvalidAudio(ValueError):
    """Not base64, or not audio of the session's format."""


def decode_base64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidAudio("audio is not valid base64") from exc


class AudioDecoder:
    """One session's input audio in its format -> 16 kHz mono float32, append after append."""

    def __init__(self, format_type: str) -> None:
        self.format = format_type
        self.rate = RATES[format_type]
        self._odd = b""  # a 16-bit sample split between two appends
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def seconds(self, data: bytes) -> float:
        return len(data) / (2 if self.format == "audio/pcm" else 1) / self.rate

    def push(self, data: bytes) -> np.ndarray:
        return self._resample(self._samples(data))

    def flush(self) -> np.ndarray:
        """What the resampler still holds (a few ms): the end of a committed buffer. It starts afresh after."""
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(None) if f.samples]
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._odd = b""
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _samples(self, data: bytes) -> np.ndarray:
        if self.format != "audio/pcm":
            return G711[self.format][np.frombuffer(data, np.uint8)]
        data = self._odd + data
        whole = len(data) // 2 * 2
        self._odd = data[whole:]
        return np.frombuffer(data[:whole], "<i2")

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        if not samples.size:
            return np.zeros(0, np.float32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = self.rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame) if f.samples]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
