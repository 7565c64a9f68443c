"""The engine's one contract with the model side: three objects, each used from one thread, and a description.

The engine schedules; it never sees a tensor. What it needs from the model is narrow:
- a `ModelRunner` (the model thread): prefill these requests into the running batch, decode one step for every
  row, release these rows. The runner keeps the batch (KV cache, sampling state) itself, keyed by sequence id, so
  no row order is shared between the two sides.
- a `Processor` (the prep thread): a conversation and its audio clips -> a tokenized `Prompt` with features.
- a `Detokenizer` (the event loop): token ids -> text.
Each object is used from its own thread only; `server.runner` implements them with torch and transformers, the
engine's unit tests with plain Python.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from server.engine.request import Prompt, SamplingParams, TokenLogprob


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the serving layer needs to know about the loaded model, read-only, published by the engine at start."""

    max_model_len: int  # context length, prompt and answer together
    audio_tokens_per_second: float  # tokens one second of audio takes in a prompt
    sampling_defaults: Mapping[str, float]  # what the checkpoint's generation_config.json sets
    eos_token_ids: tuple[int, ...]
    prompt_format: str  # "chat": an Instruct checkpoint's chat template; "base": the base checkpoint's task prompts
    random_weights: bool  # a random-weight test model (answers are meaningless)
    weights_bytes: int
    kv_bytes_per_token: int
    kv_budget_tokens: int  # KV-cache slots the scheduler may fill (padding included)
    kv_spare_columns: int  # slots per row the cache holds beyond the row's tokens (room to grow without copying)
    kv_row_multiple: int  # the cache holds rows in multiples of this (the static decode step's row buckets)
    device: str  # where the model runs, by name: "NVIDIA H200", "CPU, 2 threads"
    dtype: str  # of the weights and activations
    quantization_backend: str | None  # who quantized the weights, if anyone

    @property
    def kv_layout(self) -> tuple[int, int, int]:
        """What the scheduler needs to count the cache's slots: budget, spare columns per row, row multiple."""
        return self.kv_budget_tokens, self.kv_spare_columns, self.kv_row_multiple


@dataclass(frozen=True, slots=True)
class PrefillInput:
    """A request joining the running batch: its prompt, plus the tokens it already generated if it was preempted
    (they are prefilled after the prompt, and sampling goes on as if it had never stopped)."""

    seq_id: int
    prompt: Prompt
    params: SamplingParams
    output_ids: tuple[int, ...] = ()


@dataclass(slots=True)
class StepOutput:
    """One new token for each row the step ran, by sequence id, and what the step cost."""

    tokens: dict[int, int]
    logprobs: dict[int, TokenLogprob] = field(default_factory=dict)  # rows whose params ask for logprobs
    seconds: float = 0.0
    encoder_seconds: float = 0.0


class ModelRunner(Protocol):
    """The model thread's side. A call that fails raises `OutOfMemory` when the device ran out of memory,
    `BatchLost` when the running batch could not be kept (every row in it is gone), or whatever else went wrong;
    but for `BatchLost`, the running batch is then as it was before the call."""

    @property
    def kv_tokens(self) -> int:
        """KV-cache slots the running batch holds, padding included."""
        ...

    def prefill(self, requests: Sequence[PrefillInput]) -> StepOutput:
        """Encode and prefill the new requests together, add them to the running batch, sample their first token."""
        ...

    def decode(self) -> StepOutput:
        """One token for every row of the running batch."""
        ...

    def release(self, seq_ids: Collection[int]) -> None:
        """These rows leave the batch (finished, cancelled, failed, or preempted to be prefilled again later)."""
        ...

    def run_probe(self, prompt: Prompt) -> None:
        """Prefill and decode a known-good prompt apart from the running batch (warm-up, and health after failures)."""
        ...

    def peak_memory_bytes(self) -> int:
        """Peak accelerator memory allocated (0 on the CPU); safe to call from any thread."""
        ...


class Processor(Protocol):
    """The prep thread's side."""

    def prepare(self, conversation: list[dict], clips: Sequence) -> Prompt:
        """A conversation (server.engine.conversation) and its clips, in order -> a prompt. ValueError if refused."""
        ...

    def probe_prompt(self) -> Prompt:
        """A known-good short request: a second of silence and a question."""
        ...

    def compile_grammar(self, response_format: dict) -> object:
        """{"type": "json_object"}, {"type": "json_schema", "schema": {...}} or {"type": "choice", "choices": [...]}
        (one of these strings) -> the grammar SamplingParams.grammar carries to the runner (opaque to the engine).
        ValueError, saying why, if it cannot be compiled."""
        ...


class Detokenizer(Protocol):
    """The event loop's side."""

    def detokenize(self, token_ids: list[int]) -> str:
        """Text of the ids, special tokens left out."""
        ...

    def token_text(self, token_id: int) -> str:
        """One token's own text, special tokens included (what logprobs show)."""
        ...


@dataclass(frozen=True, slots=True)
class LoadedModel:
    info: ModelInfo
    runner: ModelRunner
    processor: Processor
    detokenizer: Detokenizer
