"""The only place that touches torch and transformers: loads Qwen2-Audio, tokenizes, runs prefill and decode steps."""

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, DynamicCache, Qwen2AudioForConditionalGeneration
from transformers.masking_utils import create_bidirectional_mask

from server.engine import kv_cache, memory, model_runner_cpu
from server.engine.model_runner_quant import (
    UnsupportedQuantization,
    quantization_config,
    resolve_backend,
    weights_bytes,
)
from server.engine.request import OutOfMemory, Prompt, SamplingParams, TokenLogprob
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
    quantization: str = "none"  # none | int8 | int4
    quantization_backend: str = "auto"  # auto | bitsandbytes | torchao


@dataclass
class StepOutput:
    """One new token per running row, in the batch's current row order, and what the step cost."""

    tokens: list[int]
    logprobs: list[TokenLogprob | None]
    seconds: float = 0.0
    encoder_seconds: float = 0.0


@dataclass
class BatchState:
    """The running batch: rows are right-aligned (left-padded) in one KV cache, so rows of any length mix."""

    cache: DynamicCache
    attention_mask: torch.Tensor  # [B, T] 1 for real tokens (left padding is 0)
    positions: torch.Tensor  # [B] position id of the next token
    last_tokens: torch.Tensor  # [B]
    sampler: BatchSampler

    @property
    def kv_tokens(self) -> int:
        """Cache slots held, padding included."""
        return self.attention_mask.numel()


class ModelRunner:
    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.device = _resolve_device(config.device)
        self.dtype = _resolve_dtype(config.dtype, self.device)
        try:
            self.quantization_backend = resolve_backend(config.quantization, config.quantization_backend, self.device)
        except UnsupportedQuantization as exc:
            raise ModelLoadError(str(exc)) from exc

    # ---- loading -------------------------------------------------------------------------------------
    def load(self) -> None:
        started = time.perf_counter()
        if self.config.create_random and not (Path(self.config.model_path) / RANDOM_WEIGHTS_MARKER).exists():
            write_tiny_model(self.config.model_path)
        self.random_weights = (Path(self.config.model_path) / RANDOM_WEIGHTS_MARKER).exists()
        try:
            quantize = quantization_config(self.config.quantization, self.quantization_backend, self.dtype)
            self.processor = AutoProcessor.from_pretrained(self.config.model_path)
            self.model = Qwen2AudioForConditionalGeneration.from_pretrained(  # reads mmapped safetensors tensor by tensor
                self.config.model_path, dtype=self.dtype, device_map=self.device.type, quantization_config=quantize
            ).eval()
        except OSError as exc:
            raise ModelLoadError(_load_advice(self.config.model_path, exc)) from exc
        except UnsupportedQuantization as exc:
            raise ModelLoadError(str(exc)) from exc
        self.weights_bytes = weights_bytes(self.model)
        tokenizer = self.processor.tokenizer
        self._detokenizer = copy.deepcopy(tokenizer)  # decoding on the event loop must not share encoder state
        self.audio_token_id = self.model.config.audio_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_ids = _eos_ids(self.model.generation_config, tokenizer)
        self.max_model_len = self.model.config.text_config.max_position_embeddings
        self.vocab_size = self.model.config.text_config.vocab_size
        self.sampling_defaults = _sampling_defaults(self.model.generation_config)
        self._log_loaded(time.perf_counter() - started)
        self._threads = model_runner_cpu.StepThreads(self.device)
        self._prefixes = kv_cache.PrefixCache()
        if model_runner_cpu.can_pack(self.device, self.dtype, quantized=self.quantization_backend is not None):
            logger.info("%d linear layers packed for oneDNN", model_runner_cpu.pack_linears(self.model))
        self.memory = self._read_memory()

    def _log_loaded(self, seconds: float) -> None:
        weights_gib = self.weights_bytes / 2**30
        params = self.model.num_parameters()
        quantized = "" if self.quantization_backend is None else (
            f" ({self.config.quantization} weights by {self.quantization_backend})")
        memory = ""
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            memory = f", GPU {torch.cuda.get_device_name(self.device)} {free / 2**30:.1f}/{total / 2**30:.1f} GiB free"
        logger.info(
            "loaded %s: %s parameters, %.3f GiB of weights%s, on %s in %s, in %.1f s%s",
            self.config.model_path, f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.2f}M", weights_gib,
            quantized, self.device, str(self.dtype).removeprefix("torch."), seconds, memory,
        )
        if self.random_weights:
            logger.warning("=" * 88)
            logger.warning("RANDOM WEIGHTS: %s is a random-weight test model; its answers are meaningless.",
                           self.config.model_path)
            logger.warning("=" * 88)

    def kv_budget_tokens(self, requested: int, max_batch_size: int, utilization: float) -> int:
        """KV-cache tokens the scheduler may fill: `requested`, or what `utilization` of the memory leaves after
        the weights and activations, as read at load (0 = derive it). Never more than the batch can use."""
        cap = max_batch_size * self.max_model_len
        if requested:
            return requested
        return memory.kv_budget_tokens(self.memory, utilization, self.kv_bytes_per_token, cap)

    def _read_memory(self) -> memory.MemoryReading:
        """The device's memory after loading; on a GPU, with the activation peak of one 30 s prefill measured."""
        if self.device.type == "cuda":
            activations = self._prefill_peak_bytes()
            free, total = torch.cuda.mem_get_info(self.device)
            return memory.MemoryReading(total, free, torch.cuda.memory_reserved(self.device), self.weights_bytes,
                                        activations)
        import psutil

        ram = psutil.virtual_memory()
        # unquantized weights stay mmapped and are paged in as first used: the RSS at load does not show them yet
        held = max(psutil.Process().memory_info().rss, self.weights_bytes)
        return memory.MemoryReading(ram.total, ram.available, held, self.weights_bytes, 0)

    def _prefill_peak_bytes(self) -> int:
        """GPU memory one 30 s clip's prefill takes beyond the weights (its own KV cache included)."""
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        clip = np.zeros(int(MAX_CLIP_SECONDS * SAMPLE_RATE), np.float32)
        conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "profile"}]}]
        self.prefill([self.prepare(conversation, [clip])], [SamplingParams(max_tokens=1, temperature=0.0)])
        peak = torch.cuda.max_memory_allocated(self.device) - before
        torch.cuda.empty_cache()
        return peak

    def peak_memory_bytes(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"CPU, {torch.get_num_threads()} threads"

    @property
    def kv_bytes_per_token(self) -> int:
        text = self.model.config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return memory.kv_bytes_per_token(text.num_hidden_layers, text.num_key_value_heads, head_dim,
                                         self.dtype.itemsize)

    def warmup(self) -> None:
        """One short request through every path, so the first real request does not pay for lazy init."""
        self.run_probe(self.probe_prompt())

    def probe_prompt(self) -> Prompt:
        """A known-good request: a second of silence and a short question (tokenizing: the prep thread's work)."""
        conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "warm up"}]}]
        return self.prepare(conversation, [np.zeros(SAMPLE_RATE, np.float32)])

    def run_probe(self, prompt: Prompt) -> None:
        """Prefill and one decode step of the probe prompt, apart from any running batch."""
        state, _ = self.prefill([prompt], [SamplingParams(max_tokens=2, temperature=0.0)])
        self.decode(state)

    # ---- tokens ----------------------------------------------------------------------------------------
    def prepare(self, conversation: list[dict], clips: list[np.ndarray]) -> Prompt:
        """Chat messages (audio parts as {"type": "audio"}) + the clips, in order -> a tokenized prompt.

        Does what the processor does (each <|AUDIO|> becomes one token per 40 ms of audio), but computes the
        log-mel only as far as the encoder will read it instead of for a full 30 s window.
        """
        if any(clip.shape[0] > MAX_CLIP_SECONDS * SAMPLE_RATE for clip in clips):
            raise ValueError(f"an audio clip is longer than {MAX_CLIP_SECONDS:.0f} s")
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        pieces = text.split(self.processor.audio_token)
        if len(pieces) != len(clips) + 1:
            raise ValueError(f"the prompt has {len(pieces) - 1} audio markers for {len(clips)} clips")
        mels = [self._log_mel(np.pad(c, (0, max(0, MIN_CLIP_SAMPLES - c.shape[0])))) for c in clips]
        expanded = [self.processor.audio_token * _audio_tokens(frames) for _, frames in mels]
        text = pieces[0] + "".join(audio + piece for audio, piece in zip(expanded, pieces[1:]))
        token_ids = self.processor.tokenizer(text)["input_ids"]
        seconds = sum(c.shape[0] for c in clips) / SAMPLE_RATE
        return Prompt(token_ids, token_ids.count(self.audio_token_id), seconds, mels or None)

    def _log_mel(self, clip: np.ndarray) -> tuple[torch.Tensor, int]:
        """[mels, F] log-mel frames equal to the first F of the processor's 30 s ones, and the valid count L.

        F = L + 2 (rounded up to even) covers what the trimmed encoder reads. Zeros past the clip stand in for
        the processor's 30 s padding: every frame below F sees the same samples either way.
        """
        extractor = self.processor.feature_extractor
        hop, window = extractor.hop_length, extractor.n_fft
        valid = -(-clip.shape[0] // hop)  # frames the processor's attention mask marks valid
        frames = min(extractor.nb_max_frames, _round_up(valid + 2, 2))
        length = extractor.n_samples if frames * hop + window >= extractor.n_samples else frames * hop + window
        wave = np.pad(clip, (0, length - clip.shape[0]))
        mel = extractor(wave, sampling_rate=SAMPLE_RATE, padding="do_not_pad", return_tensors="pt")["input_features"]
        return mel[0, :, :frames], valid

    def decode_tokens(self, token_ids: list[int]) -> str:
        return self._detokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def token_piece(self, token_id: int) -> str:
        return self._detokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ---- steps -----------------------------------------------------------------------------------------
    def prefill(self, prompts: list[Prompt], params: list[SamplingParams]) -> tuple[BatchState, StepOutput]:
        """Encode the audio and the prompts of new requests (left-padded) and sample each row's first token."""
        self._threads.for_prefill()
        try:
            return self._prefill(prompts, params)
        except torch.OutOfMemoryError as exc:
            self._release_cached_memory()
            raise OutOfMemory(str(exc).splitlines()[0]) from exc

    def decode(self, state: BatchState) -> StepOutput:
        """One token for every row of the running batch."""
        self._threads.for_decode(len(state.positions))
        try:
            return self._decode(state)
        except torch.OutOfMemoryError as exc:
            self._release_cached_memory()
            raise OutOfMemory(str(exc).splitlines()[0]) from exc

    def _release_cached_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _prefill(self, prompts: list[Prompt], params: list[SamplingParams]) -> tuple[BatchState, StepOutput]:
        started = time.perf_counter()
        rows = [p.token_ids for p in prompts]
        input_ids, attention_mask = self._left_pad(rows)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, T], as generate() computes them
        cache, first = self._cache_from_shared_head(rows, input_ids.shape[1])  # first: the column computing starts at
        input_ids, block_positions = input_ids[:, first:], positions[:, first:]
        embeds = self.model.get_input_embeddings()(input_ids)  # [B, T - first, H]
        audio, encoder_seconds = self._encode_audio(prompts)
        if audio is not None:  # audio features take the places of the <|AUDIO|> tokens, clip after clip
            embeds = embeds.masked_scatter((input_ids == self.audio_token_id)[..., None], audio.to(embeds.dtype))
        hidden = self.model.model.language_model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=block_positions, cache=cache,
            use_cache=True,
        ).last_hidden_state[:, -1]  # [B, H]: only the last position needs logits
        sampler = BatchSampler.create(params, self.vocab_size, self.eos_token_ids, self.device)
        state = BatchState(cache, attention_mask, positions[:, -1] + 1, input_ids[:, -1], sampler)
        step = self._sample(state, hidden)
        step.seconds, step.encoder_seconds = time.perf_counter() - started, encoder_seconds
        return state, step

    def _cache_from_shared_head(self, rows: list[list[int]], width: int) -> tuple[DynamicCache, int]:
        """The prefill's cache, holding the keys and values of the head all rows share when it is cached (else
        computed now and cached for the next prefills), and the first column left to compute.

        Rows are left-padded to `width`; the computed block is the last `width - first` columns, as long as the
        longest row's remainder after the head. A shorter row's block also covers the end of its head (computed
        again) or padding, so its cached part is the first kept[i] head positions, right-aligned.
        """
        head = kv_cache.PrefixCache.shared_head(rows, self.audio_token_id)
        text_config = self.model.config.text_config
        if not head:
            return kv_cache.new_cache(text_config), 0
        prefix = self._prefixes.get(head)
        if prefix is None:
            cache = kv_cache.new_cache(text_config)
            ids = torch.tensor([head], device=self.device)
            self.model.model.language_model(input_ids=ids, position_ids=torch.arange(len(head), device=self.device)[None],
                                            cache=cache, use_cache=True)
            prefix = self._prefixes.put(head, cache)
        block = max(len(row) for row in rows) - len(head)
        first = width - block
        kept = [max(0, len(row) - block) for row in rows]
        return kv_cache.with_prefix(text_config, prefix, kept, first), first

    @torch.inference_mode()
    def _decode(self, state: BatchState) -> StepOutput:
        started = time.perf_counter()
        mask = state.attention_mask
        state.attention_mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [B, T+1]
        hidden = self.model.model.language_model(
            inputs_embeds=self.model.get_input_embeddings()(state.last_tokens[:, None]),
            attention_mask=state.attention_mask, position_ids=state.positions[:, None], cache=state.cache, use_cache=True,
        ).last_hidden_state[:, -1]
        state.positions = state.positions + 1
        step = self._sample(state, hidden)
        step.seconds = time.perf_counter() - started
        return step

    @torch.inference_mode()
    def filter(self, state: BatchState, keep: list[int]) -> None:
        """Drop the rows not in `keep` (finished or cancelled) and the cache columns no remaining row uses."""
        index = torch.tensor(keep, device=self.device)
        state.cache.batch_select_indices(index)
        state.attention_mask = state.attention_mask[index]
        state.positions = state.positions[index]
        state.last_tokens = state.last_tokens[index]
        state.sampler.select(keep)
        first_used = int(state.attention_mask.any(0).nonzero()[0])
        if first_used > 0:
            state.attention_mask = state.attention_mask[:, first_used:]
            kv_cache.trim_left(state.cache, first_used)

    @torch.inference_mode()
    def merge(self, running: BatchState, joining: BatchState) -> BatchState:
        """New rows join the running batch: both caches are left-padded to one width and stacked."""
        width = max(running.attention_mask.shape[1], joining.attention_mask.shape[1])
        kv_cache.stack(running.cache, joining.cache, width)
        masks = [_left_pad_mask(m, width) for m in (running.attention_mask, joining.attention_mask)]
        running.attention_mask = torch.cat(masks)
        running.positions = torch.cat([running.positions, joining.positions])
        running.last_tokens = torch.cat([running.last_tokens, joining.last_tokens])
        running.sampler.extend(joining.sampler)
        return running

    @torch.inference_mode()
    def _encode_audio(self, prompts: list[Prompt]) -> tuple[torch.Tensor | None, float]:
        """Audio features for every clip of `prompts`, in order: [audio tokens, H].

        The stock encoder runs every clip as a full 30 s window. Its attention already masks the padding, so
        running it on the valid mel frames (plus the two the convolutions look past the end) gives the same
        features for a fraction of the compute: a 5 s clip costs a sixth of a 30 s one.
        """
        clips = [clip for p in prompts for clip in (p.features or [])]
        if not clips:
            return None, 0.0
        started = time.perf_counter()
        tower = self.model.model.audio_tower
        frames = max(mel.shape[-1] for mel, _ in clips)
        features = torch.zeros(len(clips), clips[0][0].shape[0], frames)  # [N, mels, frames]
        for row, (mel, _) in enumerate(clips):
            features[row, :, : mel.shape[-1]] = mel  # past a clip's own frames nothing valid is computed
        features = features.to(self.device, self.dtype)
        lengths = torch.tensor([valid for _, valid in clips], device=self.device)  # [N] valid mel frames
        hidden = torch.nn.functional.gelu(tower.conv1(features))
        hidden = torch.nn.functional.gelu(tower.conv2(hidden)).permute(0, 2, 1)  # [N, frames/2, D]
        hidden = hidden + tower.embed_positions.weight[: hidden.shape[1]]
        conv_lengths = (lengths - 1) // 2 + 1
        valid = torch.arange(hidden.shape[1], device=self.device)[None] < conv_lengths[:, None]
        mask = create_bidirectional_mask(config=tower.config, inputs_embeds=hidden, attention_mask=valid.long())
        for layer in tower.layers:
            hidden = layer(hidden, mask)
        hidden = tower.layer_norm(tower.avg_pooler(hidden.permute(0, 2, 1)).permute(0, 2, 1))
        hidden = self.model.model.multi_modal_projector(hidden)  # [N, frames/4, H]
        out_lengths = (conv_lengths - 2) // 2 + 1  # audio tokens per clip, as the processor counted them
        keep = torch.arange(hidden.shape[1], device=self.device)[None] < out_lengths[:, None]
        return hidden[keep], time.perf_counter() - started

    def _sample(self, state: BatchState, hidden: torch.Tensor) -> StepOutput:
        logits = self.model.lm_head(hidden).float()  # [B, V]
        tokens, logprobs = state.sampler.sample(logits)
        state.last_tokens = torch.tensor(tokens, device=self.device)
        return StepOutput(tokens, logprobs)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)


def _audio_tokens(frames: int) -> int:
    """Audio tokens for `frames` valid mel frames: conv stride 2, then pooling by 2 (the processor's formula)."""
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    """[B, T] -> [B, width], zeros on the left."""
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))


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
