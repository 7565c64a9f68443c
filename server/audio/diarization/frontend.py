"""What the GE2E speaker encoder hears: 40-band mel power frames, 25 ms windows every 10 ms, of 16 kHz audio.

These are resemblyzer's hyper-parameters (its hparams.py) and its librosa call, `melspectrogram(n_fft=400,
hop_length=160, n_mels=40)`: a periodic Hann window, frames centred on every 160th sample (the signal padded
with half a window of zeros), power (not log) spectra through Slaney-normalised mel filters. The mel values
scale with loudness, so the encoder was trained on speech brought up to -30 dBFS; `loudness_gain` gives the
factor that does the same to a window of frames.
"""

from functools import cache

import numpy as np
import scipy.fft

from server.audio.clip import SAMPLE_RATE

N_FFT = 400  # 25 ms
HOP = 160  # 10 ms: one frame per 160 samples
MELS = 40
TARGET_DBFS = -30.0


def mel_frames(samples: np.ndarray) -> np.ndarray:
    """[1 + len // HOP, MELS] float32 mel power frames of float32 samples."""
    padded = np.pad(samples.astype(np.float32, copy=False), N_FFT // 2)
    count = 1 + (padded.shape[0] - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:count]
    spectrum = scipy.fft.rfft(frames * _window(), axis=1)  # complex64; several times numpy.fft's speed here
    power = np.square(spectrum.real, dtype=np.float32) + np.square(spectrum.imag, dtype=np.float32)
    return power @ _mel_filters().T


def frame_energy(samples: np.ndarray) -> np.ndarray:
    """Mean square of the samples each frame stands for (its HOP samples), for loudness over any frame range."""
    count = 1 + samples.shape[0] // HOP
    padded = np.zeros(count * HOP, np.float64)
    padded[: samples.shape[0]] = samples
    return np.mean(np.square(padded.reshape(count, HOP)), axis=1)


def loudness_gain(energy: np.ndarray) -> float:
    """The power factor that brings speech of this mean-square energy to TARGET_DBFS (mel frames scale by it)."""
    mean = float(np.mean(energy)) if energy.size else 0.0
    if mean <= 1e-12:  # digital silence: nothing to bring up
        return 1.0
    return 10 ** (TARGET_DBFS / 10) / mean


@cache
def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


@cache
def _mel_filters() -> np.ndarray:
    """[MELS, N_FFT // 2 + 1] triangular filters on the Slaney mel scale, each of unit area (librosa's default)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), MELS + 2))
    bins = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return (filters * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above
_LINEAR_HZ_PER_MEL = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz < _LOG_START_HZ:
        return hz / _LINEAR_HZ_PER_MEL
    return _LOG_START_MEL + np.log(hz / _LOG_START_HZ) / _LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = mels * _LINEAR_HZ_PER_MEL
    log = _LOG_START_HZ * np.exp(_LOG_STEP * (mels - _LOG_START_MEL))
    return np.where(mels >= _LOG_START_MEL, log, linear)
