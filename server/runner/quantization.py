"""8- and 4-bit weights through the quantizers transformers integrates, and what the loaded weights really take.

Which parts are quantized: every nn.Linear of the language model (32 layers of attention and MLP projections,
6.48 B of the 8.4 B parameters). Kept in --dtype: the audio encoder (0.63 B; what 4 or 8 bits do to its features
was only ever checked on random weights, so it is quantized only when asked: --quantize-audio-encoder), lm_head
(its error goes straight into the choice of every token; 1.3 GB), the token embeddings (a lookup, not a matmul:
neither bitsandbytes nor torchao's linear kernels apply), the multimodal projector (5 M parameters that bridge the
two models), norms and the encoder's convolutions.
"""

import importlib
import importlib.util
from itertools import chain

import torch

# Module prefixes (transformers' should_convert_module matches from the start) kept out of quantization.
KEEP_UNQUANTIZED = ["lm_head", "model.multi_modal_projector"]
AUDIO_ENCODER = "model.audio_tower"

# What --quantization-backend auto picks, by device type.
_AUTO_BACKEND = {
    ("cuda", "int8"): "bitsandbytes",  # LLM.int8: the long-proven route, ~half the bf16 weights
    ("cuda", "int4"): "bitsandbytes",  # NF4 with double quantization and 16-bit compute
    ("cpu", "int8"): "torchao",  # int8 weight-only: bitsandbytes was 4x slower (both trail float32 on oneDNN)
    ("cpu", "int4"): "bitsandbytes",  # torchao's int4 weight-only kernels are GPU-only (tinygemm, mslk)
}
_PACKAGE = {"bitsandbytes": "bitsandbytes", "torchao": "torchao"}


class UnsupportedQuantization(ValueError):
    """This quantization cannot run here; the message says what to change."""


def resolve_backend(mode: str, backend: str, device: torch.device) -> str | None:
    """The backend that will quantize (None for --quantization none); refuses combinations that cannot run."""
    if mode == "none":
        return None
    chosen = _AUTO_BACKEND[(device.type, mode)] if backend == "auto" else backend
    if chosen == "torchao" and mode == "int4" and device.type != "cuda":
        raise UnsupportedQuantization(
            "--quantization int4 with --quantization-backend torchao needs a CUDA GPU (torchao's int4 weight-only "
            "kernels are GPU-only); on the CPU use --quantization-backend bitsandbytes (or auto)"
        )
    if importlib.util.find_spec(_PACKAGE[chosen]) is None:
        raise UnsupportedQuantization(
            f"--quantization {mode} with {chosen} needs the `quant` extra: pip install 'qwen2-audio-server[quant]' "
            "(or scripts/setup quant)"
        )
    return chosen


def quantization_config(mode: str, backend: str | None, dtype: torch.dtype, audio_encoder: bool = False):
    """The transformers quantization config for `from_pretrained`, or None. `audio_encoder`: quantize it too."""
    if backend is None:
        return None
    keep = KEEP_UNQUANTIZED if audio_encoder else [*KEEP_UNQUANTIZED, AUDIO_ENCODER]
    if backend == "bitsandbytes":
        from transformers import BitsAndBytesConfig

        if mode == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=keep)
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    if mode == "int8":
        return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=keep)
    if dtype != torch.bfloat16:
        raise UnsupportedQuantization("--quantization int4 with torchao needs --dtype bfloat16 (its int4 kernel's only dtype)")
    # tile_packed_to_4d is tinygemm's layout, whose kernel ships inside torch itself (no extra kernel package)
    return TorchAoConfig(Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"),
                         modules_to_not_convert=keep)


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes the parameters and buffers take as stored: packed 4/8-bit data plus their scales.

    transformers' get_memory_footprint counts a torchao weight at its original dtype; this looks inside.
    """
    seen: set[int] = set()
    return sum(_stored_bytes(t) for t in chain(model.parameters(), model.buffers())
               if not (id(t) in seen or seen.add(id(t))))  # tied weights count once


def _stored_bytes(tensor: torch.Tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__"):  # torchao tensor subclass: the tensors it is made of
        names, _ = tensor.__tensor_flatten__()
        return sum(_stored_bytes(getattr(tensor, name)) for name in names)
    size = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)  # bitsandbytes 4-bit: per-block scales, maybe quantized again
    while state is not None:
        size += state.absmax.numel() * state.absmax.element_size()
        state = getattr(state, "state2", None)
    scales = getattr(tensor, "SCB", None)  # bitsandbytes 8-bit: one scale per row
    return size + (scales.numel() * scales.element_size() if scales is not None else 0)
