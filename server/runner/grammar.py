"""Structured outputs: a response_format compiled into a grammar, and the per-row token masks that enforce it.

The library is llguidance (Microsoft's guidance engine, in Rust): it computes a row's mask over the 156,032-token
vocabulary in tens of microseconds, takes JSON schemas directly (objects, arrays, enums, const, anyOf/oneOf,
$ref/$defs, string lengths and patterns, number ranges), builds its token trie from the Hugging Face tokenizer
(`llguidance.hf.from_tokenizer`), and keeps one small matcher per row (`LLMatcher`) that can be copied and
replayed, which is what a batch whose rows come and go, and are preempted and resumed, needs.

Two sides, two threads:
- `GrammarCompiler` (the prep thread) turns a response_format into a compiled matcher, a template no row
  advances; a schema the library cannot compile is a ValueError naming the problem (a 400 upstream).
- `start`, `fill_masks`, `allowed` and `advance` (the model thread) copy the template for a row, compute the
  rows' masks, and feed each row's sampled token to its matcher.
"""

import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache

import llguidance
import llguidance.hf
import torch
from llguidance import LLMatcher

logger = logging.getLogger(__name__)

# Compact JSON (", " and ": " between items, no other whitespace): free whitespace would let a model pad an
# answer with newlines and spaces until max_tokens, a loop small models fall into.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_COMPILED_CACHE = 64  # response formats kept compiled: services tend to send the same schema again and again


@dataclass(frozen=True, slots=True)
class Grammar:
    """A compiled response format, as it travels in SamplingParams (opaque above the runner)."""

    template: LLMatcher  # never advanced: each row copies it
    vocab_size: int  # tokens the matcher's masks cover (the tokenizer's; the model's logits may be wider)


class GrammarCompiler:
    """Owns the llguidance tokenizer (built once, about a second for Qwen2's vocabulary); used on the prep thread."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer)
        self._compile = lru_cache(maxsize=_COMPILED_CACHE)(self._compile_text)

    def compile(self, response_format: dict) -> Grammar:
        """{"type": "json_object"} or {"type": "json_schema", "schema": {...}} -> its grammar; ValueError if the
        library cannot compile it. The server's own {"type": "choice", "choices": [...]} (never a client's): the
        answer is exactly one of those strings (language detection)."""
        return self._compile(json.dumps(response_format, sort_keys=True))

    def _compile_text(self, key: str) -> Grammar:
        response_format = json.loads(key)
        if response_format["type"] == "choice":
            grammar = LLMatcher.grammar_from_regex("|".join(re.escape(c) for c in response_format["choices"]))
        else:
            grammar = _json_grammar(response_format)
        matcher = LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(_one_line(matcher.get_error()))
        return Grammar(matcher, self._tokenizer.vocab_size)


def _json_grammar(response_format: dict) -> str:
    schema = response_format.get("schema") if response_format["type"] == "json_schema" else {"type": "object"}
    try:
        return LLMatcher.grammar_from_json_schema(schema or {}, overrides=_JSON_OPTIONS)
    except ValueError as exc:
        raise ValueError(f"the schema is not a JSON object ({exc})") from exc


def start(compiled: Grammar, output_ids: tuple[int, ...], eos_ids: frozenset[int]) -> LLMatcher:
    """A row's own matcher, advanced past the tokens it already generated (a preempted request resuming)."""
    matcher = compiled.template.deep_copy()
    for token in output_ids:
        advance(matcher, token, eos_ids)
    return matcher


def advance(matcher: LLMatcher, token: int, eos_ids: frozenset[int]) -> None:
    """The row sampled `token`. An end id is allowed only where the grammar is complete and ends the row."""
    if token not in eos_ids and not matcher.consume_token(token):
        logger.warning("a constrained row left its grammar (%s); it is ended", _one_line(matcher.get_error()))


def fill_masks(matchers: list[LLMatcher], vocab_size: int) -> torch.Tensor:
    """[R, ceil(vocab_size / 32)] int32 on the CPU: bit t of row r set when matchers[r] allows token t
    (`vocab_size`: the tokenizer's, Grammar.vocab_size)."""
    masks = torch.full((len(matchers), (vocab_size + 31) // 32), -1, dtype=torch.int32)
    for row, matcher in enumerate(matchers):  # tens of microseconds each; the library releases the GIL
        if not matcher.is_error():
            matcher.unsafe_compute_mask_ptr(masks[row].data_ptr(), masks.shape[1] * 4)
    return masks


def apply_masks(logits: torch.Tensor, rows: list[int], masks: torch.Tensor, matchers: list[LLMatcher],
                eos_ids: torch.Tensor) -> None:
    """In place: logits[rows[r]] keeps only what matchers[r] allows; the rest gets the lowest finite logit (never
    drawn, logprobs stay finite). A finished grammar (or a broken matcher) allows only the end ids; a grammar that
    may end here allows all of them, not only the one end id llguidance knows. Other rows are not touched."""
    device, lowest = logits.device, torch.finfo(logits.dtype).min
    bits = torch.arange(32, dtype=torch.int32, device=device)
    words = masks.to(device, non_blocking=True)
    width = min(logits.shape[1], words.shape[1] * 32)
    blocked = (((words[:, :, None] >> bits) & 1) == 0).flatten(1)[:, :width]  # [R, width]: the tokenizer's tokens
    for r, matcher in enumerate(matchers):
        if matcher.is_stopped() or matcher.is_error():
            blocked[r] = True
        if matcher.is_accepting() or matcher.is_stopped() or matcher.is_error():
            blocked[r, eos_ids] = False
    for r, row in enumerate(rows):
        logits[row, :width].masked_fill_(blocked[r], lowest)
        logits[row, width:] = lowest  # the model's padding rows past the tokenizer: never allowed


def _one_line(message: str) -> str:
    """llguidance's messages span lines (a regex error draws a caret under the pattern): one line for a 400."""
    return " ".join(message.split())[:500]
