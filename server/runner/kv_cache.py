"""The running batch's KV cache: one buffer per layer, rows right-aligned (left-padded), room to grow in place.

Each layer keeps a zeroed [row capacity, H, column capacity, D] buffer; the cache is the view of its first `rows`
rows and of the columns [start, start + length). That layout gives what serving needs without copying:
- a decode step writes one column (transformers' DynamicCache re-made the whole cache with torch.cat per step);
- rows leaving are compacted in place and padding no row needs is dropped by moving `start`: no allocation, so
  neither can run out of memory;
- rows joining re-make the buffers one layer at a time, writing every row straight to its place (no padded
  temporaries), and a failure part-way rolls the layers already re-made back to views of their new buffers, so the
  running batch is exactly as before and only the joining rows fail;
- the static-shape decode step (`StaticStep`: what a CUDA graph captures) writes its column with index_copy_ at a
  column held in a tensor and attends over the whole buffer under a mask, so its shapes and addresses never change
  while the buffers live. Buffers are zeroed because masked columns are still multiplied (by 0: never by NaN).
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

SPARE_COLUMNS = 256  # room each re-made buffer keeps for the steps to come; the scheduler counts it per row
_made = itertools.count(1)  # numbers every buffer pair ever made, so a graph can tell whether its buffers still live


@dataclass
class StaticStep:
    """Set on the cache for one static-shape decode step: the first `rows` buffer rows take their new keys and
    values at `column` ([1] long tensor) and attend over every column of the buffer."""

    rows: int
    column: torch.Tensor


class SlabLayer(DynamicLayer):
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._keys = self._values = None
        self.made = 0
        self.rows = self.start = self.length = 0
        self.step: StaticStep | None = None

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def capacity(self) -> tuple[int, int]:
        """(rows, columns) the buffers hold."""
        return (0, 0) if self._keys is None else (self._keys.shape[0], self._keys.shape[2])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.step is not None:
            self._keys[: self.step.rows].index_copy_(2, self.step.column, key_states)
            self._values[: self.step.rows].index_copy_(2, self.step.column, value_states)
            return self._keys[: self.step.rows], self._values[: self.step.rows]
        new = key_states.shape[-2]
        if self._keys is None:
            self.remake(key_states[..., :0, :], value_states[..., :0, :], room=new + SPARE_COLUMNS)
        elif self.end + new > self._keys.shape[2]:
            self.remake(self.keys, self.values, room=new + SPARE_COLUMNS)
        self._keys[: self.rows, :, self.end : self.end + new] = key_states
        self._values[: self.rows, :, self.end : self.end + new] = value_states
        self.set_view(self.rows, self.start, self.length + new)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def remake(self, keys: torch.Tensor, values: torch.Tensor, room: int = SPARE_COLUMNS,
               row_capacity: int = 0) -> None:
        """New contents in fresh buffers with `room` columns and max(rows, row_capacity) rows; both buffers are
        made before either is swapped in, so a failure leaves the layer as it was."""
        new_keys, new_values = _buffers(keys, values, max(keys.shape[0], row_capacity), keys.shape[2] + room)
        new_keys[: keys.shape[0], :, : keys.shape[2]] = keys
        new_values[: keys.shape[0], :, : keys.shape[2]] = values
        self.swap(new_keys, new_values)
        self.set_view(keys.shape[0], 0, keys.shape[2])

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """These rows, in this order, repeats allowed (n samples of one prompt), in fresh buffers."""
        self.remake(self.keys[indices], self.values[indices])

    def compact(self, rows: list[int]) -> None:
        """Keep these rows (ascending), moved down in place: no allocation."""
        for i, row in enumerate(rows):
            if row != i:  # row > i: its source is never a row already overwritten
                self._keys[i, :, self.start : self.end] = self._keys[row, :, self.start : self.end]
                self._values[i, :, self.start : self.end] = self._values[row, :, self.start : self.end]
        self.set_view(len(rows), self.start, self.length)

    def swap(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self._keys, self._values, self.made = keys, values, next(_made)

    def set_view(self, rows: int, start: int, length: int) -> None:
        self.rows, self.start, self.length = rows, start, length
        self.keys = self._keys[:rows, :, start : start + length]
        self.values = self._values[:rows, :, start : start + length]


def _buffers(keys: torch.Tensor, values: torch.Tensor, rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (keys.new_zeros(rows, keys.shape[1], columns, keys.shape[3]),
            values.new_zeros(rows, values.shape[1], columns, values.shape[3]))


def new_cache(text_config) -> DynamicCache:
    cache = DynamicCache(config=text_config)
    cache.layers = [SlabLayer() for _ in cache.layers]
    return cache


def lengths(cache: DynamicCache) -> list[int]:
    """Every layer's length: what `set_lengths` rolls a failed step back to."""
    return [layer.get_seq_length() for layer in cache.layers]


def set_lengths(cache: DynamicCache, lengths: list[int]) -> None:
    """Every layer's view to these lengths: back, undoing a failed step; forward, taking a static step's column."""
    for layer, length in zip(cache.layers, lengths):
        if layer.is_initialized and layer._keys is not None:
            layer.set_view(layer.rows, layer.start, length)


def capacity(cache: DynamicCache) -> tuple[int, int]:
    """(rows, columns) every layer's buffers hold (layers differ only after a re-make failed part-way)."""
    rows, columns = zip(*(layer.capacity for layer in cache.layers))
    return min(rows), min(columns)


def generation(cache: DynamicCache) -> tuple[int, ...]:
    """Identifies the buffers: it changes whenever any layer's are re-made (graphs bound to them are then stale)."""
    return tuple(layer.made for layer in cache.layers)


def start(cache: DynamicCache) -> int:
    return cache.layers[0].start


def set_static_step(cache: DynamicCache, step: StaticStep | None) -> None:
    for layer in cache.layers:
        layer.step = step


def keep_rows(cache: DynamicCache, rows: list[int]) -> None:
    for layer in cache.layers:
        layer.compact(rows)


def trim_left(cache: DynamicCache, columns: int) -> None:
    """Drop the first `columns` columns (padding no remaining row needs): the view moves, nothing is copied."""
    for layer in cache.layers:
        layer.set_view(layer.rows, layer.start + columns, layer.length - columns)


def stack(running: DynamicCache, joining: DynamicCache, width: int, row_capacity: Callable[[int], int] = int) -> None:
    """`joining`'s rows join `running`'s, both right-aligned to `width` columns, in buffers of row_capacity(rows)
    rows. Layer by layer: at most one layer's old and new buffers are held at once. If a layer fails, the layers
    already re-made become views of their new buffers holding exactly the old rows, and the error goes on up."""
    done: list[tuple[SlabLayer, int, int, int]] = []  # layer, rows, start, length before
    try:
        for ours, theirs in zip(running.layers, joining.layers):
            before = (ours, ours.rows, width - ours.length, ours.length)
            rows = ours.rows + theirs.rows
            keys, values = _buffers(ours.keys, ours.values, row_capacity(rows), width + SPARE_COLUMNS)
            for offset, layer in ((0, ours), (ours.rows, theirs)):
                keys[offset : offset + layer.rows, :, width - layer.length : width] = layer.keys
                values[offset : offset + layer.rows, :, width - layer.length : width] = layer.values
            ours.swap(keys, values)
            ours.set_view(rows, 0, width)
            done.append(before)
    except BaseException:
        for layer, rows, start, length in done:
            layer.set_view(rows, start, length)
        raise


def with_prefix(text_config, prefix: list[tuple[torch.Tensor, torch.Tensor]], kept: list[int], width: int) -> DynamicCache:
    """A cache of `width` columns whose row i ends with the first kept[i] positions of the shared prefix
    (right-aligned, zeros before: masked padding), ready for the rest of each row to be computed on top."""
    cache = new_cache(text_config)
    for layer, (keys, values) in zip(cache.layers, prefix):
        layer.lazy_initialization(keys, values)
        layer.swap(*_buffers(keys, values, len(kept), width + SPARE_COLUMNS))
        for row, k in enumerate(kept):
            if k:
                layer._keys[row, :, width - k : width] = keys[0, :, :k]
                layer._values[row, :, width - k : width] = values[0, :, :k]
        layer.set_view(len(kept), 0, width)
    return cache


def reserve(cache: DynamicCache, rows: int) -> None:
    """Buffers of at least `rows` rows with SPARE_COLUMNS free columns after the rows' end (the static step runs
    on a bucket of rows and writes past the end); layer by layer, each swapped in once made."""
    for layer in cache.layers:
        if layer.capacity[0] < rows or layer.end + 1 > layer.capacity[1]:
            layer.remake(layer.keys, layer.values, room=SPARE_COLUMNS, row_capacity=rows)
