"""A model runner that answers with given text: the real pipeline around it (processor, engine, detokenizer,
serving, formats), the answers those a trained checkpoint gives, which random weights never do.

Each answer is tokenized with the checkpoint's own tokenizer and emitted a token a step, then an end id. A request
under a grammar (structured outputs, language detection) gets `constrained(prompt)` instead, ignoring the grammar, and
is kept apart: `n` counts the free requests only, so a long upload's clips stay 0, 1, ... whatever else runs.
"""

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from transformers import AutoTokenizer

from server.engine.interface import LoadedModel, PrefillInput, StepOutput
from server.engine.request import Prompt, SamplingParams, TokenLogprob


class ScriptedRunner:
    def __init__(self, tokenizer, end_id: int, answer: Callable[[Prompt, int], str],
                 constrained: Callable[[Prompt], str]) -> None:
        """`answer(prompt, n)`: the text for the n-th free request prefilled (0, 1, ...: a long upload's clips in
        order); `constrained(prompt)`: the text for a request under a grammar."""
        self._tokenizer, self._end_id, self._answer, self._constrained = tokenizer, end_id, answer, constrained
        self._rows: dict[int, list[int]] = {}  # sequence id -> the tokens still to give
        self._wants_logprobs: dict[int, bool] = {}
        self.prompts: list[Prompt] = []  # every free prompt prefilled, in order
        self.constrained: list[tuple[Prompt, SamplingParams]] = []  # every constrained one, with its settings
        self.kv_tokens = 0

    def prefill(self, requests: Sequence[PrefillInput]) -> StepOutput:
        for request in requests:
            if request.params.grammar is not None:
                text = self._constrained(request.prompt)
                self.constrained.append((request.prompt, request.params))
            else:
                text = self._answer(request.prompt, len(self.prompts))
                self.prompts.append(request.prompt)
            tokens = self._tokenizer.encode(text, add_special_tokens=False) + [self._end_id]
            self._rows[request.seq_id] = tokens[len(request.output_ids):]
            self._wants_logprobs[request.seq_id] = request.params.logprobs is not None
        return self._step([r.seq_id for r in requests])

    def decode(self) -> StepOutput:
        return self._step(list(self._rows))

    def release(self, seq_ids: Collection[int]) -> None:
        for seq_id in seq_ids:
            self._rows.pop(seq_id, None)

    def run_probe(self, prompt: Prompt) -> None:
        pass

    def peak_memory_bytes(self) -> int:
        return 0

    def _step(self, seq_ids: list[int]) -> StepOutput:
        tokens = {seq_id: self._rows[seq_id].pop(0) if self._rows[seq_id] else self._end_id for seq_id in seq_ids}
        logprobs = {seq_id: TokenLogprob(token, -0.25, []) for seq_id, token in tokens.items()
                    if self._wants_logprobs[seq_id]}
        return StepOutput(tokens, logprobs)


def scripted(model: LoadedModel, model_dir: str, answer: Callable[[Prompt, int], str],
             constrained: Callable[[Prompt], str] = lambda prompt: "English") -> LoadedModel:
    """`model` (a loaded checkpoint) with its runner replaced by one that answers `answer` (and `constrained`)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return replace(model, runner=ScriptedRunner(tokenizer, end_id, answer, constrained))
