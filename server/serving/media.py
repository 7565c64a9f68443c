"""Audio inputs of requests -> samples: uploads, base64, data URLs, and (when the operator allows) remote or
local files. Each failure becomes its HTTP status here: a 400 naming the input (`file`, or the content part's path),
as OpenAI answers audio it cannot use, whatever is wrong with it."""

import asyncio
import threading
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import numpy as np

from server.audio.chunking import Clip, SpeechClips, VadOptions
from server.audio.clip import SAMPLE_RATE
from server.audio.decode import (
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    InvalidAudioError,
    InvalidAudioURLError,
    UndecodableAudioError,
    audio_blocks,
    data_url_bytes,
    decode_audio,
    decode_base64,
)
from server.audio.vad import SpeechDetector
from server.config import Settings
from server.protocol.chat import AudioURLPart, FilePart, InputAudioPart
from server.protocol.errors import bad_request

MAX_REDIRECTS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class MediaPolicy:
    max_seconds: float
    remote_hosts: frozenset[str]
    local_dir: Path | None
    max_fetch_bytes: int
    fetch_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "MediaPolicy":
        local = settings.allow_local_audio_dir.resolve() if settings.allow_local_audio_dir else None
        return cls(settings.max_audio_seconds, frozenset(h.lower() for h in settings.allow_remote_audio_host), local,
                   int(settings.remote_audio_max_mb * 2**20), settings.remote_audio_timeout_s)


class UploadClips:
    """An uploaded file's speech, in clips of at most 30 s, in order, decoded and cut as they are asked for.

    Decoding and voice-activity detection run a clip at a time in a worker thread, so an hour-long upload (spooled
    to disk by the form parser) is never held whole and the first clip is ready after its first 30 s. Bad audio
    fails on the first clip, before any answer is sent. `seconds` is how much audio was decoded.
    """

    def __init__(self, upload: BinaryIO, policy: MediaPolicy, detector: SpeechDetector, options: VadOptions | None,
                 param: str = "file") -> None:
        self._clips = SpeechClips(audio_blocks(upload, policy.max_seconds), detector, options)
        self._param = param

    @property
    def seconds(self) -> float:
        return self._clips.samples / SAMPLE_RATE

    def __aiter__(self) -> AsyncIterator[Clip]:
        return in_worker(iter(self._clips), self._param)


async def in_worker(iterator: Generator[T, None, None], param: str = "file") -> AsyncIterator[T]:
    """The items of a blocking generator (decoding, voice-activity detection), each computed in a worker thread, its
    audio failures as HTTP errors naming `param`."""
    lock = threading.Lock()  # a cancelled await leaves its thread running: closing waits for it

    def step() -> T | None:
        with lock:
            return _mapped(lambda: next(iterator, None), param)

    def close() -> None:
        with lock:
            iterator.close()  # closes the decoder, also when the caller stopped early

    try:
        while (item := await asyncio.to_thread(step)) is not None:
            yield item
    finally:
        await asyncio.to_thread(close)


def upload_blocks(upload: BinaryIO, policy: MediaPolicy, param: str = "file") -> Iterator[np.ndarray]:
    """An upload's samples block by block as they are decoded (run it in a worker thread), its failures as HTTP
    errors naming `param`."""
    blocks = audio_blocks(upload, policy.max_seconds)
    try:
        while (block := _mapped(lambda: next(blocks, None), param)) is not None:
            yield block
    finally:
        blocks.close()


async def part_audio(part: InputAudioPart | AudioURLPart | FilePart, policy: MediaPolicy, param: str) -> np.ndarray:
    if isinstance(part, InputAudioPart):
        return await _decode(_mapped(lambda: decode_base64(part.input_audio.data), param), policy, param)
    if isinstance(part, FilePart):
        return await _decode(_file_bytes(part, param), policy, param)
    url = part.audio_url.url
    scheme = urlsplit(url).scheme.lower()
    if scheme == "data":
        data = _mapped(lambda: data_url_bytes(url), param)
    elif scheme in ("http", "https"):
        data = await _fetch(url, policy, param)
    elif scheme == "file":
        data = await asyncio.to_thread(_read_local, url, policy, param)
    else:
        raise bad_request("audio_url must be a data:, http(s): or file: URL", param=param, code="unsupported_url")
    return await _decode(data, policy, param)


def _file_bytes(part: FilePart, param: str) -> bytes:
    data = part.file.file_data
    if data is None:
        raise bad_request(f"{param}: a file part needs file_data (a data:audio/...;base64 URL or base64 audio); this "
                          "server keeps no uploaded files, so file_id is not accepted", param=param)
    if not data.startswith("data:"):
        return _mapped(lambda: decode_base64(data), param)
    mime = data[5:].split(";", 1)[0].split(",", 1)[0].lower()
    if mime and not mime.startswith("audio/") and mime not in ("application/octet-stream", "video/mp4", "video/webm"):
        raise bad_request(f"{param}: this model hears audio; a {mime} file cannot be read (send audio/*)", param=param,
                          code="unsupported_file")
    return _mapped(lambda: data_url_bytes(data), param)


async def _decode(data: bytes, policy: MediaPolicy, param: str) -> np.ndarray:
    return await asyncio.to_thread(_mapped, lambda: decode_audio(data, policy.max_seconds), param)


async def _fetch(url: str, policy: MediaPolicy, param: str) -> bytes:
    """GET an allowed host's audio, following redirects only among allowed hosts, within size and time limits."""
    try:
        async with asyncio.timeout(policy.fetch_timeout_s), httpx.AsyncClient(follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                host = (urlsplit(url).hostname or "").lower()
                if host not in policy.remote_hosts:
                    raise bad_request(f"fetching audio from {host or 'that URL'!r} is not allowed on this server",
                                      param=param, code="url_not_allowed")
                async with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise bad_request(f"fetching the audio_url answered HTTP {response.status_code}", param=param)
                    return await _read_limited(response, policy.max_fetch_bytes, param)
            raise bad_request("the audio_url redirects too many times", param=param)
    except TimeoutError as exc:
        raise bad_request(f"fetching the audio_url took longer than {policy.fetch_timeout_s:g} s", param=param) from exc
    except httpx.HTTPError as exc:
        raise bad_request(f"could not fetch the audio_url ({type(exc).__name__})", param=param) from exc


async def _read_limited(response: httpx.Response, limit: int, param: str) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise bad_request(f"the audio_url is larger than this server's limit of {limit / 2**20:g} MiB",
                              param=param, code="audio_too_large")
    return bytes(body)


def _read_local(url: str, policy: MediaPolicy, param: str) -> bytes:
    if policy.local_dir is None:
        raise bad_request("file: URLs are not allowed on this server", param=param, code="url_not_allowed")
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not path.is_relative_to(policy.local_dir):
        raise bad_request("that file is outside the folder this server may read", param=param, code="url_not_allowed")
    if not path.is_file():
        raise bad_request("no such file in the allowed folder", param=param)
    size = path.stat().st_size
    if size > policy.max_fetch_bytes:
        raise bad_request(f"the file is larger than this server's limit of {policy.max_fetch_bytes / 2**20:g} MiB",
                          param=param, code="audio_too_large")
    return path.read_bytes()


def _mapped(decode, param: str):
    try:
        return decode()
    except UndecodableAudioError as exc:
        raise bad_request(f"{exc}; send wav, mp3, flac, ogg/opus, m4a/aac, webm or mp4", param=param,
                          code="invalid_audio") from exc
    except AudioTooShortError as exc:
        raise bad_request(str(exc), param=param, code="audio_too_short") from exc
    except (EmptyAudioError, InvalidAudioURLError, AudioTooLongError, InvalidAudioError) as exc:
        raise bad_request(str(exc), param=param, code="invalid_audio") from exc
