"""Per-row sampling over a batch whose requests each bring their own settings."""

from dataclasses import dataclass, field

import torch

from server.engine.request import SamplingParams, TokenLogprob
from server.runner import grammar


@dataclass
class BatchSampler:
    """Sampling state of one batch: settings, seeded generators, and what the penalties look at.

    The repetition penalty looks at every token of the row, prompt included, as transformers' generate and vLLM
    apply it; presence and frequency penalties count generated tokens only, as OpenAI defines them.
    """

    params: list[SamplingParams]
    generators: list[torch.Generator | None]
    generated: list[int]  # tokens sampled so far, per row
    seen: torch.Tensor | None  # [B, V] bool: in the prompt or generated; only when a row has a repetition penalty
    counts: torch.Tensor | None  # [B, V] times generated; only when a row has a presence or frequency penalty
    eos_ids: torch.Tensor  # [E]
    vocab_size: int
    matchers: list = field(default_factory=list)  # per row: its grammar's matcher (structured outputs), or None

    @classmethod
    def create(cls, params: list[SamplingParams], prompts: list[list[int]], outputs: list[tuple[int, ...]],
               vocab_size: int, eos_ids: tuple[int, ...], device: torch.device) -> "BatchSampler":
        """`outputs`: per row, the tokens it generated before (a preempted request resuming), counted as sampled."""
        generators = [_generator(p.seed, device) for p in params]
        seen = counts = None
        if any(p.repetition_penalty != 1.0 for p in params):
            seen = torch.zeros(len(params), vocab_size, dtype=torch.bool, device=device)
            for row, (prompt, output) in enumerate(zip(prompts, outputs)):
                seen[row, torch.tensor([*prompt, *output], dtype=torch.long, device=device)] = True
        if any(p.presence_penalty != 0.0 or p.frequency_penalty != 0.0 for p in params):
            counts = torch.zeros(len(params), vocab_size, device=device)
            for row, output in enumerate(outputs):
                if output:
                    counts[row].index_add_(0, torch.tensor(output, device=device), counts.new_ones(len(output)))
        generated = [len(output) for output in outputs]
        ends = frozenset(eos_ids)
        matchers = [grammar.start(p.grammar, output, ends) if p.grammar is not None else None
                    for p, output in zip(params, outputs)]
        return cls(params, generators, generated, seen, counts, torch.tensor(eos_ids, device=device), vocab_size,
                   matchers)

    def selected(self, keep: list[int]) -> "BatchSampler":
        """The state of these rows only (a new object: the batch swaps it in once everything else is ready)."""
        return BatchSampler([self.params[i] for i in keep], [self.generators[i] for i in keep],
                            [self.generated[i] for i in keep], None if self.seen is None else self.seen[keep],
                            None if self.counts is None else self.counts[keep], self.eos_ids, self.vocab_size,
                            [self.matchers[i] for i in keep])

    def extended(self, other: "BatchSampler") -> "BatchSampler":
        """This batch's rows, then those of a newly prefilled one (a new object, as for `selected`)."""
        seen = counts = None
        if self.seen is not None or other.seen is not None:
            seen = torch.cat([self._or_zeros(self.seen, torch.bool), other._or_zeros(other.seen, torch.bool)])
        if self.counts is not None or other.counts is not None:
            counts = torch.cat([self._or_zeros(self.counts), other._or_zeros(other.counts)])
        return BatchSampler(self.params + other.params, self.generators + other.generators,
                            self.generated + other.generated, seen, counts, self.eos_ids, self.vocab_size,
                            self.matchers + other.matchers)

    def _or_zeros(self, table: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if table is not None:
            return table
        return torch.zeros(len(self.params), self.vocab_size, dtype=dtype, device=self.eos_ids.device)

    def sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, list[int], list[TokenLogprob | None]]:
        """logits: [B, V] float32 for the next position -> one token per row, as a tensor on the device and as a
        list (and its logprobs if asked). A failure on the way leaves the sampler as it was, seeded generators
        included, so the step can be run again and draws what it would have drawn; the grammar matchers move
        last, once nothing can fail."""
        states = [(g, g.get_state()) for g in self.generators if g is not None]
        try:
            token_ids, logits = self._draw(logits)
            tokens, logprobs = token_ids.tolist(), self._logprobs(logits, token_ids)
            rows = torch.arange(len(tokens), device=token_ids.device)
            seen, counts = self.seen, self.counts  # new tables, swapped in below
            if seen is not None:
                seen = seen.index_put((rows, token_ids), seen.new_ones(()))
            if counts is not None:
                counts = counts.index_put((rows, token_ids), counts.new_ones(()), accumulate=True)
        except BaseException:
            for generator, state in states:
                generator.set_state(state)
            raise
        self.seen, self.counts, self.generated = seen, counts, [n + 1 for n in self.generated]
        constrained = [i for i, m in enumerate(self.matchers) if m is not None]
        if constrained:
            ends = frozenset(self.eos_ids.tolist())
            for i in constrained:
                grammar.advance(self.matchers[i], tokens[i], ends)
        return token_ids, tokens, logprobs

    def _draw(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids, and the logits they were drawn from (penalties and grammar masks applied: what logprobs
        report)."""
        constrained = [i for i, m in enumerate(self.matchers) if m is not None]
        # the grammar masks first, on the CPU: on a GPU they are computed while the step's kernels still run
        masks = grammar.fill_masks([self.matchers[i] for i in constrained],
                                   self.params[constrained[0]].grammar.vocab_size) if constrained else None
        logits = _finite(self._apply_penalties(logits))
        logits = self._block_early_eos(logits)
        if constrained:  # logits is this step's own tensor here (_finite made it): masked in place
            grammar.apply_masks(logits, constrained, masks, [self.matchers[i] for i in constrained], self.eos_ids)
        token_ids = torch.argmax(logits, dim=-1)  # [B]: greedy rows are done with one call
        for i, (p, g) in enumerate(zip(self.params, self.generators)):
            if not p.greedy:
                token_ids[i] = self._sample_row(logits[i], p, g)
        return token_ids, logits

    def _apply_penalties(self, logits: torch.Tensor) -> torch.Tensor:
        if self.seen is not None:  # transformers' RepetitionPenaltyLogitsProcessor: divide above 0, multiply below
            rep = torch.tensor([p.repetition_penalty for p in self.params], device=logits.device)[:, None]
            logits = torch.where(self.seen, torch.where(logits < 0, logits * rep, logits / rep), logits)
        if self.counts is not None:
            freq = torch.tensor([p.frequency_penalty for p in self.params], device=logits.device)[:, None]
            pres = torch.tensor([p.presence_penalty for p in self.params], device=logits.device)[:, None]
            logits = logits - freq * self.counts - pres * (self.counts > 0)
        return logits

    def _block_early_eos(self, logits: torch.Tensor) -> torch.Tensor:
        # min_tokens holds back the end of free rows only: a constrained row ends when its grammar is complete
        rows = [i for i, (p, n, m) in enumerate(zip(self.params, self.generated, self.matchers))
                if n < p.min_tokens and m is None]
        if rows:
            logits = logits.clone()
            logits[torch.tensor(rows, device=logits.device)[:, None], self.eos_ids[None, :]] = float("-inf")
        return logits

    @staticmethod
    def _sample_row(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None) -> int:
        probs, ids = _candidates(logits, p)
        choice = int(torch.multinomial(probs, 1, generator=generator))
        return int(ids[choice]) if ids is not None else choice

    def _logprobs(self, logits: torch.Tensor, token_ids: torch.Tensor) -> list[TokenLogprob | None]:
        wanted = [i for i, p in enumerate(self.params) if p.logprobs is not None]
        out: list[TokenLogprob | None] = [None] * len(self.params)
        if not wanted:
            return out
        logprobs = torch.log_softmax(logits[wanted], dim=-1)
        for row, i in enumerate(wanted):
            top = torch.topk(logprobs[row], self.params[i].logprobs) if self.params[i].logprobs else None
            alternatives = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
            token = int(token_ids[i])
            out[i] = TokenLogprob(token, float(logprobs[row, token]), alternatives)
        return out


def _candidates(logits: torch.Tensor, p: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One row's sampling distribution as transformers' warpers make it (temperature, top_k, top_p, min_p): the
    probabilities of the tokens that may be drawn and their ids (None: all of them, in vocabulary order).

    With a top_k the top_k best are taken first and everything else runs over them alone: the checkpoint's top_k=20
    keeps top_p's sort and the draw off the other 156,012 rows of the vocabulary, which on a CPU cost more than
    the decode step itself. Equal logits at the k-th place are kept, as transformers keeps them.
    """
    vocab = logits.shape[-1]
    ids = None
    if 0 < p.top_k < vocab:
        kth = torch.topk(logits, p.top_k).values[-1]
        ids = torch.nonzero(logits >= kth).squeeze(-1)
        logits = logits[ids]
    if p.top_p < 1.0:  # sorted, so the nucleus is a prefix
        logits, order = torch.sort(logits, descending=True)
        ids = order if ids is None else ids[order]
    probs = torch.softmax((logits - logits.max()) / p.temperature, dim=-1)  # <= 0: no overflow however small p.temperature
    if p.top_p < 1.0:
        probs = probs.masked_fill(torch.cumsum(probs, -1) - probs > p.top_p, 0.0)  # keep the token that crosses top_p
    if p.min_p > 0.0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    return probs, ids


def _finite(logits: torch.Tensor) -> torch.Tensor:
    """A tiny repetition_penalty divides logits into inf, and inf - inf in softmax is NaN: keep them finite."""
    limit = torch.finfo(logits.dtype).max
    return logits.nan_to_num(nan=-limit, posinf=limit, neginf=-limit)


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
