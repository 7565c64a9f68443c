"""POST /v1/audio/transcriptions and /v1/audio/translations: audio -> instruction -> engine -> text/subtitles.

Audio longer than the encoder's 30 s window is cut into pieces that go through the engine together (they
batch) and are stitched back in order; each piece is one timed segment.
"""

import asyncio
import math
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from server.api.errors import bad_request
from server.api.generation import Completion, collect, output_budget, prepare, sse, sse_error, submit, timed_out
from server.api.languages import language_name
from server.api.media import MediaPolicy, upload_audio
from server.api.protocol import (
    DurationUsage,
    InputTokenDetails,
    Segment,
    Transcription,
    TranscriptionLogprob,
    TranscriptionRequest,
    TranscriptionUsage,
    VerboseTranscription,
)
from server.api.subtitles import to_srt, to_vtt
from server.audio.chunking import split_fixed
from server.audio.decode import duration_seconds
from server.config import Settings
from server.engine.engine import Engine, RequestStream
from server.engine.request import Prompt, SamplingParams

Task = Literal["transcribe", "translate"]

# A transcript holds a few tokens per second of speech; a cap well above that stops runaway repetition loops.
TOKENS_PER_SECOND_CAP = 16
TOKENS_CAP_FLOOR = 32


@dataclass
class Piece:
    start: float
    end: float
    prompt: Prompt
    stream: RequestStream


class TranscriptionServing:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.default_max_tokens = settings.default_max_tokens
        self.timeout_s = settings.request_timeout_s
        self.media = MediaPolicy.from_settings(settings)

    async def create(self, request: TranscriptionRequest, audio: bytes, task: Task) -> str | dict | AsyncIterator[str]:
        samples = await upload_audio(audio, self.media)
        duration = duration_seconds(samples)
        self.engine.metrics.audio_seconds.labels(f"{task}").inc(duration)
        pieces = await self._submit(request, samples, task)
        if request.stream:
            return self._events(pieces)
        try:
            async with asyncio.timeout(self.timeout_s or None):
                completions = [await collect(piece.stream, 0) for piece in pieces]
        except TimeoutError as exc:
            raise timed_out(self.timeout_s) from exc
        finally:
            _cancel(pieces)
        return self._format(request, task, duration, pieces, completions)

    async def _submit(self, request: TranscriptionRequest, samples: np.ndarray, task: Task) -> list[Piece]:
        conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": instruction(request, task)}]}]
        pieces: list[Piece] = []
        try:
            for start, clip in split_fixed(samples):
                prompt = await prepare(self.engine, conversation, [clip])
                end = start + duration_seconds(clip)
                cap = math.ceil((end - start) * TOKENS_PER_SECOND_CAP) + TOKENS_CAP_FLOOR
                max_tokens = output_budget(self.engine, prompt, request.max_tokens, min(self.default_max_tokens, cap))
                params = SamplingParams(
                    max_tokens, temperature=request.temperature, seed=request.seed, logprobs=0,
                    min_tokens=min(request.min_tokens, max_tokens), ignore_eos=request.ignore_eos,
                )
                pieces.append(Piece(start, end, prompt, submit(self.engine, prompt, params)))
        except BaseException:
            _cancel(pieces)
            raise
        return pieces

    async def _events(self, pieces: list[Piece]) -> AsyncIterator[str]:
        """transcript.text.delta events in order, then transcript.text.done with usage, then [DONE]."""
        completions: list[Completion] = []
        text = ""
        try:
            async with asyncio.timeout(self.timeout_s or None):
                for piece in pieces:
                    completion = Completion()
                    async for event in piece.stream:
                        first_text = not completion.text
                        completion.add(event)
                        if event.text:
                            delta = (" " if first_text and text else "") + event.text  # as join_pieces joins
                            text += delta
                            yield sse({"type": "transcript.text.delta", "delta": delta})
                    completions.append(completion)
        except TimeoutError:
            yield sse_error(timed_out(self.timeout_s))
            return
        except Exception as exc:  # headers are sent: the error travels as an event the SDK raises
            yield sse_error(exc)
            return
        finally:
            _cancel(pieces)
        usage = _usage([p.prompt for p in pieces], completions)
        yield sse({"type": "transcript.text.done", "text": text, "usage": usage.model_dump()})
        yield sse("[DONE]")

    def _format(self, request: TranscriptionRequest, task: Task, duration: float, pieces: list[Piece],
                completions: list[Completion]) -> str | dict:
        text = join_pieces([c.text for c in completions])
        usage = _usage([p.prompt for p in pieces], completions)
        if request.response_format == "text":
            return text
        if request.response_format == "json":
            body = Transcription(text=text, usage=usage, logprobs=self._logprobs(completions) if request.include else None)
            return body.model_dump(exclude_none=True)
        segments = [_segment(i, p, c, request.temperature) for i, (p, c) in enumerate(zip(pieces, completions))]
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


def instruction(request: TranscriptionRequest, task: Task) -> str:
    """The natural-language instruction the instruct model gets after the audio."""
    if task == "transcribe":
        text = "Transcribe the speech in this audio word for word. Reply with the transcript only."
        if request.language:
            text += f" The speech is in {_language(request.language, 'language')}."
    else:
        target = _language(request.target_language, "target_language") if request.target_language else "English"
        text = f"Translate the speech in this audio into {target}. Reply with the translation only."
    if request.prompt:
        text += f" Context and spellings to follow: {request.prompt}"
    return text


def _cancel(pieces: list[Piece]) -> None:
    for piece in pieces:
        piece.stream.cancel()


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
        no_speech_prob=0.0,  # no voice-activity detector yet: every piece is treated as speech
    )


def _usage(prompts: list[Prompt], completions: list[Completion]) -> TranscriptionUsage:
    input_tokens = sum(p.num_tokens for p in prompts)
    audio_tokens = sum(p.audio_tokens for p in prompts)
    output_tokens = sum(len(c.token_ids) for c in completions)
    return TranscriptionUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_token_details=InputTokenDetails(audio_tokens=audio_tokens, text_tokens=input_tokens - audio_tokens),
    )
