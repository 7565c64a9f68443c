"""The frame Qwen2-Audio-7B-Instruct puts around a transcript or a translation, taken off each clip's answer.

Asked what a person says, the Instruct model answers `The original content of this audio is: '...'`: the words
wrapped in a sentence and quotes. Left in, the frame would start every clip of a long file, every subtitle cue
and every stream. Taken off, at the start of an answer only and only whole:
- a lead phrase the model is seen to use, then a colon (ASCII or full-width). Sources, public outputs of the
  Qwen2-Audio / Qwen-Audio family:
  - "The original content of this audio is: '...'": transformers' Qwen2-Audio integration test
    (tests/models/qwen2_audio/test_modeling_qwen2_audio.py, EXPECTED_DECODED_TEXT); with no space after the colon
    in ai-dynamo/dynamo's vLLM multimodal guide (Qwen/Qwen2-Audio-7B-Instruct on a LibriSpeech clip).
  - "The speech transcribed verbatim is: ...": docs/qwen2-audio.md, and a public pipeline that strips it.
  - "The audio says: '...'", "The audio transcription is: '...'": pipelines that clean Qwen audio models' output.
  - "这段音频的原始内容是:'...'" (also with a full-width colon): Alibaba Cloud Model Studio's Qwen-Audio docs and
    pipelines that strip it; "这段语音的原始文本内容是：" and "这段音频的内容是：" in such pipelines.
  - around translations, the same frame: "The translation is:", "The English translation is:", "翻译成英文是：".
  - "Context and spellings to follow:": this server's own instruction for the `prompt` field, repeated.
- then quotes around all of the rest ('', "", ‘’, “”, 「」, 『』); a period after the closing one stays;
- a language label in brackets or before a colon ("[English]", "English:", "中文：") of the language asked for;
- the request's `prompt` (three words or more), when the answer starts by repeating it;
- a language tag such as `<|en|>`, which the base checkpoint writes before its text when its prompt leaves the
  spoken language to it (the tag's language is kept: `language`).
An answer that is all one quotation, with no lead, loses its quotes too; one that only starts with a quotation
keeps it.
"""

import re
from dataclasses import dataclass

_COLON = r"\s*[:：]\s*"
_TAG = r"<\|([a-z]{2,3}(?:-[a-z0-9]+)?)\|>\s*"  # <|en|>, <|yue|>: the tags Qwen-Audio's prompts name languages by
_LEADS = (
    "the original content of this audio is", "the original content of the audio is",
    "the speech transcribed verbatim is", "the transcription of the audio is", "the audio transcription is",
    "the audio says", "the speech says", "the speaker says", "the person says", "the transcription is",
    "the transcript is", "the translation is", "the translated text is", "context and spellings to follow",
    "这段音频的原始内容是", "这段音频的原始内容为", "这段语音的原始内容是", "这段语音的原始文本内容是", "这段音频的内容是",
    "音频的原始内容是", "翻译成英文是", "翻译成中文是", "翻译是", "翻译结果是",
)
_QUOTES = {"'": "'", '"': '"', "‘": "’", "“": "”", "「": "」", "『": "』"}
_CHINESE_NAMES = {"english": "英文", "chinese": "中文", "japanese": "日文", "korean": "韩文", "french": "法文",
                  "german": "德文", "spanish": "西班牙文", "russian": "俄文", "italian": "意大利文"}
_HOLD_LIMIT = 160  # characters: a lead, a label and a prompt are shorter; past this the start is released
_PROMPT_MIN_WORDS = 3  # a shorter prompt repeated at the start is as likely to be the speech itself


@dataclass(frozen=True)
class Frame:
    start: int  # characters of lead phrases, labels and opening quote at the start
    closing_quote: str | None  # the quote that closes the answer, if an opening one belongs to the frame


class FrameStripper:
    """Takes the frame off one clip's answer, fed in deltas as it streams (or whole: `strip`).

    `push` holds the start back only while a frame may still be coming, and from then on holds back only what may
    be the closing quote at the end; `finish` releases the rest. The deltas add up to `strip(whole answer)`.
    """

    def __init__(self, language: str | None = None, prompt: str | None = None) -> None:
        leads = list(_LEADS)
        labels = []
        if language:
            name = language.lower()
            leads += [f"the {name} translation is", f"the translation into {name} is", f"the {name} text is"]
            labels = [name, _CHINESE_NAMES.get(name, name)]
        words = re.findall(r"\w+", prompt.lower()) if prompt else []
        self._leads = leads
        self._labels = labels
        self._prompt = words if len(words) >= _PROMPT_MIN_WORDS else None  # compared word by word
        self._text = ""
        self._frame: Frame | None = None
        self._given = 0  # characters given out, counted from the frame's start
        self._closing_at: int | None = None  # where the closing quote that was taken off stood
        self.language: str | None = None  # the code of a language tag taken off

    def push(self, delta: str) -> str:
        self._text += delta
        if self._frame is None:
            self._frame = self._decide(final=False)
            if self._frame is None:
                return ""
        end = len(self._text)
        if self._frame.closing_quote:
            end -= len(_closing_tail(self._text, self._frame.closing_quote))
        return self._give(end)

    def finish(self) -> str:
        if self._frame is None:
            self._frame = self._decide(final=True)
        tail = _closing_tail(self._text, self._frame.closing_quote) if self._frame.closing_quote else ""
        out = self._give(len(self._text) - len(tail))
        if tail:
            self._closing_at = len(self._text) - len(tail)
        return out + tail.strip()[1:]  # the closing quote goes, a period after it stays

    def strip(self, answer: str) -> str:
        return self.push(answer) + self.finish()

    def removed(self) -> list[tuple[int, int]]:
        """After finish: the [start, end) character ranges of the answer that were frame."""
        spans = [(0, self._frame.start)] if self._frame and self._frame.start else []
        return spans + ([(self._closing_at, self._closing_at + 1)] if self._closing_at is not None else [])

    def _give(self, end: int) -> str:
        start = self._frame.start + self._given
        if end <= start:
            return ""
        self._given = end - self._frame.start
        return self._text[start:end]

    def _decide(self, final: bool) -> Frame | None:
        """The frame at the start of the text, or None while more text could still make it one."""
        text, position, led = self._text, 0, False
        for _ in range(3):  # a label, a lead and an echoed prompt may follow one another
            taken = self._lead_at(text[position:])
            if taken is None:
                return None if not final and len(text) < _HOLD_LIMIT else Frame(position, None)
            if not taken:
                break
            position, led = position + taken, True
        rest = text[position:]
        body = rest.lstrip()
        if not body:
            return None if not final else Frame(position, None)
        if body[0] not in _QUOTES:  # no frame at all: the answer is kept as it came, spaces included
            return Frame(position + (len(rest) - len(body) if led else 0), None)
        position += len(rest) - len(body)
        closing = _QUOTES[body[0]]
        if led:  # a quote right after a lead phrase is the frame's
            return Frame(position + 1, closing)
        return self._quotation(body, position, closing, final)

    def _quotation(self, body: str, position: int, closing: str, final: bool) -> Frame | None:
        """No lead, the answer opens with a quote: a frame only if it is all one quotation."""
        inner = body[1:]
        end = inner.find(closing)
        if end != -1 and inner[end + 1 :].strip() not in ("", ".", "。"):
            return Frame(position, None)  # 'Hello,' she said: a quotation inside the speech, kept
        if not final and len(self._text) < _HOLD_LIMIT * 4:
            return None
        if end != -1 and end == len(inner.rstrip().rstrip(".。").rstrip()) - 1:
            return Frame(position + 1, closing)
        return Frame(position, None)

    def _lead_at(self, text: str) -> int | None:
        """Characters of one lead phrase, label or echoed prompt at the start of `text`; 0 if there is none;
        None while the text so far could still grow into one."""
        body = text.lstrip()
        skipped = len(text) - len(body)
        lowered = body.lower()
        tag = re.match(_TAG, lowered)
        if tag:
            self.language = tag.group(1)
            return skipped + tag.end()
        if re.fullmatch(r"<(\|[a-z0-9-]*\|?)?", lowered):
            return None
        for pattern in self._patterns():
            match = re.match(pattern, lowered)
            if match:
                return skipped + match.end()
        echoed = self._echoed_prompt(lowered)
        if echoed:
            return skipped + echoed
        normalized = " ".join(lowered.split())
        wanted = [f"{lead}:" for lead in self._leads] + [f"{label}:" for label in self._labels]
        wanted += [f"[{label}]" for label in self._labels]
        if not normalized or echoed is None or any(w.startswith(normalized) for w in wanted):
            return None
        return 0

    def _echoed_prompt(self, lowered: str) -> int | None:
        """Characters of the prompt repeated at the start (words compared, punctuation not); 0 if it is not
        there; None while the words so far could still be it."""
        if not self._prompt:
            return 0
        spans = list(re.finditer(r"\w+", lowered))
        words, wanted = [span.group(0) for span in spans], self._prompt
        if len(words) > len(wanted) and words[: len(wanted)] == wanted:
            end = spans[len(wanted) - 1].end()
            return end + len(re.match(r"[.,;:!?。，；：]*\s*", lowered[end:]).group(0))
        if len(words) <= len(wanted) and words[:-1] == wanted[: len(words) - 1] and (
                not words or wanted[len(words) - 1].startswith(words[-1])):
            return None
        return 0

    def _patterns(self) -> list[str]:
        labels = [re.escape(label) for label in self._labels]
        return ([re.escape(lead) + _COLON for lead in self._leads]
                + [rf"[\[(（【]{label}[\])）】]\s*(?:[:：]\s*)?" for label in labels]
                + [label + _COLON for label in labels])


def _closing_tail(text: str, quote: str) -> str:
    """The closing quote at the very end of `text`, with a period after it if any, and trailing space."""
    trimmed = text.rstrip()
    for tail in (quote + ".", quote + "。", quote):
        if trimmed.endswith(tail):
            return text[len(trimmed) - len(tail):]
    return ""


