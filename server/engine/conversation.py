"""The one builder of the conversations the engine's `prepare` takes.

Messages are in the form chat templates render (`{"role": ..., "content": str | [parts]}`); each audio part stands
for the next of the clips passed beside the conversation, in order.
"""


def audio_part() -> dict:
    """An audio part every known Qwen2-Audio template renders as one audio marker: transformers' built-in default
    tests `content['type'] == 'audio'`, the checkpoint's own template and fine-tunes' test `'audio' in content`.
    The clip itself travels beside the conversation; the value only names what the part stands for."""
    return {"type": "audio", "audio": "<the clip passed with this conversation>"}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def message(role: str, content: str | list[dict]) -> dict:
    return {"role": role, "content": content}


def audio_question(text: str, clips: int = 1) -> list[dict]:
    """One user turn: `clips` audio parts, then the text (transcriptions, the probe, the memory reading, the bench)."""
    return [message("user", [audio_part() for _ in range(clips)] + [text_part(text)])]


AUDIO_MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"  # where a clip goes in Qwen2-Audio's prompt text


def raw_prompt(conversation: list[dict]) -> str:
    """The conversation as a base checkpoint takes it, with no chat template: each audio part's marker, then the
    text, as the official evaluation prompts are written (QwenLM/Qwen2-Audio, eval_audio/evaluate_asr.py)."""
    parts = [part for m in conversation if m["role"] == "user" and not isinstance(m["content"], str)
             for part in m["content"]]
    return "".join(AUDIO_MARKER if part.get("type") == "audio" else part.get("text", "") for part in parts)
