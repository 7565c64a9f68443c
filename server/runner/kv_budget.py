"""How much memory the device has left after loading, and how many KV-cache tokens it holds."""

from dataclasses import dataclass

import psutil
import torch


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """One device's memory after loading, in bytes."""

    total: int  # the GPU's memory, or the machine's RAM
    free: int  # free now (all processes)
    held: int  # held by this server already: GPU memory torch reserved, or this process's RSS on CPU
    weights: int  # of `held`, what the weights take
    activations: int  # to keep free for a prefill's activations (measured on a GPU, 0 on CPU)


def read_memory(device: torch.device, weights: int, activations: int) -> MemoryReading:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return MemoryReading(total, free, torch.cuda.memory_reserved(device), weights, activations)
    ram = psutil.virtual_memory()
    # unquantized weights stay mmapped and are paged in as first used: the RSS at load does not show them yet
    held = max(psutil.Process().memory_info().rss, weights)
    return MemoryReading(ram.total, ram.available, held, weights, 0)


def kv_budget_bytes(reading: MemoryReading, utilization: float) -> int:
    """Bytes the KV cache may fill.

    The server's own use stays within `utilization` of the total, and the rest of the total stays free for
    others (a shared machine, a desktop on the same GPU): whichever binds first.
    """
    within_share = utilization * reading.total - reading.held
    leaving_rest = reading.free - (1 - utilization) * reading.total
    return max(0, int(min(within_share, leaving_rest) - reading.activations))


def kv_budget_tokens(reading: MemoryReading, utilization: float, bytes_per_token: int, layers: int, cap: int) -> int:
    """KV-cache tokens (padding included) the scheduler may fill, at most `cap` (what the batch can ever use).

    Rows joining re-make the cache one layer at a time, holding one layer's old buffers beside the new ones: that
    layer's worth is kept free, so the budget is layers / (layers + 1) of what the memory holds."""
    return min(kv_budget_bytes(reading, utilization) // bytes_per_token * layers // (layers + 1), cap)


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Keys and values of every layer for one token: 2 x layers x kv_heads x head_dim x dtype bytes."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes
