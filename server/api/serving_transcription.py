"""POST /v1/audio/transcriptions and /v1/audio/translations: audio -> instruction -> engine -> text/subtitles.

Audio of any length: the upload is decoded and cut at pauses as it goes (server.audio.chunking), each piece of at
most 30 s becomes its own request to the engine, a window of them in flight at once so they batch, and their texts
are stitched back in order. Each piece is one segment, timed where its speech is in the original audio.
"""

import asyncio
import dataclasses
import math
import zlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import BinaryIO, Literal

from server.api.errors import bad_request
from server.api.generation import Completion, collect, output_budget, prepare, sse, sse_error, submit, timed_out
from server.api.languages import language_name
from server.api.media import MediaPolicy, UploadPieces
from server.api.protocol import (
    DurationUsage,
    InputTokenDetails,
    Segment,
    ServerVad,
    Transcription,
    TranscriptionLogprob,
    TranscriptionRequest,
    TranscriptionUsage,
    VerboseTranscription,
)
from server.api.subtitles import to_srt, to_vtt
from server.audio.chunking import AudioPiece, VadOptions
from server.audio.decode import SAMPLE_RATE
from server.audio.vad import SpeechDetector
from server.config import Settings
from server.engine.engine import Engine, RequestStream
from server.engine.request import SamplingParams

Task = Literal["transcribe", "translate"]

# A transcript holds a few tokens per second of speech; a cap well above that stops runaway repetition loops.
TOKENS_PER_SECOND_CAP = 16
TOKENS_CAP_FLOOR = 32


@dataclass
class Piece:
    start: float
    end: float
    speech: float  # the detector's highest speech probability in the piece
    input_tokens: int
    audio_tokens: int
    stream: RequestStream | None  # None once finished

    def finished(self, completion: Completion) -> "tuple[Piece, Completion]":
        """What is kept of a finished piece: not its stream, whose prompt holds the audio features (~1.5 MB)."""
        return dataclasses.replace(self, stream=None), completion


class TranscriptionServing:
    def __init__(self, engine: Engine, settings: Settings, detector: SpeechDetector) -> None:
        self.engine = engine
        self.detector = detector
        self.default_max_tokens = settings.default_max_tokens
        self.timeout_s = settings.request_timeout_s
        self.media = MediaPolicy.from_settings(settings)
        # Pieces of one upload in flight at once: enough to fill a batch, few enough to leave room for others
        # and to keep an hour of audio from sitting in the queue as features.
        self.window = settings.max_batch_size

    async def create(self, request: TranscriptionRequest, audio: BinaryIO, task: Task) -> str | dict | AsyncIterator[str]:
        upload = UploadPieces(audio, self.media, self.detector, vad_options(request.chunking_strategy))
        pieces = self._pieces(request, task, upload)
        try:
            first = await anext(pieces, None)  # bad audio fails here, while a status code can still say so
        except BaseException:
            await pieces.aclose()
            raise
        if request.stream:
            return self._events(first, pieces, upload, task)
        done: list[tuple[Piece, Completion]] = []
        try:
            async with asyncio.timeout(self.timeout_s or None):
                piece = first
                while piece is not None:
                    done.append(piece.finished(await collect(piece.stream, 0)))
                    piece = await anext(pieces, None)
        except TimeoutError as exc:
            raise timed_out(self.timeout_s) from exc
        finally:
            await pieces.aclose()
        self.engine.metrics.audio_seconds.labels(task).inc(upload.seconds)
        return self._format(request, task, upload.seconds, done)

    async def _pieces(self, request: TranscriptionRequest, task: Task, upload: UploadPieces) -> AsyncIterator[Piece]:
        """Submitted pieces in order, each as soon as it is submitted, while a task keeps cutting and submitting the
        next ones: at most `window` pieces of this upload are in the engine (a slot frees when the caller moves on)."""
        conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": instruction(request, task)}]}]
        slots = asyncio.Semaphore(self.window)
        submitted: asyncio.Queue[Piece | Exception | None] = asyncio.Queue()

        async def submit_all() -> None:
            try:
                async with aclosing(aiter(upload)) as audio_pieces:
                    async for audio in audio_pieces:
                        await slots.acquire()
                        submitted.put_nowait(await self._submit(request, conversation, audio))
                submitted.put_nowait(None)
            except Exception as exc:  # bad audio, a full queue, ...: the caller raises it in order
                submitted.put_nowait(exc)

        producer = asyncio.create_task(submit_all())
        try:
            while (item := await submitted.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                try:
                    yield item
                finally:
                    slots.release()
        finally:
            producer.cancel()  # the caller gave up (error, disconnect, deadline) or all is done
            await asyncio.gather(producer, return_exceptions=True)
            while not submitted.empty():  # submitted but never read: free their slots in the engine now
                if isinstance(item := submitted.get_nowait(), Piece):
                    item.stream.cancel()

    async def _submit(self, request: TranscriptionRequest, conversation: list[dict], audio: AudioPiece) -> Piece:
        prompt = await prepare(self.engine, conversation, [audio.samples])
        start, end = audio.span.start / SAMPLE_RATE, audio.span.end / SAMPLE_RATE
        cap = math.ceil(audio.samples.shape[0] / SAMPLE_RATE * TOKENS_PER_SECOND_CAP) + TOKENS_CAP_FLOOR
        max_tokens = output_budget(self.engine, prompt, request.max_tokens, min(self.default_max_tokens, cap))
        params = SamplingParams(
            max_tokens, temperature=request.temperature, seed=request.seed, logprobs=0,
            min_tokens=min(request.min_tokens, max_tokens), ignore_eos=request.ignore_eos,
        )
        return Piece(start, end, audio.span.speech, prompt.num_tokens, prompt.audio_tokens, submit(self.engine, prompt, params))

    async def _events(self, first: Piece | None, pieces: AsyncIterator[Piece], upload: UploadPieces,
                      task: Task) -> AsyncIterator[str]:
        """transcript.text.delta events in order as pieces finish, then transcript.text.done with usage, then [DONE]."""
        done: list[tuple[Piece, Completion]] = []
        text = ""
        try:
            async with asyncio.timeout(self.timeout_s or None):
                piece = first
                while piece is not None:
                    completion = Completion()
                    try:
                        async for event in piece.stream:
                            first_text = not completion.text
                            completion.add(event)
                            if event.text:
                                delta = (" " if first_text and text else "") + event.text  # as join_pieces joins
                                text += delta
                                yield sse({"type": "transcript.text.delta", "delta": delta})
                    finally:
                        piece.stream.cancel()
                    done.append(piece.finished(completion))
                    piece = await anext(pieces, None)
        except TimeoutError:
            yield sse_error(timed_out(self.timeout_s))
            return
        except Exception as exc:  # headers are sent: the error travels as an event the SDK raises
            yield sse_error(exc)
            return
        finally:
            await pieces.aclose()
        self.engine.metrics.audio_seconds.labels(task).inc(upload.seconds)
        usage = _usage(done)
        yield sse({"type": "transcript.text.done", "text": text, "usage": usage.model_dump()})
        yield sse("[DONE]")

    def _format(self, request: TranscriptionRequest, task: Task, duration: float,
                done: list[tuple[Piece, Completion]]) -> str | dict:
        text = join_pieces([c.text for _, c in done])
        if request.response_format == "text":
            return text
        if request.response_format == "json":
            logprobs = self._logprobs([c for _, c in done]) if request.include else None
            return Transcription(text=text, usage=_usage(done), logprobs=logprobs).model_dump(exclude_none=True)
        segments = [_segment(i, p, c, request.temperature) for i, (p, c) in enumerate(done)]
        if request.response_format == "srt":
            return to_srt((s.start, s.end, s.text) for s in segments)
        if request.response_format == "vtt":
            return to_vtt((s.start, s.end, s.text) for s in segments)
        language = "english" if task == "translate" else (language_name(request.language or "") or "unknown").lower()
        return VerboseTranscription(
            task=task, language=language, duration=round(duration, 3), text=text, segments=segments,
            usage=DurationUsage(seconds=round(duration, 3)),
        ).model_dump()

    def _logprobs(self, completions: list[Completion]) -> list[TranscriptionLogprob]:
        pieces = [(lp, self.engine.runner.token_piece(lp.token_id)) for c in completions for lp in c.logprobs]
        return [TranscriptionLogprob(token=p, bytes=list(p.encode()), logprob=lp.logprob) for lp, p in pieces]


def vad_options(strategy: str | ServerVad | None) -> VadOptions | None:
    """OpenAI's `chunking_strategy` -> how the audio is cut (None: whole if it fits one piece)."""
    if isinstance(strategy, ServerVad):
        return VadOptions(threshold=strategy.threshold, silence_ms=strategy.silence_duration_ms,
                          padding_ms=strategy.prefix_padding_ms, merge=False)
    return VadOptions() if strategy == "auto" else None


TRANSCRIBE_INSTRUCTION = "Transcribe the speech in this audio word for word. Reply with the transcript only."


def instruction(request: TranscriptionRequest, task: Task) -> str:
    """The natural-language instruction the instruct model gets after the audio."""
    if task == "transcribe":
        text = TRANSCRIBE_INSTRUCTION
        if request.language:
            text += f" The speech is in {_language(request.language, 'language')}."
    else:
        target = _language(request.target_language, "target_language") if request.target_language else "English"
        text = f"Translate the speech in this audio into {target}. Reply with the translation only."
    if request.prompt:
        text += f" Context and spellings to follow: {request.prompt}"
    return text


def join_pieces(texts: list[str]) -> str:
    return " ".join(t for t in texts if t)


def _language(code: str, param: str) -> str:
    name = language_name(code)
    if name is None:
        raise bad_request(f"{param}: unknown language {code!r}; use an ISO-639-1 code such as 'en' or 'zh'", param=param)
    return name


def _segment(index: int, piece: Piece, completion: Completion, temperature: float) -> Segment:
    encoded = completion.text.encode()
    logprobs = [lp.logprob for lp in completion.logprobs]
    return Segment(
        id=index,
        seek=round(piece.start * 100),  # in 10 ms frames, as Whisper counts
        start=round(piece.start, 3),
        end=round(piece.end, 3),
        text=completion.text,
        tokens=completion.token_ids,
        temperature=temperature,
        avg_logprob=sum(logprobs) / len(logprobs) if logprobs else 0.0,
        compression_ratio=len(encoded) / len(zlib.compress(encoded)) if encoded else 0.0,
        no_speech_prob=round(1.0 - piece.speech, 4),  # from the voice-activity detector, not the model
    )


def _usage(done: list[tuple[Piece, Completion]]) -> TranscriptionUsage:
    input_tokens = sum(p.input_tokens for p, _ in done)
    audio_tokens = sum(p.audio_tokens for p, _ in done)
    output_tokens = sum(len(c.token_ids) for _, c in done)
    return TranscriptionUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_token_details=InputTokenDetails(audio_tokens=audio_tokens, text_tokens=input_tokens - audio_tokens),
    )
