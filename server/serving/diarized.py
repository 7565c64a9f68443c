"""POST /v1/audio/transcriptions with response_format=diarized_json (OpenAI's gpt-4o-transcribe-diarize): who said
what, as segments each of one speaker.

1. Known speakers' references (`known_speaker_names[]`, `known_speaker_references[]`) are decoded and embedded
   first, so a bad one fails before the upload is read.
2. The upload is decoded and diarized (server.audio.diarization: speech regions, speaker embeddings, clustering)
   in a worker of the diarization pool, never on the event loop or the model's thread; only the speech's mel
   frames are kept. Its VAD is the one the transcription's clips come from: it runs once.
3. The upload is decoded again and the model's clips are cut from the speaker turns (chunking_strategy `auto`:
   one speaker's turns joined up to 30 s; `server_vad`: joined across pauses shorter than its silence_duration_ms),
   so a segment never spans two speakers; the clips go through the transcription pipeline, in order.
"""

import asyncio
import threading
from collections.abc import AsyncIterator, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import BinaryIO

import numpy as np

from server.audio.clip import SAMPLE_RATE
from server.audio.decode import AudioTooLongError, InvalidAudioURLError, data_url_bytes, decode_audio
from server.audio.diarization import (
    Diarizer,
    KnownSpeaker,
    KnownSpeakerError,
    SpeakerTurn,
    check_known_speakers,
    merge_turns,
    turn_clips,
)
from server.audio.diarization.references import MAX_REFERENCE_SECONDS
from server.protocol.audio import ServerVad, TranscriptionRequest, TranscriptTextDelta, TranscriptTextDone
from server.protocol.errors import bad_request
from server.serving import formats
from server.serving.formats import Answer, EventStream, TranscribedClip, sse, sse_error
from server.serving.generation import timed_out
from server.serving.media import in_worker, upload_blocks
from server.serving.prompts import Task, instruction
from server.serving.transcription import TranscriptionServing


class DiarizedServing:
    def __init__(self, transcription: TranscriptionServing, diarizer: Diarizer, workers: int) -> None:
        self.transcription = transcription
        self.diarizer = diarizer
        self.media = transcription.media
        self.timeout_s = transcription.timeout_s
        # Diarizations at once, each on one core: more wait here rather than take the model's cores.
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="diarization")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def create(self, request: TranscriptionRequest, audio: BinaryIO, task: Task) -> Answer | EventStream:
        if task != "transcribe":
            raise bad_request("response_format: diarized_json is for transcriptions; translations answer json, text, "
                              "srt, verbose_json or vtt", param="response_format")
        instruction(request, task)  # a bad language or hint is a 400 before the audio is read
        deadline = asyncio.get_running_loop().time() + (self.timeout_s or float("inf"))
        try:
            async with asyncio.timeout_at(deadline if self.timeout_s else None):
                known = await self._known_speakers(request)
                turns, seconds = await self._in_pool(self._diarize, audio, known, request.chunking_strategy)
        except TimeoutError as exc:
            raise timed_out(self.timeout_s) from exc
        speakers = [turn.speaker for turn in turns]
        clips = in_worker(turn_clips(upload_blocks(audio, self.media), turns))
        transcribed = self.transcription.transcribe_clips(request, clips)
        if request.streamed:
            return EventStream(self._events(transcribed, speakers, seconds, deadline))
        try:
            async with asyncio.timeout_at(deadline if self.timeout_s else None), aclosing(transcribed):
                done = [item async for item in transcribed if isinstance(item, TranscribedClip)]
        except TimeoutError as exc:
            raise timed_out(self.timeout_s) from exc
        self.transcription.metrics.audio_seconds.labels(task).inc(seconds)
        return Answer(formats.diarized(seconds, done, speakers).model_dump())

    async def _known_speakers(self, request: TranscriptionRequest) -> list[KnownSpeaker]:
        names, references = request.known_speaker_names, request.known_speaker_references
        try:
            check_known_speakers(names, references)
            return [await self._in_pool(self._known_speaker, i, name, url)
                    for i, (name, url) in enumerate(zip(names, references))]
        except KnownSpeakerError as exc:
            raise bad_request(str(exc), param=exc.param, code="invalid_value") from exc

    def _known_speaker(self, index: int, name: str, url: str, stop: threading.Event) -> KnownSpeaker:
        """A reference decoded (any accepted format) and embedded; each fault a KnownSpeakerError naming its index."""
        field, longest = "known_speaker_references", 2 * MAX_REFERENCE_SECONDS
        try:
            samples = decode_audio(data_url_bytes(url), longest)
        except InvalidAudioURLError as exc:
            raise KnownSpeakerError(field, index, "a reference must be a base64 data URL of audio: "
                                    "data:audio/<format>;base64,<data>") from exc
        except AudioTooLongError as exc:
            raise KnownSpeakerError(field, index, f"a reference must hold 2 to {MAX_REFERENCE_SECONDS:g} s of audio; "
                                    f"this one is longer than {longest:g} s") from exc
        except ValueError as exc:  # undecodable, empty, shorter than 0.1 s, a header that lies
            raise KnownSpeakerError(field, index, f"{exc}") from exc
        return self.diarizer.known_speaker(index, name, samples)

    def _diarize(self, audio: BinaryIO, known: list[KnownSpeaker], strategy: str | ServerVad,
                 stop: threading.Event) -> tuple[list[SpeakerTurn], float]:
        """The turns of the upload, joined into the clips `strategy` asks for, and the audio's length in seconds."""
        decoded = [0]
        threshold = strategy.threshold if isinstance(strategy, ServerVad) else None
        turns = self.diarizer.diarize(_counted(upload_blocks(audio, self.media), decoded, stop), known, threshold)
        pause = round(strategy.silence_duration_ms * SAMPLE_RATE / 1000) if isinstance(strategy, ServerVad) else None
        return merge_turns(turns, max_pause=pause), decoded[0] / SAMPLE_RATE

    async def _in_pool(self, work, *args):
        """`work(*args, stop)` in the diarization pool; `stop` is set if the caller goes away (a disconnect, the
        deadline), and the work ends at its next block instead of running on for nothing."""
        stop = threading.Event()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, work, *args, stop)
        finally:
            stop.set()

    async def _events(self, transcribed: AsyncIterator[str | TranscribedClip], speakers: list[str], seconds: float,
                      deadline: float) -> AsyncIterator[str]:
        """Deltas (each with its segment's id) as the text comes, a transcript.text.segment event as each segment
        ends, in order, then transcript.text.done with usage, then [DONE]."""
        clips: list[TranscribedClip] = []
        text = ""
        try:
            async with asyncio.timeout_at(deadline if self.timeout_s else None), aclosing(transcribed):
                async for item in transcribed:
                    if isinstance(item, TranscribedClip):
                        yield sse(formats.diarized_segment(len(clips), item, speakers[len(clips)]).model_dump())
                        clips.append(item)
                    else:
                        text += item
                        delta = TranscriptTextDelta(delta=item, segment_id=formats.segment_id(len(clips)))
                        yield sse(delta.model_dump())
        except TimeoutError:
            yield sse_error(timed_out(self.timeout_s))
            return
        except Exception as exc:  # headers are sent: the error travels as an event the SDK raises
            yield sse_error(exc)
            return
        self.transcription.metrics.audio_seconds.labels("transcribe").inc(seconds)
        usage = formats.transcription_usage(clips)
        yield sse(TranscriptTextDone(text=text, usage=usage).model_dump(exclude_none=True))
        yield sse("[DONE]")


class Stopped(Exception):
    """The request went away while its audio was being diarized."""


def _counted(blocks: Generator[np.ndarray, None, None], decoded: list[int],
             stop: threading.Event) -> Iterator[np.ndarray]:
    """`blocks` as they come, their samples counted into decoded[0]; the work ends once `stop` is set."""
    try:
        for block in blocks:
            if stop.is_set():
                raise Stopped
            decoded[0] += block.shape[0]
            yield block
    finally:
        blocks.close()
