"""A request's state inside the engine, and the stream of events its caller reads."""

import asyncio
import time

from server.engine.incremental_detokenizer import IncrementalDetokenizer
from server.engine.interface import Detokenizer, PrefillInput
from server.engine.request import Logprob, Prompt, RequestOutput, SamplingParams, TokenLogprob


class Sequence:
    """One prompt's generation. `id` is the engine's own key for it (the model runner's rows are keyed by it);
    `request_id` names the HTTP request it serves, for logs and errors (a long upload's clips share one)."""

    def __init__(self, seq_id: int, request_id: str, prompt: Prompt, params: SamplingParams,
                 detokenizer: Detokenizer) -> None:
        self.id = seq_id
        self.request_id = request_id
        self.prompt = prompt
        self.params = params
        self.detokenizer = IncrementalDetokenizer(detokenizer.detokenize, params.stop)
        self._token_text = detokenizer.token_text
        self.output_ids: list[int] = []
        self.events: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()
        self.cancelled = False
        self.finished = False
        self.submitted_at = time.perf_counter()

    @property
    def max_total_tokens(self) -> int:
        return self.prompt.num_tokens + self.params.max_tokens

    def prefill_input(self) -> PrefillInput:
        """What to prefill: the prompt, and the tokens already generated if the request was preempted."""
        return PrefillInput(self.id, self.prompt, self.params, tuple(self.output_ids))

    def take(self, token: int, logprob: TokenLogprob | None, eos_token_ids: frozenset[int]) -> None:
        """This step's token: append it and send its event (the last one says why the request ended)."""
        self.output_ids.append(token)
        finish = None
        if token in eos_token_ids and not self.params.ignore_eos:
            finish = "stop"
        elif len(self.output_ids) >= self.params.max_tokens:
            finish = "length"
        text = self.detokenizer.push(token)  # special tokens such as EOS detokenize to ""
        if self.detokenizer.stopped:
            finish = "stop"
        if finish is not None:
            text += self.detokenizer.flush()
            self.finished = True
        logprobs = [self._with_texts(logprob)] if logprob else None
        self.events.put_nowait(RequestOutput(text, [token], logprobs, finish))

    def _with_texts(self, logprob: TokenLogprob) -> Logprob:
        text = self._token_text
        return Logprob(text(logprob.token_id), logprob.logprob, [(text(t), value) for t, value in logprob.top])

    def fail(self, error: Exception) -> None:
        if not self.finished:
            self.finished = True
            self.events.put_nowait(error)


class RequestStream:
    """The events of one request, ending with the one that carries `finish_reason`."""

    def __init__(self, sequence: Sequence) -> None:
        self._seq = sequence
        self._done = False

    @property
    def request_id(self) -> str:
        return self._seq.request_id

    def cancel(self) -> None:
        """Stop generating for this request; its batch slot and cache are freed at the next step."""
        self._seq.cancelled = True

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        item = await self._seq.events.get()
        if isinstance(item, Exception):
            self._done = True
            raise item
        self._done = item.finished
        return item
