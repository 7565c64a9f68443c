"""The running batch: one row per request, right-aligned (left-padded) in one KV cache, so rows of any length mix.

Row i of every tensor belongs to sequence `seq_ids[i]`; only this class reorders rows, so that invariant lives here.
"""

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from server.runner import kv_cache
from server.runner.sampler import BatchSampler


@dataclass
class Batch:
    seq_ids: list[int]
    cache: DynamicCache
    attention_mask: torch.Tensor  # [B, T] 1 for real tokens (left padding is 0)
    positions: torch.Tensor  # [B] position id of the next token
    last_tokens: torch.Tensor  # [B] the token each row feeds to the next step
    sampler: BatchSampler

    @property
    def kv_tokens(self) -> int:
        """Cache slots held, padding included."""
        return self.attention_mask.numel()

    @torch.inference_mode()
    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (the others finished, were cancelled or preempted), and drop the cache columns
        no remaining row uses."""
        index = torch.tensor(rows, device=self.positions.device)
        self.seq_ids = [self.seq_ids[i] for i in rows]
        self.cache.batch_select_indices(index)
        self.attention_mask = self.attention_mask[index]
        self.positions = self.positions[index]
        self.last_tokens = self.last_tokens[index]
        self.sampler.select(rows)
        first_used = int(self.attention_mask.any(0).nonzero()[0])
        if first_used > 0:
            self.attention_mask = self.attention_mask[:, first_used:]
            kv_cache.trim_left(self.cache, first_used)

    @torch.inference_mode()
    def extend(self, joining: "Batch") -> None:
        """New rows join: both caches are left-padded to one width and stacked."""
        width = max(self.attention_mask.shape[1], joining.attention_mask.shape[1])
        kv_cache.stack(self.cache, joining.cache, width)
        masks = [_left_pad(m, width) for m in (self.attention_mask, joining.attention_mask)]
        self.attention_mask = torch.cat(masks)
        self.positions = torch.cat([self.positions, joining.positions])
        self.last_tokens = torch.cat([self.last_tokens, joining.last_tokens])
        self.sampler.extend(joining.sampler)
        self.seq_ids += joining.seq_ids


def _left_pad(mask: torch.Tensor, width: int) -> torch.Tensor:
    """[B, T] -> [B, width], zeros on the left."""
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))
