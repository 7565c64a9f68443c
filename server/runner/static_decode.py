"""The decode step at static shapes, and CUDA graphs of it.

Eager decode launches hundreds of small kernels per step (32 layers x attention, MLP, norms); at the batch sizes
serving runs, a GPU spends most of the step waiting on those launches. A CUDA graph replays the whole step with
one launch, but only for fixed shapes and fixed addresses. The static step gives it both:
- rows: the batch is padded to a bucket (1, 2, 4, 8, then multiples of 8), so a handful of graphs cover every size;
- columns: the step attends over every column of the cache's buffers under a mask, and writes its keys and values
  with index_copy_ at a column held in a tensor (kv_cache.StaticStep), so nothing depends on the batch's length;
- inputs and logits live in buffers owned by each graph; a step copies its inputs in, replays, reads the logits.
A graph belongs to the buffers it was captured on: when the cache re-makes them (rows joining past the bucket,
columns running out), the graphs of the old buffers are dropped and the next step captures anew, once per bucket.

Why CUDA graphs by hand rather than torch.compile(mode="reduce-overhead"): cudagraph trees copy every input that is
not a parameter into static memory at each replay, which here would be the whole KV cache, and recompile on each new
cache length; capturing the step over the cache's own buffers avoids both and needs no compiler at start-up.

On the CPU the same static step runs eagerly (no graphs exist there), which is how CI proves its tokens equal
the dynamic step's and model.generate's.
"""

import logging
from dataclasses import dataclass

import torch

from server.runner import kv_cache
from server.runner.batch import Batch
from server.runner.language_model import LanguageModel

logger = logging.getLogger(__name__)


def row_bucket(rows: int) -> int:
    """Rows a static step runs: 1, 2, 4, 8, then the next multiple of 8."""
    if rows <= 8:
        return 1 << (rows - 1).bit_length()
    return -(-rows // 8) * 8


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    ids: torch.Tensor  # [b, 1]
    positions: torch.Tensor  # [b, 1]
    mask: torch.Tensor  # [b, 1, 1, C] bool
    column: torch.Tensor  # [1]
    logits: torch.Tensor  # [b, V] float32, written by each replay


class StaticDecoder:
    """Logits for one decode step of a batch, at static shapes; through CUDA graphs when `graphs` (CUDA only)."""

    def __init__(self, model, device: torch.device, pad_token_id: int, graphs: bool) -> None:
        self.model = model
        self.device = device
        self.graphs = graphs and device.type == "cuda"
        self._pad_token_id = pad_token_id
        self._language_model = LanguageModel(model.model.language_model)
        self._captured: dict[int, _Graph] = {}  # by row bucket, for the buffers of `_generation`
        self._generation: tuple[int, ...] = ()
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self.captures = 0  # graphs captured so far (read by tests and the log)

    def logits(self, batch: Batch) -> torch.Tensor:
        """[rows, V] float32 logits for the next token of every row. The cache's view is not advanced: the caller
        does that once the step succeeded (until then the written column lies outside every row's view)."""
        rows = len(batch.seq_ids)
        bucket = row_bucket(rows)
        self._make_room(batch, bucket)
        ids, positions, mask, column = self._inputs(batch, bucket)
        if not self.graphs:
            return self._forward(batch.cache, ids, positions, mask, column)[:rows]
        generation = kv_cache.generation(batch.cache)
        if generation != self._generation:
            self._captured, self._generation = {}, generation
        graph = self._captured.get(bucket) or self._capture(batch.cache, ids, positions, mask, column)
        self._captured[bucket] = graph
        graph.ids.copy_(ids)
        graph.positions.copy_(positions)
        graph.mask.copy_(mask)
        graph.column.copy_(column)
        graph.graph.replay()
        return graph.logits[:rows]

    def _make_room(self, batch: Batch, bucket: int) -> None:
        """Buffers with `bucket` rows and a free column after the rows' end (re-made if not: a new generation)."""
        rows, columns = kv_cache.capacity(batch.cache)
        end = kv_cache.start(batch.cache) + batch.attention_mask.shape[1]
        if rows < bucket or end >= columns:
            kv_cache.reserve(batch.cache, bucket)

    def _inputs(self, batch: Batch, bucket: int):
        rows, width = batch.attention_mask.shape
        _, columns = kv_cache.capacity(batch.cache)
        start = kv_cache.start(batch.cache)
        ids = torch.full((bucket, 1), self._pad_token_id, dtype=torch.long, device=self.device)
        ids[:rows, 0] = batch.last_tokens
        positions = torch.zeros((bucket, 1), dtype=torch.long, device=self.device)
        positions[:rows, 0] = batch.positions
        mask = torch.zeros((bucket, 1, 1, columns), dtype=torch.bool, device=self.device)
        mask[:rows, 0, 0, start : start + width] = batch.attention_mask.bool()
        mask[:, 0, 0, start + width] = True  # the new column (padding rows attend to it alone: no empty softmax)
        column = torch.tensor([start + width], device=self.device)
        return ids, positions, mask, column

    def _forward(self, cache, ids, positions, mask, column) -> torch.Tensor:
        kv_cache.set_static_step(cache, kv_cache.StaticStep(ids.shape[0], column))
        try:
            hidden = self._language_model(
                cache, inputs_embeds=self.model.get_input_embeddings()(ids), attention_mask={"full_attention": mask},
                position_ids=positions,
            )[:, -1]
        finally:
            kv_cache.set_static_step(cache, None)
        return self.model.lm_head(hidden).float()

    def _capture(self, cache, ids, positions, mask, column) -> _Graph:
        """Capture the step for this bucket over the cache's buffers. The warm-up runs write the step's column
        with this step's own keys and values, which the replay then writes again."""
        inputs = [t.clone() for t in (ids, positions, mask, column)]
        before = torch.cuda.memory_reserved(self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # lets lazy initialisation (cuBLAS handles, workspaces) happen outside the graph
                self._forward(cache, *inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self._forward(cache, *inputs)
        self.captures += 1
        logger.info("captured the decode step for %d rows (%.1f MiB more reserved)", ids.shape[0],
                    (torch.cuda.memory_reserved(self.device) - before) / 2**20)
        return _Graph(graph, *inputs, logits)
