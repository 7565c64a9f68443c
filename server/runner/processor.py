"""The prep thread's side of the model: a conversation and its clips -> a prompt (chat template, tokens, log-mels).

It does what Qwen2-Audio's processor does (each <|AUDIO|> marker becomes one token per 40 ms of audio), but
computes the log-mel only as far as the audio encoder will read it instead of for a full 30 s window.
"""

import numpy as np
import torch

from server.audio.clip import MAX_CLIP_SAMPLES, MAX_CLIP_SECONDS, MIN_CLIP_SAMPLES, SAMPLE_RATE
from server.engine.conversation import audio_question, raw_prompt
from server.engine.request import Prompt
from server.runner.grammar import Grammar, GrammarCompiler

# Mel frames per audio token: the encoder's second convolution has stride 2, then it pools by 2.
FRAMES_PER_AUDIO_TOKEN = 4


class PromptProcessor:
    """Owns the transformers processor and its tokenizer, which are used on the prep thread only (a tokenizer is
    not safe to share between threads; the event loop detokenizes with a copy of its own)."""

    def __init__(self, processor, audio_token_id: int, chat: bool = True) -> None:
        """`chat`: render conversations with the checkpoint's chat template (an Instruct model); else as a base
        checkpoint takes its prompts (server.engine.conversation.raw_prompt)."""
        self._processor = processor
        self._chat = chat
        self._extractor = processor.feature_extractor
        self._audio_token = processor.audio_token
        self._audio_token_id = audio_token_id
        self._grammars = GrammarCompiler(processor.tokenizer)  # structured outputs, compiled here, off the model thread

    def prepare(self, conversation: list[dict], clips: list[np.ndarray]) -> Prompt:
        if any(clip.shape[0] > MAX_CLIP_SAMPLES for clip in clips):
            raise ValueError(f"an audio clip is longer than {MAX_CLIP_SECONDS:.0f} s")
        if self._chat:
            text = self._processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        else:
            text = raw_prompt(conversation)
        around_audio = text.split(self._audio_token)
        if len(around_audio) != len(clips) + 1:
            raise ValueError(f"the prompt has {len(around_audio) - 1} audio markers for {len(clips)} clips")
        mels = [self._log_mel(np.pad(c, (0, max(0, MIN_CLIP_SAMPLES - c.shape[0])))) for c in clips]
        expanded = [self._audio_token * audio_tokens(valid) for _, valid in mels]
        text = around_audio[0] + "".join(audio + after for audio, after in zip(expanded, around_audio[1:]))
        token_ids = self._processor.tokenizer(text)["input_ids"]
        seconds = sum(c.shape[0] for c in clips) / SAMPLE_RATE
        return Prompt(token_ids, token_ids.count(self._audio_token_id), seconds, mels or None)

    def probe_prompt(self) -> Prompt:
        return self.prepare(audio_question("warm up"), [np.zeros(SAMPLE_RATE, np.float32)])

    def compile_grammar(self, response_format: dict) -> Grammar:
        return self._grammars.compile(response_format)

    def _log_mel(self, clip: np.ndarray) -> tuple[torch.Tensor, int]:
        """[mels, F] log-mel frames equal to the first F of the processor's 30 s ones, and the valid count L.

        F = L + 2 (rounded up to even) covers what the trimmed encoder reads. Zeros past the clip stand in for
        the processor's 30 s padding: every frame below F sees the same samples either way.
        """
        extractor = self._extractor
        hop, window = extractor.hop_length, extractor.n_fft
        valid = -(-clip.shape[0] // hop)  # frames the processor's attention mask marks valid
        frames = min(extractor.nb_max_frames, _round_up(valid + 2, 2))
        length = extractor.n_samples if frames * hop + window >= extractor.n_samples else frames * hop + window
        wave = np.pad(clip, (0, length - clip.shape[0]))
        mel = extractor(wave, sampling_rate=SAMPLE_RATE, padding="do_not_pad", return_tensors="pt")["input_features"]
        return mel[0, :, :frames], valid


def audio_tokens(frames: int) -> int:
    """Audio tokens for `frames` valid mel frames: conv stride 2, then pooling by 2 (the processor's formula)."""
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


def audio_tokens_per_second(feature_extractor) -> float:
    """25 for Qwen2-Audio: 100 mel frames a second (hop 160 at 16 kHz), four frames a token."""
    return feature_extractor.sampling_rate / feature_extractor.hop_length / FRAMES_PER_AUDIO_TOKEN


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
