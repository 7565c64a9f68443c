"""Test audio made here: tones with noise (distinct per seed) and their encodings in every container we accept."""

import io

import av
import numpy as np

# container format, codec, file suffix
FORMATS = {
    "wav": ("wav", "pcm_s16le"),
    "mp3": ("mp3", "libmp3lame"),
    "flac": ("flac", "flac"),
    "ogg": ("ogg", "libopus"),
    "m4a": ("ipod", "aac"),
    "webm": ("webm", "libopus"),
    "mp4": ("mp4", "aac"),
}


def tone(seconds: float, seed: int = 0, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    """[channels, n] float32: a chord that changes with the seed, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    freqs = rng.uniform(120, 1200, size=3)
    mono = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 4 + 0.02 * rng.standard_normal(t.size)
    return np.repeat(mono[None, :], channels, axis=0).astype(np.float32)


def encode(samples: np.ndarray, fmt: str = "wav", rate: int = 16_000) -> bytes:
    """Encode [channels, n] float32 samples with FFmpeg (through PyAV) into `fmt`."""
    container_format, codec = FORMATS[fmt]
    channels = samples.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    out_rate = 48_000 if codec == "libopus" else rate
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=out_rate)
        for resampled in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def wav(seconds: float, seed: int = 0) -> bytes:
    return encode(tone(seconds, seed), "wav")
