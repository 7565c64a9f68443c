"""What the model is asked: the instructions for transcriptions and translations, and chat messages as the chat
template takes them (built with server.engine.conversation)."""

import asyncio
from typing import Literal

import numpy as np

from server.audio.chunking import contiguous_spans
from server.audio.vad import SpeechDetector
from server.engine.conversation import audio_part, message, text_part
from server.protocol.audio import TranscriptionRequest
from server.protocol.chat import ChatMessage
from server.protocol.errors import bad_request
from server.serving.languages import language_code, language_name
from server.serving.media import MediaPolicy, part_audio

Task = Literal["transcribe", "translate"]

TRANSCRIBE_INSTRUCTION = "Transcribe the speech in this audio word for word. Reply with the transcript only."


def instruction(request: TranscriptionRequest, task: Task, base: bool = False) -> str:
    """What the model gets after the audio: a natural-language instruction for an Instruct checkpoint; for the base
    checkpoint the task prompts of the official evaluation (QwenLM/Qwen2-Audio eval_audio: "Detect the language and
    recognize the speech: <|en|>", "... translate the speech into German: <|en|>"), the spoken language's tag
    given when the request names it and otherwise left for the model to write (`prompt` has no place there)."""
    spoken = possible_languages(request)  # checked for every checkpoint, used by the Instruct one
    if base:
        return _base_instruction(request, task)
    if task == "transcribe":
        text = TRANSCRIBE_INSTRUCTION
    else:
        target = _language(request.target_language, "target_language") if request.target_language else "English"
        text = f"Translate the speech in this audio into {target}. Reply with the translation only."
    if request.language:
        text += f" The speech is in {_language(request.language, 'language')}."
    elif spoken:
        text += f" The speech is in {_one_of(spoken)}."
    if request.keywords:
        text += f" Words and phrases that may occur in it: {', '.join(request.keywords)}."
    if request.prompt:
        text += f" Context and spellings to follow: {request.prompt}"
    return text


def possible_languages(request: TranscriptionRequest) -> list[str]:
    """The names of the request's `languages` (each a 400 naming it if unknown), in order, once each."""
    return list(dict.fromkeys(_language(code, f"languages[{i}]") for i, code in enumerate(request.languages)))


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _base_instruction(request: TranscriptionRequest, task: Task) -> str:
    spoken = language_code(_language(request.language, "language")) if request.language else None
    tag = f" <|{spoken}|>" if spoken else ""
    if task == "transcribe":
        return f"Detect the language and recognize the speech:{tag}"
    target = _language(request.target_language, "target_language") if request.target_language else "English"
    return f"Detect the language and translate the speech into {target}:{tag}"


def answer_language(request: TranscriptionRequest, task: Task) -> str | None:
    """The language the answer is asked to be in, by name (None: a transcription in whatever is spoken)."""
    if task == "translate":
        return _language(request.target_language, "target_language") if request.target_language else "English"
    return _language(request.language, "language") if request.language else None


async def to_conversation(messages: list[ChatMessage], media: MediaPolicy,
                          detector: SpeechDetector) -> tuple[list[dict], list[np.ndarray]]:
    """OpenAI messages -> the chat template's conversation and its clips, in order.

    Audio longer than the encoder's 30 s window becomes consecutive clips, cut at pauses, so nothing is lost.
    """
    conversation, clips = [], []
    for index, chat_message in enumerate(messages):
        role = "system" if chat_message.role == "developer" else chat_message.role
        if chat_message.content is None or isinstance(chat_message.content, str):
            conversation.append(message(role, chat_message.content or ""))
            continue
        parts = []
        for part_index, part in enumerate(chat_message.content):
            if part.type == "text":
                parts.append(text_part(part.text))
                continue
            if role != "user":
                raise bad_request("audio is accepted in user messages only", param=f"messages[{index}].content")
            samples = await part_audio(part, media, f"messages[{index}].content[{part_index}]")
            for span in await asyncio.to_thread(contiguous_spans, samples, detector):
                parts.append(audio_part())
                clips.append(samples[span.start : span.end])
        conversation.append(message(role, parts))
    if not any(m["role"] == "user" for m in conversation):
        raise bad_request("messages must contain at least one user message", param="messages")
    return conversation, clips


def _language(code: str, param: str) -> str:
    name = language_name(code)
    if name is None:
        raise bad_request(f"{param}: unknown language {code!r}; use an ISO-639-1 code such as 'en' or 'zh'", param=param)
    return name
