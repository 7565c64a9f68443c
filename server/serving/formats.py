"""Every response format, rendered in one place with its media type: JSON bodies, plain text, SRT, WebVTT and
server-sent events. Serving hands the routes an `Answer` (a whole body) or an `EventStream`; the routes only wrap."""

import json
import re
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from server.engine.request import Logprob, Prompt
from server.protocol.audio import (
    DetectedLanguage,
    DiarizedSegment,
    DiarizedTranscription,
    DurationUsage,
    InputTokenDetails,
    Segment,
    Transcription,
    TranscriptionLogprob,
    TranscriptionRequest,
    TranscriptionUsage,
    VerboseTranscription,
)
from server.protocol.chat import ChoiceLogprobs, PromptTokensDetails, TokenLogprobOut, TopLogprob, Usage
from server.protocol.errors import APIError
from server.request_context import request_id
from server.serving.generation import Completion
from server.serving.languages import language_name

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
TRANSCRIPTION_MEDIA_TYPES = {"json": JSON, "verbose_json": JSON, "diarized_json": JSON, "text": "text/plain",
                             "srt": "text/plain", "vtt": "text/vtt"}


@dataclass(frozen=True)
class Answer:
    body: dict | str  # a dict is a JSON object
    media_type: str = JSON


@dataclass(frozen=True)
class EventStream:
    events: AsyncIterator[str]  # server-sent events, each "data: ...\n\n"
    media_type: str = EVENT_STREAM


@dataclass(frozen=True)
class TranscribedClip:
    """A finished clip of a transcription: where its speech is in the original audio (seconds), and its answer:
    the text without the model's frame, and the tokens and logprobs of that text (serving/framing.py)."""

    start: float
    end: float
    speech: float  # the voice-activity detector's highest speech probability in it
    input_tokens: int
    audio_tokens: int
    output_tokens: int  # every token generated, the frame's included (usage counts them)
    text: str
    tokens: list[int]
    logprobs: list[Logprob]
    language: str | None = None  # the language tag the model put before the text (the base checkpoint), as a code


# ---- transcriptions and translations -----------------------------------------------------------------
def transcription(request: TranscriptionRequest, task: str, duration: float, clips: list[TranscribedClip],
                  languages: list[str] | None = None) -> Answer:
    """`languages`: the codes language detection found ([] none), or None where it did not run."""
    text = join_texts([clip.text for clip in clips])
    media_type = TRANSCRIPTION_MEDIA_TYPES[request.response_format]
    if request.response_format == "text":
        return Answer(text, media_type)
    if request.response_format == "json":
        logprobs = transcription_logprobs(clips) if request.include else None
        found = detected(languages) if languages is not None else None
        body = Transcription(text=text, languages=found, usage=transcription_usage(clips), logprobs=logprobs)
        return Answer(body.model_dump(exclude_none=True))
    segments = [_segment(i, clip, request.temperature) for i, clip in enumerate(clips)]
    if request.response_format == "srt":
        return Answer(to_srt((s.start, s.end, s.text) for s in segments), media_type)
    if request.response_format == "vtt":
        return Answer(to_vtt((s.start, s.end, s.text) for s in segments), media_type)
    language = "english" if task == "translate" else _spoken_language(request, clips, languages)
    return Answer(VerboseTranscription(
        task=task, language=language, duration=round(duration, 3), text=text, segments=segments,
        usage=DurationUsage(seconds=round(duration, 3)),
    ).model_dump())


def _spoken_language(request: TranscriptionRequest, clips: list[TranscribedClip], languages: list[str] | None) -> str:
    """The language the request names, else the one detected, else the one the model named (the base checkpoint's
    tag on the first clip that has one)."""
    named = request.language or next(iter(languages or []), "") or next((c.language for c in clips if c.language), "")
    return (language_name(named) or "unknown").lower()


def detected(languages: list[str]) -> list[dict]:
    """Detected language codes as OpenAI lists them (`languages` of a transcription and its done event)."""
    return [DetectedLanguage(code=code).model_dump() for code in languages]


def diarized(duration: float, clips: list[TranscribedClip], speakers: list[str]) -> DiarizedTranscription:
    """diarized_json: a segment per clip (each one speaker's), `speakers[i]` the speaker of clip i."""
    return DiarizedTranscription(
        duration=round(duration, 3), text=join_texts([clip.text for clip in clips]),
        segments=[diarized_segment(i, clip, speaker) for i, (clip, speaker) in enumerate(zip(clips, speakers))],
        usage=transcription_usage(clips),
    )


def diarized_segment(index: int, clip: TranscribedClip, speaker: str) -> DiarizedSegment:
    return DiarizedSegment(id=segment_id(index), start=round(clip.start, 3), end=round(clip.end, 3), text=clip.text,
                           speaker=speaker)


def segment_id(index: int) -> str:
    return f"seg_{index:03d}"


def join_texts(texts: list[str]) -> str:
    """The clips' texts as one: the streamed deltas join them the same way."""
    return " ".join(t for t in texts if t)


def transcription_usage(clips: list[TranscribedClip]) -> TranscriptionUsage:
    input_tokens = sum(clip.input_tokens for clip in clips)
    audio_tokens = sum(clip.audio_tokens for clip in clips)
    output_tokens = sum(clip.output_tokens for clip in clips)
    return TranscriptionUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_token_details=InputTokenDetails(audio_tokens=audio_tokens, text_tokens=input_tokens - audio_tokens),
    )


def transcription_logprobs(clips: list[TranscribedClip]) -> list[TranscriptionLogprob]:
    return [TranscriptionLogprob(token=lp.token, bytes=list(lp.token.encode()), logprob=lp.logprob)
            for clip in clips for lp in clip.logprobs]


def _segment(index: int, clip: TranscribedClip, temperature: float) -> Segment:
    encoded = clip.text.encode()
    logprobs = [lp.logprob for lp in clip.logprobs]
    return Segment(
        id=index,
        seek=round(clip.start * 100),  # in 10 ms frames, as Whisper counts
        start=round(clip.start, 3),
        end=round(clip.end, 3),
        text=clip.text,
        tokens=clip.tokens,
        temperature=temperature,
        avg_logprob=sum(logprobs) / len(logprobs) if logprobs else 0.0,
        compression_ratio=len(encoded) / len(zlib.compress(encoded)) if encoded else 0.0,
        no_speech_prob=round(1.0 - clip.speech, 4),  # from the voice-activity detector, not the model
    )


# ---- chat completions ---------------------------------------------------------------------------------
def chat_usage(prompt: Prompt, completion: Completion) -> Usage:
    return Usage(
        prompt_tokens=prompt.num_tokens,
        completion_tokens=len(completion.token_ids),
        total_tokens=prompt.num_tokens + len(completion.token_ids),
        prompt_tokens_details=PromptTokensDetails(audio_tokens=prompt.audio_tokens),
    )


def chat_logprobs(logprobs: list[Logprob]) -> ChoiceLogprobs | None:
    if not logprobs:
        return None
    return ChoiceLogprobs(content=[
        TokenLogprobOut(**_top(lp.token, lp.logprob).model_dump(), top_logprobs=[_top(t, v) for t, v in lp.top])
        for lp in logprobs
    ])


def _top(token: str, logprob: float) -> TopLogprob:
    return TopLogprob(token=token, logprob=logprob, bytes=list(token.encode()))


# ---- server-sent events ---------------------------------------------------------------------------------
def sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def sse_error(exc: Exception) -> str:
    """An error after the headers went out: an event the OpenAI SDKs raise."""
    status = exc.status if isinstance(exc, APIError) else 500
    message = exc.message if isinstance(exc, APIError) else f"{exc} (request id {request_id.get()})"
    return sse({"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                          "param": None, "code": None}})


# ---- subtitles (segments without text make no cue) ------------------------------------------------------
def to_srt(segments: Iterable[tuple[float, float, str]]) -> str:
    cues = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text.strip()}\n"
        for i, (start, end, text) in enumerate(_spoken(segments), start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Iterable[tuple[float, float, str]]) -> str:
    cues = [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text.strip()}\n" for start, end, text in _spoken(segments)]
    return "WEBVTT\n\n" + "\n".join(cues)


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _spoken(segments: Iterable[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Cues with text, without blank lines inside (a blank line ends a cue in both formats)."""
    cues = [(start, end, re.sub(r"\n\s*\n", "\n", text.strip())) for start, end, text in segments]
    return [(start, end, text.replace("-->", "->")) for start, end, text in cues if text]
