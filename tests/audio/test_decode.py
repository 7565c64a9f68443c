"""Audio bytes of every accepted container -> float32 mono 16 kHz, and clear errors for the rest."""

import io
import struct
import wave

import numpy as np
import pytest

from server.audio.decode import (
    AudioTooLongError,
    EmptyAudioError,
    InvalidAudioError,
    InvalidAudioURLError,
    UndecodableAudioError,
    data_url_bytes,
    decode_audio,
)
from tests.support.audio_samples import FORMATS, encode, tone


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_decodes_to_mono_16k(fmt):
    stereo_44k = tone(2.0, seed=1, rate=44_100, channels=2)
    samples = decode_audio(encode(stereo_44k, fmt, rate=44_100))
    assert samples.dtype == np.float32 and samples.ndim == 1
    # lossy codecs add encoder delay/padding of a few ms; the duration must still be the clip's
    assert abs(samples.shape[0] / 16_000 - 2.0) < 0.1
    assert 0.05 < float(np.abs(samples).max()) <= 1.5


def test_resampling_keeps_the_pitch():
    t = np.arange(48_000) / 48_000
    samples = decode_audio(encode((0.5 * np.sin(2 * np.pi * 1000 * t))[None].astype(np.float32), "wav", 48_000))
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16_000 / samples.shape[0] - 1000) < 5


def test_empty_bytes_are_empty_audio():
    with pytest.raises(EmptyAudioError):
        decode_audio(b"")


def test_a_wav_with_no_samples_is_empty_audio():
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16_000)
    with pytest.raises(EmptyAudioError):
        decode_audio(buffer.getvalue())


@pytest.mark.parametrize("data", [b"not audio at all", b"RIFF\x00\x00\x00\x00WAVEfmt ", bytes(range(256)) * 8])
def test_garbage_is_undecodable(data):
    with pytest.raises(UndecodableAudioError):
        decode_audio(data)


def test_truncated_mp3_decodes_what_is_there_or_fails_cleanly():
    data = encode(tone(2.0), "mp3")[:2000]
    try:
        assert decode_audio(data).shape[0] < 2 * 16_000
    except (UndecodableAudioError, EmptyAudioError):
        pass


def test_data_url_round_trip():
    import base64

    data = encode(tone(1.0), "flac")
    samples = decode_audio(data_url_bytes("data:audio/flac;base64," + base64.b64encode(data).decode()))
    assert abs(samples.shape[0] - 16_000) < 200


@pytest.mark.parametrize("url", ["data:audio/wav,plain", "data:audio/wav;base64,@@@not-base64@@@", "http://x/a.wav"])
def test_bad_data_urls(url):
    with pytest.raises(InvalidAudioURLError):
        data_url_bytes(url)


def test_decoding_stops_at_the_duration_limit():
    with pytest.raises(AudioTooLongError):
        decode_audio(encode(tone(5.0), "flac"), max_seconds=2.0)
    assert decode_audio(encode(tone(1.0), "flac"), max_seconds=2.0).shape[0] > 15_000


def _pcm_wav(samples: int, claimed: int) -> bytes:
    data = b"\1\0" * samples
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", claimed) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("claimed", [0x7FFF_F000, 0xFFFF_FFFF, 0], ids=["ffmpeg-pipe", "all-ones", "zero"])
def test_the_sizes_streaming_writers_leave_still_decode(claimed):
    assert decode_audio(_pcm_wav(16_000, claimed)).shape[0] == 16_000


def test_a_recording_cut_off_near_its_end_decodes_what_it_has():
    assert decode_audio(_pcm_wav(12_000, claimed=32_000)).shape[0] == 12_000


def test_a_header_claiming_far_more_than_the_file_is_refused():
    with pytest.raises(InvalidAudioError, match="claims 64000000 bytes"):
        decode_audio(_pcm_wav(16_000, claimed=64_000_000))
