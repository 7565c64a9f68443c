"""A model runner that answers with given text: the real pipeline around it (processor, engine, detokenizer,
serving, formats), the answers those a trained checkpoint gives, which random weights never do.

Each answer is tokenized with the checkpoint's own tokenizer and emitted a token a step, then an end id.
"""

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from transformers import AutoTokenizer

from server.engine.interface import LoadedModel, PrefillInput, StepOutput
from server.engine.request import Prompt, TokenLogprob


class ScriptedRunner:
    def __init__(self, tokenizer, end_id: int, answer: Callable[[Prompt, int], str]) -> None:
        """`answer(prompt, n)`: the text for the n-th request prefilled (0, 1, ...: a long upload's clips in order)."""
        self._tokenizer, self._end_id, self._answer = tokenizer, end_id, answer
        self._rows: dict[int, list[int]] = {}  # sequence id -> the tokens still to give
        self._wants_logprobs: dict[int, bool] = {}
        self.prompts: list[Prompt] = []  # every prompt prefilled, in order
        self.kv_tokens = 0

    def prefill(self, requests: Sequence[PrefillInput]) -> StepOutput:
        for request in requests:
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


def scripted(model: LoadedModel, model_dir: str, answer: Callable[[Prompt, int], str]) -> LoadedModel:
    """`model` (a loaded checkpoint) with its runner replaced by one that answers `answer`."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return replace(model, runner=ScriptedRunner(tokenizer, end_id, answer))
