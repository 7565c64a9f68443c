"""Every prompt the server builds renders one audio marker per clip through every known Qwen2-Audio chat template.

The templates differ in what marks an audio part: transformers' built-in default tests `content['type'] ==
'audio'` among others; the checkpoint's own template (tokenizer_config.json of Qwen/Qwen2-Audio-7B-Instruct) and
fine-tunes test only `'audio' in content or 'audio_url' in content`, so a part written as `{"type": "audio"}`
alone renders nothing there (docs/qwen2-audio.md, "Chat templates differ by where they come from").
"""

import base64

import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers import Qwen2AudioProcessor

from server.audio.vad import SpeechDetector
from server.engine.conversation import audio_question
from server.protocol.audio import TranscriptionRequest
from server.protocol.chat import ChatMessage
from server.serving.media import MediaPolicy
from server.serving.prompts import TRANSCRIBE_INSTRUCTION, instruction, to_conversation
from tests.support.audio_samples import wav
from tests.support.checkpoint import HUB_CHAT_TEMPLATE, NO_SYSTEM_CHAT_TEMPLATE

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"

TEMPLATES = {
    # transformers 5.24, Qwen2AudioProcessor.default_chat_template (the installed source)
    "processor-default": Qwen2AudioProcessor.default_chat_template.fget(None),
    "hub-instruct": HUB_CHAT_TEMPLATE,
    "fine-tune-no-system": NO_SYSTEM_CHAT_TEMPLATE,
}


def render(template: str, conversation: list[dict]) -> str:
    """As transformers renders chat templates: Jinja in a sandbox, trimmed blocks."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=conversation, add_generation_prompt=True)


def _transcription(task: str, **fields) -> list[dict]:
    return audio_question(instruction(TranscriptionRequest(model="m", **fields), task))


async def _chat() -> tuple[list[dict], int]:
    clip = base64.b64encode(wav(1.0)).decode()
    messages = [ChatMessage.model_validate(m) for m in [
        {"role": "system", "content": "You listen carefully."},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}},
                                     {"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}},
                                     {"type": "text", "text": "Compare them."}]},
        {"role": "assistant", "content": "The same."},
        {"role": "user", "content": "Sure?"},
    ]]
    policy = MediaPolicy(600.0, frozenset(), None, 2**20, 1.0)
    conversation, clips = await to_conversation(messages, policy, SpeechDetector())
    return conversation, len(clips)


PROMPTS = {
    "transcription": (_transcription("transcribe"), 1),
    "transcription-with-language-and-prompt": (_transcription("transcribe", language="de", prompt="Zürich"), 1),
    "translation": (_transcription("translate", target_language="fr"), 1),
    "capacity-probe": (audio_question(TRANSCRIBE_INSTRUCTION), 1),
    "warm-up-and-health-probe": (audio_question("warm up"), 1),
    "three-clips": (audio_question("Which is loudest?", clips=3), 3),
}


@pytest.mark.parametrize("template", TEMPLATES, ids=list(TEMPLATES))
@pytest.mark.parametrize("prompt", PROMPTS, ids=list(PROMPTS))
def test_every_prompt_renders_one_marker_per_clip(template, prompt):
    conversation, clips = PROMPTS[prompt]
    text = render(TEMPLATES[template], conversation)
    assert text.count(MARKER) == clips and text.count("<|AUDIO|>") == clips, text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("template", TEMPLATES, ids=list(TEMPLATES))
async def test_chat_messages_render_their_clips_and_turns(template):
    conversation, clips = await _chat()
    text = render(TEMPLATES[template], conversation)
    assert clips == 2 and text.count(MARKER) == 2
    assert "You listen carefully." in text and "Compare them." in text and "The same." in text and "Sure?" in text


def test_a_bare_type_audio_part_is_what_the_checkpoints_template_would_drop():
    """Why audio parts carry an `audio` key: without it the checkpoint's template renders no marker at all."""
    bare = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "?"}]}]
    assert render(TEMPLATES["processor-default"], bare).count(MARKER) == 1
    assert render(TEMPLATES["hub-instruct"], bare).count(MARKER) == 0
    assert np.all([render(t, audio_question("?")).count(MARKER) == 1 for t in TEMPLATES.values()])
