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

    A step pays only for what its rows asked for: a greedy row is one argmax (a vectorized one: first_argmax); the repetition penalty gathers and
    scatters the row's own tokens (as transformers' RepetitionPenaltyLogitsProcessor does), not a pass over the
    156,032-token vocabulary; logprobs are computed for the rows that ask for them only; the step's logits are the
    step's own tensor, changed in place rather than copied.
    """

    params: list[SamplingParams]
    generators: list[torch.Generator | None]
    generated: list[int]  # tokens sampled so far, per row
    history: torch.Tensor | None  # [B, L] every row's prompt and generated ids, left-filled with its first id
    # (repeats change nothing); only when a row has a repetition penalty
    counts: torch.Tensor | None  # [B, V] times generated; only when a row has a presence or frequency penalty
    eos_ids: torch.Tensor  # [E]
    vocab_size: int
    matchers: list = field(default_factory=list)  # per row: its grammar's matcher (structured outputs), or None
    repetition: torch.Tensor | None = None  # [B, 1] each row's repetition penalty, with `history`

    @classmethod
    def create(cls, params: list[SamplingParams], prompts: list[list[int]], outputs: list[tuple[int, ...]],
               vocab_size: int, eos_ids: tuple[int, ...], device: torch.device) -> "BatchSampler":
        """`outputs`: per row, the tokens it generated before (a preempted request resuming), counted as sampled."""
        generators = [_generator(p.seed, device) for p in params]
        history = counts = None
        if any(p.repetition_penalty != 1.0 for p in params):
            rows = [[*prompt, *output] for prompt, output in zip(prompts, outputs)]
            width = max(len(row) for row in rows)
            history = torch.tensor([[row[0]] * (width - len(row)) + row for row in rows], device=device)
        if any(p.presence_penalty != 0.0 or p.frequency_penalty != 0.0 for p in params):
            counts = torch.zeros(len(params), vocab_size, device=device)
            for row, output in enumerate(outputs):
                if output:
                    counts[row].index_add_(0, torch.tensor(output, device=device), counts.new_ones(len(output)))
        generated = [len(output) for output in outputs]
        ends = frozenset(eos_ids)
        matchers = [grammar.start(p.grammar, output, ends) if p.grammar is not None else None
                    for p, output in zip(params, outputs)]
        return cls(params, generators, generated, history, counts, torch.tensor(eos_ids, device=device), vocab_size,
                   matchers, _repetition(params, history))

    def selected(self, keep: list[int]) -> "BatchSampler":
        """The state of these rows only (a new object: the batch swaps it in once everything else is ready)."""
        params = [self.params[i] for i in keep]
        history = None if self.history is None else self.history[keep]
        return BatchSampler(params, [self.generators[i] for i in keep], [self.generated[i] for i in keep], history,
                            None if self.counts is None else self.counts[keep], self.eos_ids, self.vocab_size,
                            [self.matchers[i] for i in keep], _repetition(params, history))

    def extended(self, other: "BatchSampler") -> "BatchSampler":
        """This batch's rows, then those of a newly prefilled one (a new object, as for `selected`)."""
        history = counts = None
        if self.history is not None or other.history is not None:
            ours, theirs = self._or_any_ids(self.history), other._or_any_ids(other.history)
            width = max(ours.shape[1], theirs.shape[1])
            history = torch.cat([_left_fill(ours, width), _left_fill(theirs, width)])
        if self.counts is not None or other.counts is not None:
            counts = torch.cat([self._or_zeros(self.counts), other._or_zeros(other.counts)])
        params = self.params + other.params
        return BatchSampler(params, self.generators + other.generators, self.generated + other.generated, history,
                            counts, self.eos_ids, self.vocab_size, self.matchers + other.matchers,
                            _repetition(params, history))

    def _or_zeros(self, table: torch.Tensor | None) -> torch.Tensor:
        if table is not None:
            return table
        return torch.zeros(len(self.params), self.vocab_size, device=self.eos_ids.device)

    def _or_any_ids(self, history: torch.Tensor | None) -> torch.Tensor:
        """Rows without a repetition penalty (1.0) may list any ids: dividing by 1 changes nothing."""
        if history is not None:
            return history
        return torch.zeros(len(self.params), 1, dtype=torch.long, device=self.eos_ids.device)

    def sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, list[int], list[TokenLogprob | None]]:
        """logits: [B, V] float32 for the next position, this step's own (changed in place) -> one token per row, as
        a tensor on the device and as a list (and its logprobs if asked). A failure on the way leaves the sampler as
        it was, seeded generators included, so the step can be run again and draws what it would have drawn; the
        grammar matchers move last, once nothing can fail."""
        states = [(g, g.get_state()) for g in self.generators if g is not None]
        try:
            token_ids, logits = self._draw(logits)
            tokens, logprobs = token_ids.tolist(), self._logprobs(logits, token_ids)
            history, counts = self.history, self.counts  # new tables, swapped in below
            if history is not None:
                history = torch.cat([history, token_ids[:, None]], dim=1)
            if counts is not None:
                rows = torch.arange(len(tokens), device=token_ids.device)
                counts = counts.index_put((rows, token_ids), counts.new_ones(()), accumulate=True)
        except BaseException:
            for generator, state in states:
                generator.set_state(state)
            raise
        self.history, self.counts, self.generated = history, counts, [n + 1 for n in self.generated]
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
        logits = self._apply_penalties(logits)
        self._block_early_eos(logits)
        if constrained:
            grammar.apply_masks(logits, constrained, masks, [self.matchers[i] for i in constrained], self.eos_ids)
        token_ids = first_argmax(logits)  # [B]: greedy rows are done with one call
        for i, (p, g) in enumerate(zip(self.params, self.generators)):
            if not p.greedy:
                token_ids[i] = self._sample_row(logits[i], p, g)
        return token_ids, logits

    def _apply_penalties(self, logits: torch.Tensor) -> torch.Tensor:
        if self.history is not None:  # transformers' RepetitionPenaltyLogitsProcessor: divide above 0, multiply below
            scores = logits.gather(1, self.history)
            scores = _finite(torch.where(scores < 0, scores * self.repetition, scores / self.repetition))
            logits.scatter_(1, self.history, scores)
        if self.counts is not None:
            freq = torch.tensor([p.frequency_penalty for p in self.params], device=logits.device)[:, None]
            pres = torch.tensor([p.presence_penalty for p in self.params], device=logits.device)[:, None]
            logits = _finite(logits - freq * self.counts - pres * (self.counts > 0))
        return logits

    def _block_early_eos(self, logits: torch.Tensor) -> None:
        # min_tokens holds back the end of free rows only: a constrained row ends when its grammar is complete
        rows = [i for i, (p, n, m) in enumerate(zip(self.params, self.generated, self.matchers))
                if n < p.min_tokens and m is None]
        if rows:
            logits[torch.tensor(rows, device=logits.device)[:, None], self.eos_ids[None, :]] = float("-inf")

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
        rows = logits if len(wanted) == len(self.params) else logits[wanted]
        logprobs = torch.log_softmax(rows, dim=-1)  # one fused pass: faster than a logsumexp on the CPU
        chosen = logprobs.gather(1, token_ids[wanted][:, None])[:, 0].tolist()
        for row, i in enumerate(wanted):
            top = torch.topk(logprobs[row], self.params[i].logprobs) if self.params[i].logprobs else None
            alternatives = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
            out[i] = TokenLogprob(int(token_ids[i]), chosen[row], alternatives)
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


def first_argmax(logits: torch.Tensor, block: int = 128) -> torch.Tensor:
    """[B, V] -> [B]: torch.argmax's answer (the first of equal maxima; the first NaN if any), found block by block.

    On a CPU torch's argmax walks the row one element at a time (0.13 ms for a 156,032-token row here), while amax
    is vectorized (8 us): the maxima of blocks of `block` logits find the block holding the row's first maximum, and
    one argmax over that block and one over the blocks' maxima finish it. On a GPU argmax is one fast kernel.
    """
    rows, vocab = logits.shape
    full = vocab - vocab % block
    if logits.device.type != "cpu" or full < 16 * block:
        return torch.argmax(logits, dim=-1)
    blocks = logits[:, :full].reshape(rows, -1, block)  # [B, V // block, block]
    best_block = blocks.amax(-1).argmax(-1)  # [B]
    index = best_block * block + blocks[torch.arange(rows, device=logits.device), best_block].argmax(-1)
    if full < vocab:  # the last logits, fewer than a block: they win only if greater (NaN counting as greatest)
        tail = full + logits[:, full:].argmax(-1)
        last, best = logits.gather(1, tail[:, None])[:, 0], logits.gather(1, index[:, None])[:, 0]
        index = torch.where((last > best) | last.isnan() & ~best.isnan(), tail, index)
    return index


def _finite(logits: torch.Tensor) -> torch.Tensor:
    """A tiny repetition_penalty divides logits into inf, and inf - inf in softmax is NaN: keep them finite."""
    limit = torch.finfo(logits.dtype).max
    return logits.nan_to_num(nan=-limit, posinf=limit, neginf=-limit)


def _repetition(params: list[SamplingParams], history: torch.Tensor | None) -> torch.Tensor | None:
    """[B, 1] the rows' repetition penalties, when the batch keeps their history."""
    if history is None:
        return None
    return torch.tensor([[p.repetition_penalty] for p in params], device=history.device)


def _left_fill(history: torch.Tensor, width: int) -> torch.Tensor:
    """[B, L] -> [B, width], each row's first id repeated on the left."""
    return torch.cat([history[:, :1].expand(-1, width - history.shape[1]), history], dim=1)


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
