"""Which language is spoken, asked of the model itself: the Instruct checkpoint names none in its transcripts (the
base one writes a tag, which serving/framing.py reads instead).

One short generation over the first seconds of the first clip, constrained to the names of the candidate
languages (the request's `languages`, else every language this server knows), so the answer is always one of
them. It is submitted beside the transcription's first clip and batches with it.
"""

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np

from server.audio.chunking import Clip
from server.audio.clip import SAMPLE_RATE
from server.engine.conversation import audio_question
from server.engine.engine import Engine
from server.engine.request import SamplingParams
from server.metrics import Metrics
from server.protocol.audio import TranscriptionRequest
from server.protocol.errors import APIError
from server.serving.generation import collect, prepare, submit
from server.serving.languages import LANGUAGES, language_code
from server.serving.prompts import Task, possible_languages

QUESTION = "Which language is spoken in this audio? Answer with the name of the language only."
DETECT_SECONDS = 10.0  # of the first clip: enough to tell a language, a third of the encoder's work on a full clip
MAX_ANSWER_TOKENS = 16  # the longest name ("Norwegian Nynorsk") is a few tokens

logger = logging.getLogger(__name__)


def wanted(request: TranscriptionRequest, task: Task, base: bool) -> bool:
    """verbose_json names the spoken language; json bodies and streams list it when `languages` asks. Not when the
    request names the language, nor for translations, nor for the base checkpoint (its tag says it)."""
    if base or task != "transcribe" or request.language:
        return False
    return request.response_format == "verbose_json" or (
        bool(request.languages) and (request.response_format == "json" or request.streamed))


class LanguageDetector:
    def __init__(self, engine: Engine, metrics: Metrics, timeout_s: float) -> None:
        self.engine, self.metrics, self.timeout_s = engine, metrics, timeout_s

    async def detect(self, samples: np.ndarray, request: TranscriptionRequest,
                     queued: asyncio.Event | None = None) -> str | None:
        """The ISO-639-1 code of the language spoken in `samples`; None if the model could not be asked. `queued` is
        set once the question is in the engine's queue."""
        names = possible_languages(request) or list(LANGUAGES.values())
        if len(names) == 1:
            return language_code(names[0])
        try:
            grammar = await self.engine.compile_grammar({"type": "choice", "choices": names})
            prompt = await prepare(self.engine, audio_question(QUESTION), [samples[: int(DETECT_SECONDS * SAMPLE_RATE)]])
            stream = submit(self.engine, self.metrics, prompt, SamplingParams(MAX_ANSWER_TOKENS, temperature=0.0, grammar=grammar))
            if queued:
                queued.set()
            answer = await collect(stream, self.timeout_s)
        except APIError as exc:  # a full queue, a failed step: the transcript is still worth sending
            logger.warning("language detection failed (%s); the language is reported as unknown", exc.message)
            return None
        return language_code(answer.text.strip())

    def beside(self, clips: AsyncIterable[Clip], request: TranscriptionRequest) -> tuple[AsyncIterator[Clip], "Detection"]:
        """`clips` unchanged, and the detection that starts with the first of them. The question goes into the
        engine's queue ahead of the first clip, so it runs in the first batch: behind the clips of a long upload it
        would wait for most of them, and its own prefill and steps would come late and alone."""
        detection = Detection()

        async def tapped() -> AsyncIterator[Clip]:
            async with aclosing(aiter(clips)) as inner:
                async for clip in inner:
                    if detection.task is None:
                        queued = asyncio.Event()
                        detection.task = asyncio.create_task(self.detect(clip.samples, request, queued))
                        waiting = asyncio.ensure_future(queued.wait())  # or the detection's end (no question, an error)
                        await asyncio.wait({waiting, detection.task}, return_when=asyncio.FIRST_COMPLETED)
                        waiting.cancel()
                    yield clip

        return tapped(), detection


@dataclass
class Detection:
    """The spoken language, asked beside the first clip (`task` stays None where there is no speech)."""

    task: asyncio.Task | None = None

    async def languages(self) -> list[str]:
        """As OpenAI lists detected languages: [code], or [] where none could be detected."""
        code = await self.task if self.task else None
        return [code] if code else []

    def cancel(self) -> None:
        if self.task:
            self.task.cancel()
