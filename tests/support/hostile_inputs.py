"""A generated corpus of hostile and odd audio (truncated, corrupt, lying headers, odd widths, rates and channel
counts), and the check that an error is in OpenAI's shape with nothing internal in it."""

import io
import struct
import wave

import av
import numpy as np

from tests.support.audio_samples import FORMATS, encode, tone

OK, BAD, TOO_LARGE = {200}, {400}, {413}
UNDECODABLE = BAD  # as OpenAI answers audio it cannot decode (a 415 before)


def _wav_int(samples: np.ndarray, width: int, rate: int = 16_000) -> bytes:
    """[channels, n] float -> integer PCM WAV of 1, 2, 3 or 4 bytes per sample, any channel count."""
    channels, _ = samples.shape
    scaled = np.clip(samples.T, -1, 1)
    if width == 1:
        raw = ((scaled * 127) + 128).astype(np.uint8).tobytes()
    else:
        ints = (scaled * (2 ** (8 * width - 1) - 1)).astype("<i4")
        raw = ints.reshape(-1, 1).view(np.uint8)[:, :width].tobytes()  # the low bytes of each little-endian int
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels), w.setsampwidth(width), w.setframerate(rate)
        w.writeframes(raw)
    return out.getvalue()


def _wav_header(rate: int = 16_000, bits: int = 16, data: bytes = b"\0" * 3200, claimed: int | None = None) -> bytes:
    """A PCM WAV written byte by byte, so its header can say what the samples are not."""
    block = (bits + 7) // 8
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * block, block, bits)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", claimed or len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _wav_float(samples: np.ndarray, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def _corrupt(data: bytes) -> bytes:
    middle = bytearray(data)
    for i in range(len(middle) // 3, len(middle) // 3 + 64):
        middle[i] ^= 0x5A
    return bytes(middle)


def upload_cases() -> list[tuple[str, bytes, str, set[int]]]:
    rng = np.random.default_rng(7)
    cases: list[tuple[str, bytes, str, set[int]]] = []
    for fmt in sorted(FORMATS):
        good = encode(tone(1.0, seed=3), fmt)
        cases += [
            (f"{fmt}-truncated-header", good[:24], fmt, BAD | UNDECODABLE),
            (f"{fmt}-truncated-half", good[: len(good) // 2], fmt, OK | BAD | UNDECODABLE),
            (f"{fmt}-corrupted", _corrupt(good), fmt, OK | BAD | UNDECODABLE),
            (f"{fmt}-random-bytes", rng.bytes(4096), fmt, UNDECODABLE),
        ]
    cases += [
        ("zero-length", b"", "wav", BAD),
        ("one-sample", _wav_int(np.zeros((1, 1)), 2), "wav", BAD),
        ("header-only-wav", _wav_int(np.zeros((1, 0)), 2), "wav", BAD),
        ("nan-and-inf-samples", _wav_float(np.array([np.nan, np.inf, -np.inf, 0.5] * 4000)), "wav", OK),
        ("float32-wav", _wav_float(tone(1.0)[0]), "wav", OK),
        ("hour-of-silence-flac", encode(np.zeros((1, 16_000 * 3600), np.float32), "flac"), "flac", BAD),
        ("text-file", b"hello, this is not audio\n" * 10, "txt", UNDECODABLE),
        ("png-image", b"\x89PNG\r\n\x1a\n" + rng.bytes(512), "png", UNDECODABLE),
        ("oversized-upload", b"\0" * (9 * 2**20), "wav", TOO_LARGE),
    ]
    cases += [(name, data, "wav", expected) for name, data, expected, _, _ in AUDIO_EDGES]
    cases += [(f"{8 * w}-bit-wav", _wav_int(tone(1.0), w), "wav", OK) for w in (1, 2, 3, 4)]
    cases += [(f"{r}-hz", _wav_int(tone(1.0, rate=r), 2, r), "wav", OK) for r in (8_000, 22_050, 44_100, 96_000, 192_000)]
    cases += [(f"{c}-channels", _wav_int(tone(0.5, channels=c), 2), "wav", OK) for c in range(1, 9)]
    return cases


# What OpenAI refuses, and headers that lie: (name, file, status, error code, words the message must hold)
AUDIO_EDGES = [
    ("0.05-s", _wav_int(tone(0.05), 2), BAD, "audio_too_short", "minimum is 0.1 s"),
    ("1-hz-header", _wav_header(rate=1, data=b"\1" * 200), BAD, "invalid_audio", "1 Hz"),
    ("7-bit-samples", _wav_header(bits=7), UNDECODABLE, "invalid_audio", "7-bit"),
    ("4-gb-claimed-over-100-bytes", _wav_header(data=b"\1" * 100, claimed=0xFFFF_FFF0), BAD, "invalid_audio",
     "claims 4294967280 bytes"),
]


def assert_openai_error(response) -> None:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in error["message"] and "/site-packages/" not in error["message"]
