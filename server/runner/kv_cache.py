"""The running batch's KV cache: rows right-aligned (left-padded), room to grow without copying.

transformers' DynamicCache appends with torch.cat, copying the whole cache at every decode step; that was half
of a CPU decode step at batch 16. Here each layer keeps a buffer with spare columns, a step writes one column,
and the buffer is re-made only when rows join or leave or the room runs out.
"""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

SPARE_COLUMNS = 256


class GrowingLayer(DynamicLayer):
    """keys/values: [B, H, T, D] views of [B, H, T + room, D] buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length = 0
        self._keys = self._values = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self._keys is None or self.length + new > self._keys.shape[-2]:
            self.replace(self.keys if self.length else key_states[..., :0, :],
                         self.values if self.length else value_states[..., :0, :], room=new + SPARE_COLUMNS)
        self._keys[..., self.length : self.length + new, :] = key_states
        self._values[..., self.length : self.length + new, :] = value_states
        self._set_length(self.length + new)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.replace(self.keys[indices], self.values[indices])

    def replace(self, keys: torch.Tensor, values: torch.Tensor, room: int = SPARE_COLUMNS) -> None:
        """New contents (rows joined, left, or columns trimmed), copied into fresh buffers with `room` to spare."""
        batch, heads, length, dim = keys.shape
        self._keys = keys.new_empty(batch, heads, length + room, dim)
        self._values = values.new_empty(batch, heads, length + room, values.shape[-1])
        self._keys[..., :length, :] = keys
        self._values[..., :length, :] = values
        self._set_length(length)

    def truncate(self, length: int) -> None:
        """Back to `length` columns (undoing a step that failed part-way); the buffers keep their room."""
        if self.is_initialized and self._keys is not None:
            self._set_length(length)

    def _set_length(self, length: int) -> None:
        self.length = length
        self.keys = self._keys[..., :length, :]
        self.values = self._values[..., :length, :]


def new_cache(text_config) -> DynamicCache:
    cache = DynamicCache(config=text_config)
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache


def lengths(cache: DynamicCache) -> list[int]:
    """Every layer's length: what `truncate` rolls a failed step back to."""
    return [layer.get_seq_length() for layer in cache.layers]


def truncate(cache: DynamicCache, lengths: list[int]) -> None:
    for layer, length in zip(cache.layers, lengths):
        layer.truncate(length)


def trim_left(cache: DynamicCache, columns: int) -> None:
    """Drop the first `columns` cache columns (padding no remaining row needs)."""
    for layer in cache.layers:
        layer.replace(layer.keys[..., columns:, :], layer.values[..., columns:, :])


def stack(running: DynamicCache, joining: DynamicCache, width: int) -> None:
    """Append `joining`'s rows to `running`'s, both left-padded with zeros (masked, never attended) to `width`."""
    for ours, theirs in zip(running.layers, joining.layers):
        keys = torch.cat([_left_pad(ours.keys, width), _left_pad(theirs.keys, width)])
        values = torch.cat([_left_pad(ours.values, width), _left_pad(theirs.values, width)])
        ours.replace(keys, values)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, 0, width - tensor.shape[2], 0))


def with_prefix(text_config, prefix: list[tuple[torch.Tensor, torch.Tensor]], kept: list[int], width: int) -> DynamicCache:
    """A cache of `width` columns whose row i ends with the first kept[i] positions of the shared prefix
    (right-aligned, zeros before: masked padding), ready for the rest of each row to be computed on top."""
    cache = new_cache(text_config)
    for layer, (keys, values) in zip(cache.layers, prefix):
        batch_keys = keys.new_zeros(len(kept), keys.shape[1], width, keys.shape[3])
        batch_values = values.new_zeros(len(kept), values.shape[1], width, values.shape[3])
        for row, k in enumerate(kept):
            if k:
                batch_keys[row, :, width - k :] = keys[0, :, :k]
                batch_values[row, :, width - k :] = values[0, :, :k]
        layer.lazy_initialization(batch_keys, batch_values)
        layer.replace(batch_keys, batch_values)
    return cache
