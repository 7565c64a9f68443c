"""POST /v1/audio/transcriptions and /v1/audio/translations: audio -> clips -> the engine -> text, subtitles or events.

Audio of any length: the upload is decoded and cut at pauses as it goes (server.audio.chunking), each clip of at
most 30 s becomes its own request to the engine, a window of them in flight at once so they batch, and their texts
are joined in order. One async stream (`_transcribed`) carries each clip's text as it comes and then the finished
clip; the whole answer and the event stream both read it. Each clip is one segment, timed where its speech is.
"""

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from server.audio.chunking import Clip, Span, VadOptions
from server.audio.clip import MAX_CLIP_SAMPLES, SAMPLE_RATE
from server.audio.vad import SpeechDetector
from server.config import Settings
from server.engine.conversation import audio_question
from server.engine.engine import Engine
from server.engine.interface import ModelInfo
from server.engine.request import EngineError
from server.engine.sequence import RequestStream
from server.metrics import Metrics
from server.protocol.audio import ServerVad, TranscriptionRequest, TranscriptTextDelta, TranscriptTextDone
from server.serving import formats
from server.serving.formats import Answer, EventStream, TranscribedClip, sse, sse_error
from server.serving.framing import FrameStripper
from server.serving.generation import Completion, Endpoint, engine_failed, prepare, submit, timed_out
from server.serving.language_detection import Detection, LanguageDetector, wanted
from server.serving.media import UploadClips
from server.serving.prompts import Task, answer_language, instruction
from server.serving.sampling import transcription_params


@dataclass
class ClipRequest:
    """A clip of the upload, in the engine."""

    span: Span  # where it is in the original audio, in samples
    input_tokens: int
    audio_tokens: int
    stream: RequestStream

    def transcribed(self, completion: Completion, text: str, frame: FrameStripper,
                    end_ids: frozenset[int]) -> TranscribedClip:
        """What is kept once it is done: not its stream, whose prompt holds the audio features (~1.5 MB). `text` is
        the answer without the `frame` that came off it: the frame's tokens leave too, as does the end id that ended
        the answer, so that `tokens` and `logprobs` hold the text returned."""
        last = len(completion.token_ids) - 1
        kept = [i for i in completion.tokens_outside(frame.removed())
                if not (i == last and completion.token_ids[i] in end_ids and completion.finish_reason == "stop")]
        logprobs = [completion.logprobs[i] for i in kept] if completion.logprobs else []
        return TranscribedClip(self.span.start / SAMPLE_RATE, self.span.end / SAMPLE_RATE, self.span.speech,
                               self.input_tokens, self.audio_tokens, len(completion.token_ids), text,
                               [completion.token_ids[i] for i in kept], logprobs, frame.language)


class TranscriptionServing(Endpoint):
    def __init__(self, engine: Engine, info: ModelInfo, metrics: Metrics, settings: Settings,
                 detector: SpeechDetector) -> None:
        super().__init__(engine, info, metrics, settings, detector)
        # Clips of one upload in flight at once: enough to fill a batch, few enough to leave room for others
        # and to keep an hour of audio from sitting in the queue as features.
        self.window = settings.max_batch_size
        self.end_ids = frozenset(info.eos_token_ids)
        self.languages = LanguageDetector(engine, metrics, self.timeout_s)

    async def tokens_per_clip(self) -> int:
        """KV-cache tokens one 30 s transcription takes at most: its real prompt (audio, chat template and
        instruction) plus --default-max-tokens."""
        silence = np.zeros(MAX_CLIP_SAMPLES, np.float32)
        request = TranscriptionRequest(model="-")
        question = instruction(request, "transcribe", base=self.info.prompt_format == "base")
        prompt = await prepare(self.engine, audio_question(question), [silence])
        return prompt.num_tokens + self.default_max_tokens

    async def create(self, request: TranscriptionRequest, audio: BinaryIO, task: Task) -> Answer | EventStream:
        upload = UploadClips(audio, self.media, self.detector, vad_options(request.chunking_strategy))
        clips: AsyncIterable[Clip] = upload
        detection: Detection | None = None  # the spoken language, asked of the model beside the first clip
        if wanted(request, task, base=self.info.prompt_format == "base"):
            clips, detection = self.languages.beside(upload, request)
        submitted = self._submitted(request, task, clips)
        try:
            first = await anext(submitted, None)  # bad audio fails here, while a status code can still say so
        except BaseException:
            await submitted.aclose()
            if detection:
                detection.cancel()
            raise
        transcribed = self._transcribed(first, submitted, lambda: FrameStripper(answer_language(request, task),
                                                                               request.prompt))
        if request.streamed:
            return EventStream(self._events(transcribed, upload, task, detection))
        try:
            async with asyncio.timeout(self.timeout_s or None), aclosing(transcribed):
                done = [item async for item in transcribed if isinstance(item, TranscribedClip)]
                languages = await detection.languages() if detection else None
        except TimeoutError as exc:
            raise timed_out(self.timeout_s) from exc
        finally:
            if detection:
                detection.cancel()
        self.metrics.audio_seconds.labels(task).inc(upload.seconds)
        return formats.transcription(request, task, upload.seconds, done, languages)

    async def transcribe_clips(self, request: TranscriptionRequest,
                               clips: AsyncIterable[Clip]) -> AsyncIterator[str | TranscribedClip]:
        """The pipeline of `create` over clips cut elsewhere (the realtime API's turns): each clip's text as it
        comes, then the finished clip. Closing it early cancels the clips' engine requests."""
        submitted = self._submitted(request, "transcribe", clips)
        try:
            first = await anext(submitted, None)
        except BaseException:
            await submitted.aclose()
            raise
        stripper = lambda: FrameStripper(answer_language(request, "transcribe"), request.prompt)  # noqa: E731
        async with aclosing(self._transcribed(first, submitted, stripper)) as transcribed:
            async for item in transcribed:
                yield item

    async def _transcribed(self, first: ClipRequest | None, submitted: AsyncIterator[ClipRequest],
                           stripper: Callable[[], FrameStripper]) -> AsyncIterator[str | TranscribedClip]:
        """Clip after clip, in order: its text as the engine produces it, less the model's frame (joined to what
        came before as formats.join_texts joins), then the finished clip."""
        said = False  # some text has been given already
        try:
            clip = first
            while clip is not None:
                completion, frame, text = Completion(), stripper(), ""
                async for delta in _unframed(clip.stream, completion, frame):
                    yield (" " if not text and said else "") + delta
                    text, said = text + delta, True
                yield clip.transcribed(completion, text, frame, self.end_ids)
                clip = await anext(submitted, None)
        finally:
            await submitted.aclose()

    async def _events(self, transcribed: AsyncIterator[str | TranscribedClip], upload: UploadClips, task: Task,
                      detection: Detection | None) -> AsyncIterator[str]:
        """transcript.text.delta events as the text comes, then transcript.text.done with usage (and the detected
        languages when `languages` asked for them), then [DONE]."""
        clips: list[TranscribedClip] = []
        text = ""
        try:
            async with asyncio.timeout(self.timeout_s or None), aclosing(transcribed):
                async for item in transcribed:
                    if isinstance(item, TranscribedClip):
                        clips.append(item)
                    else:
                        text += item
                        yield sse(TranscriptTextDelta(delta=item).model_dump(exclude_none=True))
                languages = await detection.languages() if detection else None
        except TimeoutError:
            yield sse_error(timed_out(self.timeout_s))
            return
        except Exception as exc:  # headers are sent: the error travels as an event the SDK raises
            yield sse_error(exc)
            return
        finally:
            if detection:
                detection.cancel()
        self.metrics.audio_seconds.labels(task).inc(upload.seconds)
        found = formats.detected(languages) if languages is not None else None
        done = TranscriptTextDone(text=text, usage=formats.transcription_usage(clips), languages=found)
        yield sse(done.model_dump(exclude_none=True))
        yield sse("[DONE]")

    async def _submitted(self, request: TranscriptionRequest, task: Task,
                         upload: AsyncIterable[Clip]) -> AsyncIterator[ClipRequest]:
        """Submitted clips in order, each as soon as it is submitted, while a task keeps cutting and submitting the
        next ones: at most `window` clips of this upload are in the engine (a slot frees when the caller moves on)."""
        conversation = audio_question(instruction(request, task, base=self.info.prompt_format == "base"))
        slots = asyncio.Semaphore(self.window)
        queue: asyncio.Queue[ClipRequest | Exception | None] = asyncio.Queue()

        async def submit_all() -> None:
            try:
                async with aclosing(aiter(upload)) as clips:
                    async for clip in clips:
                        await slots.acquire()
                        queue.put_nowait(await self._submit(request, conversation, clip))
                queue.put_nowait(None)
            except Exception as exc:  # bad audio, a full queue, ...: the caller raises it in order
                queue.put_nowait(exc)

        producer = asyncio.create_task(submit_all())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                try:
                    yield item
                finally:
                    slots.release()
        finally:
            producer.cancel()  # the caller gave up (error, disconnect, deadline) or all is done
            await asyncio.gather(producer, return_exceptions=True)
            while not queue.empty():  # submitted but never read: free their slots in the engine now
                if isinstance(item := queue.get_nowait(), ClipRequest):
                    item.stream.cancel()

    async def _submit(self, request: TranscriptionRequest, conversation: list[dict], clip: Clip) -> ClipRequest:
        prompt = await prepare(self.engine, conversation, [clip.samples])
        params = transcription_params(request, prompt, self.info, self.default_max_tokens,
                                      clip.samples.shape[0] / SAMPLE_RATE)
        stream = submit(self.engine, self.metrics, prompt, params)
        return ClipRequest(clip.span, prompt.num_tokens, prompt.audio_tokens, stream)


async def _unframed(stream: RequestStream, completion: Completion, frame: FrameStripper) -> AsyncIterator[str]:
    """One clip's text as the engine produces it, without the model's frame; `completion` adds up the events."""
    try:
        async for event in stream:
            completion.add(event)
            if delta := frame.push(event.text):
                yield delta
    except EngineError as exc:
        raise engine_failed(exc, stream) from exc
    finally:
        stream.cancel()
    if rest := frame.finish():
        yield rest


def vad_options(strategy: str | ServerVad | None) -> VadOptions | None:
    """OpenAI's `chunking_strategy` -> how the audio is cut (None: whole if it fits one clip)."""
    if isinstance(strategy, ServerVad):
        return VadOptions(threshold=strategy.threshold, silence_ms=strategy.silence_duration_ms,
                          padding_ms=strategy.prefix_padding_ms, merge=False)
    return VadOptions() if strategy == "auto" else None
