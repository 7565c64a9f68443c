"""The model thread's side of the model: prefill and decode steps over the running batch, which it owns.

Implements `server.engine.interface.ModelRunner`. Rows are keyed by the engine's sequence ids (`Batch.seq_ids`), so
the engine never sees row order. Every method runs on the engine's model thread, one at a time.
"""

import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import DynamicCache

from server.engine.interface import PrefillInput, StepOutput
from server.engine.request import BatchLost, OutOfMemory, Prompt, SamplingParams
from server.runner import kv_cache
from server.runner.audio_encoder import AudioEncoder
from server.runner.batch import Batch
from server.runner.cpu import THREADS_AT_START
from server.runner.language_model import LanguageModel
from server.runner.prefix_cache import PrefixCache
from server.runner.sampler import BatchSampler
from server.runner.static_decode import StaticDecoder, row_bucket
from server.runner.step_threads import DecodeStep, StepSplit, StepThreads

PROBE_TUNING_S = 10.0  # most of its start-up the warm-up spends measuring step settings (the rest settle online)


class Qwen2AudioRunner:
    def __init__(self, model, device: torch.device, dtype: torch.dtype, pad_token_id: int,
                 eos_token_ids: tuple[int, ...], static_decode: bool = False, cuda_graphs: bool = False,
                 threads: StepThreads | None = None) -> None:
        self.model = model
        self.device, self.dtype = device, dtype
        self._language_model = LanguageModel(model.model.language_model)
        self._text_config = model.config.text_config
        self._audio_token_id = model.config.audio_token_id
        self._pad_token_id = pad_token_id
        self._eos_token_ids = eos_token_ids
        self._encoder = AudioEncoder(model, device, dtype)
        self._prefixes = PrefixCache()
        self._threads = threads or StepThreads(device, THREADS_AT_START)
        self._batch: Batch | None = None
        # the static-shape decode step, captured in CUDA graphs where asked (and on CUDA): see static_decode
        self._static = StaticDecoder(model, device, pad_token_id, cuda_graphs) if static_decode or cuda_graphs else None
        self._row_capacity = row_bucket if self._static else int
        self.kv_tokens = 0  # read by the metrics from the event loop: a plain int, updated after each change

    @property
    def batch_size(self) -> int:
        """Rows in the running batch."""
        return len(self._batch.seq_ids) if self._batch is not None else 0

    @property
    def step_split(self) -> StepSplit | None:
        """Where decode steps' time goes, recorded while set (bench --step-split); None: not recorded."""
        return self._threads.split

    @step_split.setter
    def step_split(self, split: StepSplit | None) -> None:
        self._threads.split = split

    # ---- the engine's interface ------------------------------------------------------------------------
    def prefill(self, requests: Sequence[PrefillInput]) -> StepOutput:
        with _out_of_memory_reported(), self._threads.prefill(_tokens(requests)):
            joining, step = self._prefill(requests)
            if self._batch is None:
                self._batch = joining
            else:  # a failure leaves the running batch as it was: only the joining requests fail
                self._batch.extend(joining, self._row_capacity)
        self.kv_tokens = self._batch.kv_tokens
        return step

    def decode(self) -> StepOutput:
        if self._batch is None:
            return StepOutput({})
        with _out_of_memory_reported():
            step = self._decode(self._batch, self._threads.decode(self.batch_size))
        self.kv_tokens = self._batch.kv_tokens
        return step

    def release(self, seq_ids: Collection[int]) -> None:
        if self._batch is None:
            return
        self._threads.interrupt()
        gone = set(seq_ids)
        rows = [i for i, seq_id in enumerate(self._batch.seq_ids) if seq_id not in gone]
        if not rows:
            self._batch = None
        elif len(rows) < len(self._batch.seq_ids):
            with self._or_batch_lost():
                self._batch.keep(rows)
        self.kv_tokens = self._batch.kv_tokens if self._batch is not None else 0

    def run_probe(self, prompt: Prompt) -> None:
        """A short request through a prefill and a decode step (the engine's warm-up, and its check that the model
        still works). On a CPU, while the thread counts of the prefill and of one-row decode steps are still being
        measured, it runs them again (for up to PROBE_TUNING_S), so the first requests find them settled."""
        probe_input = PrefillInput(-1, prompt, SamplingParams(max_tokens=2, temperature=0.0))
        deadline = time.perf_counter() + PROBE_TUNING_S
        with _out_of_memory_reported():
            while True:
                with self._threads.prefill(_tokens([probe_input])):
                    probe, _ = self._prefill([probe_input])
                if not self._threads.measuring("prefill") or time.perf_counter() > deadline:
                    break
            while True:
                self._decode(probe, self._threads.decode(1))
                if not self._threads.measuring("layers@1", "projection@1", "sampling@1") or time.perf_counter() > deadline:
                    break

    def peak_memory_bytes(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0

    # ---- memory readings (loading and the memory bench) ---------------------------------------------
    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def prefill_peak_bytes(self, prompt: Prompt) -> int:
        """GPU memory one prefill of `prompt` takes beyond the weights (its own KV cache included)."""
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.reset_peak_memory()
        self._prefill([PrefillInput(-1, prompt, SamplingParams(max_tokens=1, temperature=0.0))])
        peak = torch.cuda.max_memory_allocated(self.device) - before
        torch.cuda.empty_cache()
        return peak

    def decode_peak_bytes(self, prompt: Prompt, rows: int) -> int:
        """GPU memory a decode step of `rows` rows of `prompt` takes beyond the weights and the cache it starts
        with (the logits above all; with CUDA graphs, what their pool holds)."""
        params = SamplingParams(max_tokens=2, temperature=0.0)
        batch, _ = self._prefill([PrefillInput(-1 - i, prompt, params) for i in range(rows)])
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.reset_peak_memory()
        self._decode(batch, self._threads.decode(rows))
        peak = torch.cuda.max_memory_allocated(self.device) - before
        del batch
        torch.cuda.empty_cache()
        return peak

    # ---- steps -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _prefill(self, requests: Sequence[PrefillInput]) -> tuple[Batch, StepOutput]:
        """Encode the audio and the prompts of new requests (left-padded) and sample each row's first token."""
        started = time.perf_counter()
        computed, copies = _share_prompts(requests)  # n samples of one request: one prefill, copied into n rows
        rows = [[*r.prompt.token_ids, *r.output_ids] for r in computed]
        input_ids, attention_mask = self._left_pad(rows)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, T], as generate() computes them
        cache, first = self._cache_from_shared_head(rows, input_ids.shape[1])  # first: the column computing starts at
        input_ids, block_positions = input_ids[:, first:], positions[:, first:]
        embeds = self.model.get_input_embeddings()(input_ids)  # [B, T - first, H]
        clips = [clip for r in computed for clip in (r.prompt.features or [])]
        encoder_seconds = 0.0
        if clips:  # audio features take the places of the <|AUDIO|> tokens, clip after clip
            encoding = time.perf_counter()
            audio = self._encoder(clips)
            encoder_seconds = time.perf_counter() - encoding
            embeds = embeds.masked_scatter((input_ids == self._audio_token_id)[..., None], audio.to(embeds.dtype))
        hidden = self._language_model(cache, inputs_embeds=embeds, attention_mask=attention_mask,
                                      position_ids=block_positions)[:, -1]  # [B, H]: only the last position needs logits
        if copies is not None:
            index = torch.tensor(copies, device=self.device)
            cache.batch_select_indices(index)
            hidden, attention_mask, positions, input_ids = (t[index] for t in (hidden, attention_mask, positions,
                                                                                input_ids))
        sampler = BatchSampler.create([r.params for r in requests], [r.prompt.token_ids for r in requests],
                                      [r.output_ids for r in requests], self._text_config.vocab_size,
                                      self._eos_token_ids, self.device)
        batch = Batch([r.seq_id for r in requests], cache, attention_mask, positions[:, -1] + 1,
                      input_ids[:, -1], sampler)
        step = self._sample(batch, hidden)
        step.seconds, step.encoder_seconds = time.perf_counter() - started, encoder_seconds
        return batch, step

    def _cache_from_shared_head(self, rows: list[list[int]], width: int) -> tuple[DynamicCache, int]:
        """The prefill's cache, holding the keys and values of the head all rows share when it is cached (else
        computed now and cached for the next prefills), and the first column left to compute.

        Rows are left-padded to `width`; the computed block is the last `width - first` columns, as long as the
        longest row's remainder after the head. A shorter row's block also covers the end of its head (computed
        again) or padding, so its cached part is the first kept[i] head positions, right-aligned.
        """
        head = PrefixCache.shared_head(rows, self._audio_token_id)
        if not head:
            return kv_cache.new_cache(self._text_config), 0
        prefix = self._prefixes.get(head)
        if prefix is None:
            cache = kv_cache.new_cache(self._text_config)
            ids = torch.tensor([head], device=self.device)
            self._language_model(cache, input_ids=ids, position_ids=torch.arange(len(head), device=self.device)[None])
            prefix = self._prefixes.put(head, cache)
        block = max(len(row) for row in rows) - len(head)
        first = width - block
        kept = [max(0, len(row) - block) for row in rows]
        return kv_cache.with_prefix(self._text_config, prefix, kept, first), first

    @torch.inference_mode()
    def _decode(self, batch: Batch, step: DecodeStep) -> StepOutput:
        """One token for every row of `batch`, each part of the step at its own threads (step_threads). A step that
        fails leaves the batch as it was before it."""
        started = time.perf_counter()
        mask = batch.attention_mask
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [B, T+1]
        positions = batch.positions + 1
        lengths = kv_cache.lengths(batch.cache)
        try:
            if self._static is not None:  # writes the new column outside every row's view, advanced below
                with step.part("layers"):
                    logits = self._static.logits(batch)
            else:
                with step.part("layers"):
                    hidden = self._language_model(
                        batch.cache, inputs_embeds=self.model.get_input_embeddings()(batch.last_tokens[:, None]),
                        attention_mask=mask, position_ids=batch.positions[:, None],
                    )[:, -1]  # [B, H]
                with step.part("projection"):
                    logits = self.model.lm_head(hidden).float()  # [B, V]
            with step.part("sampling"):
                token_ids, tokens, logprobs = batch.sampler.sample(logits)
        except BaseException:
            kv_cache.set_lengths(batch.cache, lengths)  # layers that already took this step's column give it back
            raise
        step.done()
        if self._static is not None:
            kv_cache.set_lengths(batch.cache, [length + 1 for length in lengths])
        batch.attention_mask, batch.positions, batch.last_tokens = mask, positions, token_ids
        return self._step_output(batch, tokens, logprobs, started)

    def _sample(self, batch: Batch, hidden: torch.Tensor) -> StepOutput:
        token_ids, tokens, logprobs = batch.sampler.sample(self.model.lm_head(hidden).float())  # [B, V] logits
        batch.last_tokens = token_ids
        return self._step_output(batch, tokens, logprobs)

    @staticmethod
    def _step_output(batch: Batch, tokens: list[int], logprobs: list, started: float | None = None) -> StepOutput:
        return StepOutput(dict(zip(batch.seq_ids, tokens)),
                          {seq_id: lp for seq_id, lp in zip(batch.seq_ids, logprobs) if lp is not None},
                          seconds=time.perf_counter() - started if started is not None else 0.0)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    @contextmanager
    def _or_batch_lost(self) -> Iterator[None]:
        """Rows joining or leaving touch every layer of the cache: a failure part-way leaves it unusable."""
        try:
            yield
        except Exception as exc:
            self._batch, self.kv_tokens = None, 0
            _release_cached_memory(self.device)
            raise BatchLost(f"the running batch was lost ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc


def _tokens(requests: Sequence[PrefillInput]) -> int:
    """Positions a prefill computes at most (the shared head aside): what its time is measured per."""
    return sum(r.prompt.num_tokens + len(r.output_ids) for r in requests)


def _share_prompts(requests: Sequence[PrefillInput]) -> tuple[list[PrefillInput], list[int] | None]:
    """The requests whose prompts to compute, and for each request the row of its prompt among them (None: one
    each). Samples of one request (n > 1) share their Prompt object; one resumed after preemption has its own
    tokens and is computed alone."""
    computed: list[PrefillInput] = []
    rows: dict[int, int] = {}  # id(prompt) -> its row in `computed`
    copies = []
    for r in requests:
        key = id(r.prompt) if not r.output_ids else -1 - len(computed)
        if key not in rows:
            rows[key] = len(computed)
            computed.append(r)
        copies.append(rows[key])
    return computed, copies if len(computed) < len(requests) else None


@contextmanager
def _out_of_memory_reported() -> Iterator[None]:
    """torch's out-of-memory error as the engine's own (the engine does not import torch)."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        _release_cached_memory(torch.device("cuda"))
        raise OutOfMemory(str(exc).splitlines()[0]) from exc


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
