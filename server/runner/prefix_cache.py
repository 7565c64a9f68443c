"""Keys and values of the prompt heads most requests share, computed once."""

import torch
from transformers import DynamicCache


class PrefixCache:
    """Keys and values of the prompt heads most requests share (the chat template's system turn and the start
    of the user turn, up to the first audio token), computed once and copied into each prefill's cache.

    Only the head before a row's first audio token is shared: past it, every position depends on that row's
    audio. A few heads are kept (least recently used goes first), each [1, H, P, D] per layer.
    """

    MIN_TOKENS = 16  # shorter shared heads are not worth a lookup
    ENTRIES = 4

    def __init__(self) -> None:
        self._entries: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.hits = 0  # prefills that found their head here

    @classmethod
    def shared_head(cls, rows: list[list[int]], audio_token_id: int) -> tuple[int, ...]:
        """The tokens every row starts with, up to the first audio token of each; () when too short to share."""
        heads = []
        for row in rows:
            if audio_token_id not in row:
                return ()
            heads.append(row[: row.index(audio_token_id)])
        length = min(len(h) for h in heads)
        for i in range(length):
            if any(h[i] != heads[0][i] for h in heads):
                length = i
                break
        return tuple(heads[0][:length]) if length >= cls.MIN_TOKENS else ()

    def get(self, head: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        layers = self._entries.pop(head, None)
        if layers is not None:
            self._entries[head] = layers  # most recently used last
            self.hits += 1
        return layers

    def put(self, head: tuple[int, ...], cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
        layers = self._entries[head] = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        while len(self._entries) > self.ENTRIES:
            self._entries.pop(next(iter(self._entries)))
        return layers
