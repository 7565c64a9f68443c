"""Chat request parts and questions that several test modules send."""

import base64
from typing import Literal

from pydantic import BaseModel, Field

from tests.support.audio_samples import wav


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def url_part(data: bytes, mime: str = "audio/wav") -> dict:
    return {"type": "audio_url", "audio_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


class Sound(BaseModel):
    """Bounded in every field (enum, integer range, boolean, a short string, a short list), so a model writing noise
    within the schema still closes it well before max_tokens."""

    label: Literal["speech", "music", "noise", "silence"]
    speakers: int = Field(ge=0, le=9)
    loud: bool
    note: str = Field(max_length=12)
    tags: list[Literal["indoor", "outdoor", "male", "female"]] = Field(max_length=3)


def sound_question(seed: int, text: str = "Classify this sound as JSON.") -> list[dict]:
    return [{"role": "user", "content": [audio_part(wav(1.0, seed=seed)), {"type": "text", "text": text}]}]
