"""On the CPU, every linear layer runs through oneDNN with its weight packed once, at load.

torch's default CPU path for nn.Linear (MKL's sgemm) lays the weight matrix out anew on every call; oneDNN
(which torch ships) keeps the weight in its own blocked layout, so a call is the multiplication alone.
Measured on the bench's small preset (2-core AMD EPYC, float32, a process doing nothing else): a prefill of 8
prompts of 208 tokens went from 0.58 to 0.32 s, one of 1 prompt from 75 to 39 ms, a one-row decode step from 7.5 to
5.1 ms, the audio encoder on 16 clips of 5 s from 0.42 to 0.30 s. The arithmetic
stays float32; only the order of the additions inside a dot product changes, and the tests check that greedy
answers stay token-identical to plain `model.generate`. Memory: the packed copies replace the layers' weights,
but the checkpoint pages they were read from stay mapped while the rest of the file is in use (page cache the
kernel may reclaim), so RSS counts those weights twice: the small preset's idle server 584 -> 720 MiB.
"""

import torch

# torch's own choice (physical cores, or OMP_NUM_THREADS), read before any runner changes it
_THREADS_AT_START = torch.get_num_threads()


class OneDnnLinear(torch.nn.Module):
    """nn.Linear's forward over a weight packed in oneDNN's own layout; input and output stay ordinary tensors
    (converting them to oneDNN tensors and back cost a fifth of the audio encoder's time)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # the packing and the matmul that torch.compile's CPU backend uses for frozen weights
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach()),
                             persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)


def can_pack(device: torch.device, dtype: torch.dtype, quantized: bool) -> bool:
    """Float32 on the CPU only: a quantizer's own linear layers stay as they are, and on a GPU cuBLAS needs none of this."""
    return (device.type == "cpu" and dtype == torch.float32 and not quantized and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


@torch.no_grad()
def pack_linears(model: torch.nn.Module) -> int:
    """Swap every plain nn.Linear of `model` for a OneDnnLinear; returns how many were swapped.

    A layer that shares its weight with the token embeddings (tied lm_head) stays: packing it would keep the
    matrix twice.
    """
    embeddings = model.get_input_embeddings().weight
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child.weight is not embeddings:
                setattr(module, name, OneDnnLinear(child))
                swapped += 1
    return swapped


class StepThreads:
    """torch's CPU threads per step: every core for a prefill and for a decode step of many rows, one fewer for a
    decode step of a few.

    A decode step is hundreds of small operations, each split across the threads and waiting for the slowest; the
    event loop wakes once per step to stream its tokens, takes a core, and stalls every split operation it lands
    on. With few rows the split gains less than those stalls cost; with many it gains more. Measured in the server
    on 2 cores (small preset): one row 16 ms on 2 threads, 10.6 ms on 1 (8 ms in a process doing nothing else);
    4 rows 9.4-9.8 ms on 2, 8.0-8.2 ms on 1; 16 rows 13.9-14.5 ms on 2, 16.5-19.5 ms on 1. A prefill gains from
    every core. On a GPU the threads only launch kernels: nothing to choose.
    """

    MANY_ROWS = 8

    def __init__(self, device: torch.device) -> None:
        self.cores = _THREADS_AT_START if device.type == "cpu" else 0

    def for_prefill(self) -> None:
        if self.cores:
            torch.set_num_threads(self.cores)

    def for_decode(self, rows: int) -> None:
        if self.cores:
            torch.set_num_threads(self.cores if rows >= self.MANY_ROWS else max(1, self.cores - 1))
