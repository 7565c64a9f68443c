"""The running batch: one row per request, right-aligned (left-padded) in one KV cache, so rows of any length mix.

Row i of every tensor belongs to sequence `seq_ids[i]`; only this class reorders rows, so that invariant lives here.
Changing the rows allocates everything new first and mutates last: a failure (out of memory above all) leaves the
batch exactly as it was.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from server.runner import kv_cache
from server.runner.sampler import BatchSampler


@dataclass
class Batch:
    seq_ids: list[int]
    cache: DynamicCache
    attention_mask: torch.Tensor  # [B, T] 1 for real tokens (left padding is 0), over the cache's columns
    positions: torch.Tensor  # [B] position id of the next token
    last_tokens: torch.Tensor  # [B] the token each row feeds to the next step
    sampler: BatchSampler

    @property
    def kv_tokens(self) -> int:
        """Cache slots the buffers hold: padding, spare columns and spare rows included."""
        rows, columns = kv_cache.capacity(self.cache)
        return rows * columns

    @torch.inference_mode()
    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (the others finished, were cancelled or preempted), and drop the cache columns
        no remaining row uses. Rows move down in place and the view narrows: nothing is allocated for the cache."""
        index = torch.tensor(rows, device=self.positions.device)
        mask, positions, last_tokens = self.attention_mask[index], self.positions[index], self.last_tokens[index]
        first_used = int(mask.any(0).nonzero()[0])
        sampler = self.sampler.selected(rows)
        kv_cache.keep_rows(self.cache, rows)
        if first_used > 0:
            kv_cache.trim_left(self.cache, first_used)
        self.seq_ids = [self.seq_ids[i] for i in rows]
        self.attention_mask, self.positions, self.last_tokens = mask[:, first_used:], positions, last_tokens
        self.sampler = sampler

    @torch.inference_mode()
    def extend(self, joining: "Batch", row_capacity: Callable[[int], int] = int) -> None:
        """New rows join: both caches right-aligned to one width, in buffers of row_capacity(rows) rows."""
        width = max(self.attention_mask.shape[1], joining.attention_mask.shape[1])
        mask = torch.cat([_left_pad(m, width) for m in (self.attention_mask, joining.attention_mask)])
        positions = torch.cat([self.positions, joining.positions])
        last_tokens = torch.cat([self.last_tokens, joining.last_tokens])
        sampler = self.sampler.extended(joining.sampler)
        kv_cache.stack(self.cache, joining.cache, width, row_capacity)  # last: it rolls itself back if it fails
        self.attention_mask, self.positions, self.last_tokens, self.sampler = mask, positions, last_tokens, sampler
        self.seq_ids = self.seq_ids + joining.seq_ids


def _left_pad(mask: torch.Tensor, width: int) -> torch.Tensor:
    """[B, T] -> [B, width], zeros on the left."""
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))
