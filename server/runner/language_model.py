"""The decoder's forward, called one way on every transformers 5.x this server supports (5.17 and newer).

transformers 5.24 renamed the decoder's cache argument from `past_key_values` to `cache`: from 5.24 the old name
warns (it goes at 5.40), and before 5.24 the new name falls silently into `**kwargs`, so the cache would stay empty.
The name the installed decoder takes is read off its signature once, here, and nowhere else.
"""

import inspect

import torch


def cache_argument(forward) -> str:
    """The keyword that `forward` takes its KV cache by: `cache` (transformers >= 5.24) or `past_key_values`."""
    parameters = inspect.signature(forward).parameters  # follows functools.wraps, as deprecate_kwarg uses it
    if "cache" in parameters:
        return "cache"
    if "past_key_values" in parameters:
        return "past_key_values"
    raise TypeError(f"{forward.__qualname__} takes neither `cache` nor `past_key_values`: an unsupported transformers")


class LanguageModel:
    """`model.model.language_model` with its cache passed by the right name; returns the last hidden states."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self._cache_argument = cache_argument(module.forward)

    def __call__(self, cache, **inputs) -> torch.Tensor:
        """inputs: input_ids or inputs_embeds, attention_mask, position_ids -> last_hidden_state [B, T, H]."""
        return self.module(**inputs, **{self._cache_argument: cache}, use_cache=True).last_hidden_state
