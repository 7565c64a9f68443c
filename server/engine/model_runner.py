"""The only place that touches torch and transformers: loads Qwen2-Audio, tokenizes, runs prefill and decode steps."""

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, DynamicCache, Qwen2AudioForConditionalGeneration

from server.engine.request import Prompt, SamplingParams, TokenLogprob
from server.engine.sampler import BatchSampler
from server.tiny_model import RANDOM_WEIGHTS_MARKER, write_tiny_model

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MAX_CLIP_SECONDS = 30.0  # the encoder's window; the processor silently cuts anything longer
MIN_CLIP_SAMPLES = 1_600  # 0.1 s: shorter clips would yield no audio token at all
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do."""


@dataclass
class RunnerConfig:
    model_path: str
    device: str = "auto"  # auto | cuda | cpu
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    create_random: bool = False  # write a random-weight model to model_path first if none is there


@dataclass
class StepOutput:
    """One new token per running row, in the batch's current row order."""

    tokens: list[int]
    logprobs: list[TokenLogprob | None]


@dataclass
class BatchState:
    cache: DynamicCache
    attention_mask: torch.Tensor  # [B, T] 1 for real tokens (left padding is 0)
    positions: torch.Tensor  # [B] position id of the next token
    last_tokens: torch.Tensor  # [B]
    sampler: BatchSampler


class ModelRunner:
    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.device = _resolve_device(config.device)
        self.dtype = _resolve_dtype(config.dtype, self.device)

    # ---- loading -------------------------------------------------------------------------------------
    def load(self) -> None:
        started = time.perf_counter()
        if self.config.create_random and not (Path(self.config.model_path) / RANDOM_WEIGHTS_MARKER).exists():
            write_tiny_model(self.config.model_path)
        self.random_weights = (Path(self.config.model_path) / RANDOM_WEIGHTS_MARKER).exists()
        try:
            self.processor = AutoProcessor.from_pretrained(self.config.model_path)
            self.model = Qwen2AudioForConditionalGeneration.from_pretrained(
                self.config.model_path, dtype=self.dtype, device_map=self.device.type
            ).eval()
        except OSError as exc:
            raise ModelLoadError(_load_advice(self.config.model_path, exc)) from exc
        tokenizer = self.processor.tokenizer
        self._detokenizer = copy.deepcopy(tokenizer)  # decoding on the event loop must not share encoder state
        self.audio_token_id = self.model.config.audio_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_ids = _eos_ids(self.model.generation_config, tokenizer)
        self.max_model_len = self.model.config.text_config.max_position_embeddings
        self.vocab_size = self.model.config.text_config.vocab_size
        self.sampling_defaults = _sampling_defaults(self.model.generation_config)
        self._log_loaded(time.perf_counter() - started)

    def _log_loaded(self, seconds: float) -> None:
        weights_gib = self.model.get_memory_footprint() / 2**30
        params = self.model.num_parameters()
        memory = ""
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            memory = f", GPU {torch.cuda.get_device_name(self.device)} {free / 2**30:.1f}/{total / 2**30:.1f} GiB free"
        logger.info(
            "loaded %s: %s parameters, %.3f GiB of weights, on %s in %s, in %.1f s%s",
            self.config.model_path, f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.2f}M", weights_gib, self.device, str(self.dtype).removeprefix("torch."),
            seconds, memory,
        )
        if self.random_weights:
            logger.warning("=" * 88)
            logger.warning("RANDOM WEIGHTS: %s is a random-weight test model; its answers are meaningless.",
                           self.config.model_path)
            logger.warning("=" * 88)

    def warmup(self) -> None:
        """One short request through every path, so the first real request does not pay for lazy init."""
        conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "warm up"}]}]
        prompt = self.prepare(conversation, [np.zeros(SAMPLE_RATE, np.float32)])
        state, _ = self.prefill([prompt], [SamplingParams(max_tokens=2, temperature=0.0)])
        self.decode(state)

    # ---- tokens ----------------------------------------------------------------------------------------
    def prepare(self, conversation: list[dict], clips: list[np.ndarray]) -> Prompt:
        """Chat messages (audio parts as {"type": "audio"}) + the clips, in order -> a tokenized prompt."""
        if any(clip.shape[0] > MAX_CLIP_SECONDS * SAMPLE_RATE for clip in clips):
            raise ValueError(f"an audio clip is longer than {MAX_CLIP_SECONDS:.0f} s")
        clips = [np.pad(c, (0, max(0, MIN_CLIP_SAMPLES - c.shape[0]))) for c in clips]
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        if clips:
            inputs = self.processor(text=text, audio=clips, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            features = (inputs["input_features"], inputs["feature_attention_mask"])
        else:
            inputs, features = self.processor(text=text, return_tensors="pt"), None
        token_ids = inputs["input_ids"][0].tolist()
        seconds = sum(c.shape[0] for c in clips) / SAMPLE_RATE
        return Prompt(token_ids, token_ids.count(self.audio_token_id), seconds, features)

    def decode_tokens(self, token_ids: list[int]) -> str:
        return self._detokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def token_piece(self, token_id: int) -> str:
        return self._detokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ---- steps -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, prompts: list[Prompt], params: list[SamplingParams]) -> tuple[BatchState, StepOutput]:
        """Encode the audio and the prompts of a new batch (left-padded) and sample each row's first token."""
        input_ids, attention_mask = self._left_pad([p.token_ids for p in prompts])
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, T], as generate() computes them
        features, feature_mask = self._collate_features(prompts)
        cache = DynamicCache(config=self.model.config.text_config)
        hidden = self.model.model(
            input_ids=input_ids, input_features=features, attention_mask=attention_mask,
            feature_attention_mask=feature_mask, position_ids=positions, cache=cache, use_cache=True,
        ).last_hidden_state[:, -1]  # [B, H]: only the last position needs logits
        sampler = BatchSampler.create(params, self.vocab_size, self.eos_token_ids, self.device)
        state = BatchState(cache, attention_mask, positions[:, -1] + 1, input_ids[:, -1], sampler)
        return state, self._sample(state, hidden)

    @torch.inference_mode()
    def decode(self, state: BatchState, keep: list[int] | None = None) -> StepOutput:
        """One token for every row; `keep` first drops the rows whose requests have ended."""
        if keep is not None:
            self._select(state, keep)
        mask = state.attention_mask
        state.attention_mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [B, T+1]
        hidden = self.model.model(
            input_ids=state.last_tokens[:, None], attention_mask=state.attention_mask,
            position_ids=state.positions[:, None], cache=state.cache, use_cache=True,
        ).last_hidden_state[:, -1]
        state.positions = state.positions + 1
        return self._sample(state, hidden)

    def _sample(self, state: BatchState, hidden: torch.Tensor) -> StepOutput:
        logits = self.model.lm_head(hidden).float()  # [B, V]
        tokens, logprobs = state.sampler.sample(logits)
        state.last_tokens = torch.tensor(tokens, device=self.device)
        return StepOutput(tokens, logprobs)

    def _select(self, state: BatchState, keep: list[int]) -> None:
        index = torch.tensor(keep, device=self.device)
        state.cache.batch_select_indices(index)
        state.attention_mask = state.attention_mask[index]
        state.positions = state.positions[index]
        state.last_tokens = state.last_tokens[index]
        state.sampler.select(keep)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _collate_features(self, prompts: list[Prompt]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        parts = [p.features for p in prompts if p.features is not None]
        if not parts:
            return None, None
        features = torch.cat([f for f, _ in parts]).to(self.device, self.dtype)
        return features, torch.cat([m for _, m in parts]).to(self.device)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA GPU (is the CUDA build of torch installed?)")
    return torch.device(device)


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def _eos_ids(generation_config, tokenizer) -> list[int]:
    eos = generation_config.eos_token_id if generation_config.eos_token_id is not None else tokenizer.eos_token_id
    return sorted({eos} if isinstance(eos, int) else set(eos))


def _sampling_defaults(generation_config) -> dict:
    """The sampling settings the checkpoint's generation_config.json sets, for requests that set none."""
    given = generation_config.to_diff_dict()
    defaults = {k: given[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty") if k in given}
    if given.get("do_sample") is False:
        defaults["temperature"] = 0.0
    return defaults


def _load_advice(model_path: str, exc: OSError) -> str:
    if Path(model_path).exists():
        return f"could not load the model folder {model_path}: {exc}"
    return (
        f"could not load {model_path!r}: it is not in the local Hugging Face cache and the hub could not be reached. "
        f"Download it where there is network (`hf download {model_path}`), or pass --model /path/to/a/local/folder; "
        "to try the API with no download at all, run `qwen2-audio-server serve --random-weights`."
    )
