"""Bytes of any container/codec FFmpeg knows -> float32 mono 16 kHz samples."""

import base64
import binascii
import io
import re
import struct
from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from server.audio.clip import MIN_CLIP_SAMPLES, SAMPLE_RATE

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S)


class EmptyAudioError(ValueError):
    """The input holds no audio samples (400)."""


class UndecodableAudioError(ValueError):
    """The input is not audio FFmpeg can decode (400)."""


class AudioTooLongError(ValueError):
    """The audio is longer than the server accepts (400)."""


class AudioTooShortError(ValueError):
    """Less than 0.1 s of audio, which OpenAI refuses too (400 audio_too_short)."""


class InvalidAudioError(ValueError):
    """The file says something about its audio that cannot be true (400)."""


MIN_SAMPLE_RATE = 1_000  # no recording of speech has fewer samples a second: such a header is wrong or hostile
_PCM_BITS = (8, 16, 24, 32)  # what WAV's integer PCM holds; FFmpeg would read 7 bits as 8, 12 as 16
# What streaming WAV writers leave in the data size they could not know: FFmpeg on a pipe writes 0x7FFFF000
_UNKNOWN_SIZES = (0, 0x7FFF_F000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF)


def decode_audio(data: bytes | BinaryIO, max_seconds: float = float("inf")) -> np.ndarray:
    """Decode the first audio stream, downmixed to mono and resampled to 16 kHz by libswresample.

    Decoding stops as soon as the audio passes `max_seconds`, so a small file that unpacks to hours costs
    no more memory than the limit allows.
    """
    blocks = list(audio_blocks(data, max_seconds))
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def audio_blocks(data: bytes | BinaryIO, max_seconds: float = float("inf")) -> Iterator[np.ndarray]:
    """The audio as consecutive float32 blocks (one decoded frame each), read as it is decoded.

    Memory stays that of one block whatever the length, so an hour-long upload spooled to disk is never held
    whole. Errors come from the first block: undecodable or empty input fails before any block is yielded, and
    audio longer than `max_seconds` fails as soon as its container says so, or else when decoding passes it.
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    size = source.seek(0, io.SEEK_END)
    if size == 0:
        raise EmptyAudioError("the audio file is empty")
    source.seek(0)
    _check_wav_header(source, size)
    limit = f"this server's limit of {max_seconds:g} s"
    blocks = _decode_with_pyav(source, max_samples=max_seconds * SAMPLE_RATE, limit=limit)
    try:
        first = next(blocks, None)
    except (AudioTooLongError, InvalidAudioError):
        raise
    except Exception as exc:  # whatever FFmpeg makes of hostile bytes, it is not audio we can use
        raise UndecodableAudioError(f"could not decode the audio ({_reason(exc)})") from exc
    if first is None:
        raise EmptyAudioError("the audio file contains no samples")
    yield first
    total = first.shape[0]
    try:
        for block in blocks:
            total += block.shape[0]
            yield block
    except (AudioTooLongError, InvalidAudioError):
        raise
    except Exception as exc:
        raise UndecodableAudioError(f"could not decode the audio ({_reason(exc)})") from exc
    if total < MIN_CLIP_SAMPLES:
        raise AudioTooShortError(f"the audio is {total / SAMPLE_RATE:.3f} s long; the minimum is "
                                 f"{MIN_CLIP_SAMPLES / SAMPLE_RATE:g} s")


def _check_wav_header(source: BinaryIO, size: int) -> None:
    """Refuse what a WAV header claims and cannot hold: integer samples of a width PCM does not have, and over twice
    the samples the file carries (forged; a recording cut off near its end still decodes what it has)."""
    head = source.read(4096)
    source.seek(0)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    position = 12
    while position + 8 <= len(head):
        chunk, length = head[position : position + 4], struct.unpack_from("<I", head, position + 4)[0]
        if chunk == b"fmt " and position + 24 <= len(head):
            tag, bits = struct.unpack_from("<H", head, position + 8)[0], struct.unpack_from("<H", head, position + 22)[0]
            if tag == 1 and bits not in _PCM_BITS:
                raise UndecodableAudioError(f"the WAV file says its samples are {bits}-bit integers; PCM has 8, 16, "
                                            "24 or 32 bits")
        elif chunk == b"data":
            present = size - position - 8
            if length not in _UNKNOWN_SIZES and length > max(2 * present, present + 2**20):
                raise InvalidAudioError(f"the WAV header claims {length} bytes of samples but the file holds "
                                        f"{present}: its header is wrong")
            return
        position += 8 + length + (length & 1)


def _decode_with_pyav(source: BinaryIO, max_samples: float, limit: str) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    total = 0.0
    with av.open(source, mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        if stream.sample_rate and stream.sample_rate < MIN_SAMPLE_RATE:
            raise InvalidAudioError(f"the file claims a sample rate of {stream.sample_rate} Hz; below "
                                    f"{MIN_SAMPLE_RATE} Hz it cannot hold speech (is its header wrong?)")
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        if declared * SAMPLE_RATE > max_samples:  # refuse at once what the container itself says is too long
            raise AudioTooLongError(f"the audio lasts {declared:.0f} s, longer than {limit}")
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                if out.samples:
                    yield _clean(out.to_ndarray().reshape(-1))
            total += frame.samples * SAMPLE_RATE / (frame.sample_rate or SAMPLE_RATE)
            if total > max_samples:
                raise AudioTooLongError(f"the audio is longer than {limit}")
        for out in resampler.resample(None):
            if out.samples:
                yield _clean(out.to_ndarray().reshape(-1))


def _clean(samples: np.ndarray) -> np.ndarray:
    # Corrupt or float files can carry NaN/inf; the encoder would turn them into NaN logits.
    return np.nan_to_num(samples.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)


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


def _reason(exc: Exception) -> str:
    """FFmpeg's own words without errno or file name (which would only say '<none>' for bytes)."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
