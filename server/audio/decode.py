"""Bytes of any container/codec FFmpeg knows -> float32 mono 16 kHz samples."""

import base64
import binascii
import io
import re

import av
import numpy as np

SAMPLE_RATE = 16_000

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S)


class EmptyAudioError(ValueError):
    """The input holds no audio samples (400)."""


class UndecodableAudioError(ValueError):
    """The input is not audio FFmpeg can decode (415)."""


class AudioTooLongError(ValueError):
    """The audio is longer than the server accepts (400)."""


def decode_audio(data: bytes, max_seconds: float = float("inf")) -> np.ndarray:
    """Decode the first audio stream, downmixed to mono and resampled to 16 kHz by libswresample.

    Decoding stops as soon as the audio passes `max_seconds`, so a small file that unpacks to hours costs
    no more memory than the limit allows.
    """
    if not data:
        raise EmptyAudioError("the audio file is empty")
    try:
        samples = _decode_with_pyav(data, max_samples=max_seconds * SAMPLE_RATE)
    except AudioTooLongError:
        raise
    except Exception as exc:  # whatever FFmpeg makes of hostile bytes, it is not audio we can use
        raise UndecodableAudioError(f"could not decode the audio ({_reason(exc)})") from exc
    if samples.size == 0:
        raise EmptyAudioError("the audio file contains no samples")
    # Corrupt or float files can carry NaN/inf; the encoder would turn them into NaN logits.
    return np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)


def _decode_with_pyav(data: bytes, max_samples: float) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            total += frame.samples * SAMPLE_RATE / (frame.sample_rate or SAMPLE_RATE)
            if total > max_samples:
                raise AudioTooLongError(f"the audio is longer than this server's limit of {max_samples / SAMPLE_RATE:g} s")
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


def decode_base64(data: str) -> bytes:
    """The bytes of base64 audio (OpenAI's `input_audio.data`)."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidAudioURLError("audio data is not valid base64") from exc


class InvalidAudioURLError(ValueError):
    """A malformed data URL or base64 payload (400)."""


def data_url_bytes(url: str) -> bytes:
    """The bytes of a `data:audio/...;base64,...` URL."""
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise InvalidAudioURLError("audio_url must be a base64 data URL: data:audio/<format>;base64,<data>")
    return decode_base64(match.group("data"))


def duration_seconds(samples: np.ndarray) -> float:
    return samples.shape[0] / SAMPLE_RATE


def _reason(exc: Exception) -> str:
    """FFmpeg's own words without errno or file name (which would only say '<none>' for bytes)."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
