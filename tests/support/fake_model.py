"""A model behind the engine's interface in plain Python: no torch, each step in microseconds.

Its "greedy" token is a function of every token before it (prompt and output), as a real model's is, so an answer
can be computed ahead (`answer`), and a request preempted and prefilled again with its output so far must go on
exactly as if it had never stopped. A prompt can script its answer instead (`FakeRunner.scripts`), to end with EOS.
The runner records each step's rows and can be made to fail with tests.support.faults.replaced, like the real one.
"""

from collections.abc import Collection, Sequence

from server.engine.interface import LoadedModel, ModelInfo, PrefillInput, StepOutput
from server.engine.request import Prompt, SamplingParams, TokenLogprob

EOS = 0
END_OF_TEXT = 49  # a second end id, as Qwen2-Audio has two (<|endoftext|> and <|im_end|>)
VOCAB = 50
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def next_token(tokens: Sequence[int]) -> int:
    """Never an end id: a request ends by its length unless its prompt scripts one."""
    return 1 + sum(token * (i + 7) for i, token in enumerate(tokens)) % (VOCAB - 2)


def answer(prompt: Prompt, length: int) -> list[int]:
    """The tokens the fake model gives `prompt` (unscripted), `length` of them."""
    tokens = list(prompt.token_ids)
    for _ in range(length):
        tokens.append(next_token(tokens))
    return tokens[prompt.num_tokens :]


def prompt(*token_ids: int) -> Prompt:
    return Prompt(list(token_ids), audio_tokens=0, audio_seconds=0.0)


class FakeRunner:
    def __init__(self) -> None:
        self.rows: dict[int, list[int]] = {}  # sequence id -> its tokens so far; in the order rows joined
        self.outputs: dict[int, int] = {}  # sequence id -> tokens it generated so far
        self.scripts: dict[tuple[int, ...], list[int]] = {}  # prompt token ids -> the answer to give instead
        self.steps: list[tuple[str, list[int]]] = []  # ("prefill" | "decode", the rows' sequence ids)
        self.kv_seen: list[int] = []  # KV slots held at the start of every decode step
        self.probes = 0
        self._prompts: dict[int, tuple[int, ...]] = {}
        self._logprobs: dict[int, int | None] = {}

    @property
    def kv_tokens(self) -> int:
        """As a left-padded batch holds them: rows x the longest row."""
        return len(self.rows) * max((len(tokens) for tokens in self.rows.values()), default=0)

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    def prefill(self, requests: Sequence[PrefillInput]) -> StepOutput:
        self.steps.append(("prefill", [r.seq_id for r in requests]))
        for r in requests:
            self.rows[r.seq_id] = [*r.prompt.token_ids, *r.output_ids]
            self.outputs[r.seq_id] = len(r.output_ids)
            self._prompts[r.seq_id] = tuple(r.prompt.token_ids)
            self._logprobs[r.seq_id] = r.params.logprobs
        return self._step([r.seq_id for r in requests])

    def decode(self) -> StepOutput:
        self.steps.append(("decode", list(self.rows)))
        self.kv_seen.append(self.kv_tokens)
        return self._step(list(self.rows))

    def release(self, seq_ids: Collection[int]) -> None:
        for seq_id in seq_ids:
            self.rows.pop(seq_id, None)

    def run_probe(self, prompt: Prompt) -> None:
        next_token(prompt.token_ids)
        self.probes += 1

    def peak_memory_bytes(self) -> int:
        return 0

    def _step(self, seq_ids: list[int]) -> StepOutput:
        tokens, logprobs = {}, {}
        for seq_id in seq_ids:
            script = self.scripts.get(self._prompts[seq_id])
            done = self.outputs[seq_id]
            token = script[done] if script and done < len(script) else next_token(self.rows[seq_id])
            self.rows[seq_id].append(token)
            self.outputs[seq_id] = done + 1
            tokens[seq_id] = token
            if self._logprobs[seq_id] is not None:
                logprobs[seq_id] = TokenLogprob(token, -0.5, [(token, -0.5), (EOS, -2.0)][: self._logprobs[seq_id]])
        return StepOutput(tokens, logprobs)


class FakeProcessor:
    def prepare(self, conversation: list[dict], clips: Sequence) -> Prompt:
        text = " ".join(m["content"] if isinstance(m["content"], str) else "" for m in conversation)
        return prompt(*(1 + ord(c) % (VOCAB - 1) for c in text))

    def probe_prompt(self) -> Prompt:
        return prompt(1, 2, 3)


class FakeDetokenizer:
    """Token t is the letter LETTERS[t % 26]; EOS is special (no text)."""

    def detokenize(self, token_ids: list[int]) -> str:
        return "".join(LETTERS[t % 26] for t in token_ids if t not in (EOS, END_OF_TEXT))

    def token_text(self, token_id: int) -> str:
        return {EOS: "<eos>", END_OF_TEXT: "<end>"}.get(token_id, LETTERS[token_id % 26])


def fake_model(kv_budget_tokens: int = 100_000) -> LoadedModel:
    info = ModelInfo(
        max_model_len=4096, audio_tokens_per_second=25.0, sampling_defaults={}, eos_token_ids=(EOS, END_OF_TEXT),
        prompt_format="chat",
        random_weights=True, weights_bytes=0, kv_bytes_per_token=1, kv_budget_tokens=kv_budget_tokens,
        kv_spare_columns=0, kv_row_multiple=1, device="none",
        dtype="none", quantization_backend=None,
    )
    return LoadedModel(info, FakeRunner(), FakeProcessor(), FakeDetokenizer())


GREEDY = SamplingParams(max_tokens=10, temperature=0.0)
LONG = SamplingParams(max_tokens=10_000, ignore_eos=True)  # runs until cancelled, failed or stopped
