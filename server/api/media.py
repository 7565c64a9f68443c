"""Audio inputs of requests -> samples, with each decoding failure mapped to its HTTP status."""

import numpy as np

from server.api.errors import APIError, bad_request
from server.api.protocol import AudioURLPart, InputAudioPart
from server.audio.decode import (
    EmptyAudioError,
    InvalidAudioURLError,
    UndecodableAudioError,
    decode_audio,
    decode_base64_audio,
    decode_data_url,
)


def decode_upload(data: bytes, param: str = "file") -> np.ndarray:
    return _mapped(lambda: decode_audio(data), param)


def decode_part_audio(part: InputAudioPart | AudioURLPart, param: str) -> np.ndarray:
    if isinstance(part, InputAudioPart):
        return _mapped(lambda: decode_base64_audio(part.input_audio.data), param)
    url = part.audio_url.url
    if not url.startswith("data:"):
        raise bad_request(
            "audio_url must be a data: URL (data:audio/wav;base64,...); fetching remote or file URLs is disabled",
            param=param, code="unsupported_url",
        )
    return _mapped(lambda: decode_data_url(url), param)


def _mapped(decode, param: str) -> np.ndarray:
    try:
        return decode()
    except UndecodableAudioError as exc:
        raise APIError(415, f"{exc}; send wav, mp3, flac, ogg/opus, m4a/aac, webm or mp4", param, "invalid_audio") from exc
    except (EmptyAudioError, InvalidAudioURLError) as exc:
        raise bad_request(str(exc), param=param, code="invalid_audio") from exc
