"""A committed turn -> its transcript, through the same engine path as /v1/audio/transcriptions.

Each turn goes to the engine as soon as it ends (over 30 s it is cut at pauses, as files are) and its deltas are
sent as the tokens come; but `completed` (and the item's `done`) wait for the turns before it, so items complete
in the order they were spoken even when a later, shorter one finishes first.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import numpy as np

from server.audio.chunking import Clip, SpeechClips
from server.audio.vad import SpeechDetector
from server.metrics import Metrics
from server.protocol.audio import TranscriptionRequest
from server.protocol.errors import APIError
from server.protocol.realtime import event, user_audio_item
from server.serving.formats import TranscribedClip, join_texts, transcription_logprobs, transcription_usage
from server.serving.generation import timed_out
from server.serving.transcription import TranscriptionServing

logger = logging.getLogger(__name__)


class Transcriber:
    def __init__(self, serving: TranscriptionServing, detector: SpeechDetector, metrics: Metrics,
                 emit: Callable[[dict], None]) -> None:
        self.serving = serving
        self.detector = detector
        self.metrics = metrics
        self.emit = emit
        self.tasks: set[asyncio.Task] = set()
        self._last: asyncio.Event | None = None  # set once the latest turn's completion was sent

    def start(self, item_id: str, samples: np.ndarray, request: TranscriptionRequest, logprobs: bool,
              ended_at: float, on_done: Callable[[str, str], None] | None = None) -> asyncio.Task:
        """Transcribe a turn (`ended_at`: time.perf_counter() when its speech ended). `on_done(item_id, text)` runs
        when its transcript is final (and was sent)."""
        previous, done = self._last, asyncio.Event()
        self._last = done
        task = asyncio.create_task(self._run(item_id, samples, request, logprobs, ended_at, previous, done, on_done))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.metrics.realtime_utterances.inc()
        return task

    async def cancel_all(self) -> None:
        """The client went away: stop every turn's engine requests now."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _run(self, item_id: str, samples: np.ndarray, request: TranscriptionRequest, logprobs: bool,
                   ended_at: float, previous: asyncio.Event | None, done: asyncio.Event,
                   on_done: Callable[[str, str], None] | None) -> None:
        clips: list[TranscribedClip] = []
        texts: list[str] = []
        failure: APIError | None = None
        try:
            async with asyncio.timeout(self.serving.timeout_s or None), \
                    aclosing(self.serving.transcribe_clips(request, self._clips(samples))) as pieces:
                async for piece in pieces:
                    if isinstance(piece, TranscribedClip):
                        clips.append(piece)
                    else:
                        texts.append(piece)
                        self.emit(event("conversation.item.input_audio_transcription.delta", item_id=item_id,
                                        content_index=0, delta=piece))
        except APIError as exc:
            failure = exc
        except TimeoutError:
            failure = timed_out(self.serving.timeout_s)
        except Exception:
            logger.exception("transcribing item %s failed", item_id)
            failure = APIError(500, f"transcribing item {item_id} failed on the server", code="server_error")
        if previous is not None:
            await previous.wait()
        try:
            transcript = join_texts([clip.text for clip in clips])
            self._finish(item_id, transcript, clips, logprobs, failure)
            if failure is None:
                self.metrics.realtime_transcript_latency.observe(time.perf_counter() - ended_at)
                if on_done is not None:
                    on_done(item_id, transcript)
        finally:
            done.set()

    def _finish(self, item_id: str, transcript: str, clips: list[TranscribedClip], logprobs: bool,
                failure: APIError | None) -> None:
        if failure is not None:
            body = failure.body()["error"]
            self.emit(event("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                            error={k: body[k] for k in ("type", "code", "message", "param")}))
            self.emit(event("conversation.item.done", item=user_audio_item(item_id, "completed", None)))
            return
        completed = event("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                          transcript=transcript, usage=transcription_usage(clips).model_dump())
        if logprobs:
            completed["logprobs"] = [lp.model_dump() for lp in transcription_logprobs(clips)]
        self.emit(completed)
        self.emit(event("conversation.item.done", item=user_audio_item(item_id, "completed", transcript)))

    async def _clips(self, samples: np.ndarray) -> AsyncIterator[Clip]:
        """The turn whole when it fits the encoder's 30 s, else cut at its pauses as an upload is."""
        clips = await asyncio.to_thread(lambda: list(SpeechClips(iter([samples]), self.detector, None)))
        for clip in clips:
            yield clip

