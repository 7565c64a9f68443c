"""Loading: a Qwen2-Audio checkpoint (hub id or folder) -> the model's three objects and its description.

`load_model` is the one place that reads the checkpoint, quantizes, prepares the CPU path, reads the device's
memory and sizes the KV-cache budget. It writes nothing: a random-weight model is written at the edge
(`server.tiny_model`), before this loads it.
"""

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

from server.audio.clip import MAX_CLIP_SAMPLES, SAMPLE_RATE
from server.engine.conversation import audio_question
from server.engine.interface import LoadedModel, ModelInfo
from server.runner import cpu, kv_budget, kv_cache
from server.runner.detokenizer import HFDetokenizer
from server.runner.model_runner import Qwen2AudioRunner
from server.runner.processor import PromptProcessor, audio_tokens_per_second
from server.runner.quantization import UnsupportedQuantization, quantization_config, resolve_backend, weights_bytes
from server.runner.step_settings import cpu_name

logger = logging.getLogger(__name__)

# A file in a model folder that says its weights are random (server.tiny_model writes it); loading it is announced.
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS"
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty")


class ModelLoadError(RuntimeError):
    """The model could not be loaded or leaves no room to serve; the message says what to do."""


@dataclass(frozen=True)
class LoadConfig:
    model_path: str
    device: str = "auto"  # auto | cuda | cpu
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    quantization: str = "none"  # none | int8 | int4
    quantization_backend: str = "auto"  # auto | bitsandbytes | torchao
    quantize_audio_encoder: bool = False  # quantize the audio encoder's linear layers too
    prompt_format: str = "auto"  # auto | chat | base
    kv_cache_tokens: int = 0  # the KV-cache budget; 0: what memory_utilization leaves after weights and activations
    max_batch_size: int = 16
    memory_utilization: float = 0.9
    enforce_eager: bool = True  # False: the static-shape decode step, captured in CUDA graphs on CUDA
    cpu_threads: int = 0  # on a CPU, torch's threads for every part of a step; 0: measured per part (runner/cpu.py)
    step_settings_dir: Path | None = None  # where measured CPU step settings are kept; None: measured every start


def load_model(config: LoadConfig) -> LoadedModel:
    """Blocking: seconds for the tiny model, minutes for the 7B."""
    started = time.perf_counter()
    device = _device(config.device)
    dtype = _DTYPES[config.dtype] if config.dtype != "auto" else torch.bfloat16 if device.type == "cuda" else torch.float32
    hf_processor, model, backend = _from_pretrained(config, device, dtype)
    extractor, tokenizer = hf_processor.feature_extractor, hf_processor.tokenizer
    if extractor.sampling_rate != SAMPLE_RATE or extractor.n_samples != MAX_CLIP_SAMPLES:
        raise ModelLoadError(f"{config.model_path}: the feature extractor takes {extractor.n_samples} samples at "
                             f"{extractor.sampling_rate} Hz; this server feeds Qwen2-Audio's 30 s at 16 kHz")
    weights = weights_bytes(model)
    random_weights = (Path(config.model_path) / RANDOM_WEIGHTS_MARKER).exists()
    _log_loaded(config, model, weights, backend, device, dtype, random_weights, time.perf_counter() - started)
    threads = None
    if device.type == "cpu":
        threads = cpu.prepare_cpu(model, dtype, backend and config.quantization, config.max_batch_size,
                                  config.cpu_threads, config.step_settings_dir)

    eos_token_ids = _eos_ids(model.generation_config, tokenizer)
    static = not config.enforce_eager
    runner = Qwen2AudioRunner(model, device, dtype, tokenizer.pad_token_id, eos_token_ids, static_decode=static,
                              cuda_graphs=static and device.type == "cuda", threads=threads)
    prompt_format = _prompt_format(config.prompt_format, config.model_path)
    processor = PromptProcessor(hf_processor, model.config.audio_token_id, chat=prompt_format == "chat")
    detokenizer = HFDetokenizer(copy.deepcopy(tokenizer))  # its own copy: it runs on another thread
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_bytes = kv_budget.kv_bytes_per_token(text.num_hidden_layers, text.num_key_value_heads, head_dim, dtype.itemsize)
    info = ModelInfo(
        max_model_len=text.max_position_embeddings,
        audio_tokens_per_second=audio_tokens_per_second(extractor),
        sampling_defaults=MappingProxyType(_sampling_defaults(model.generation_config)),
        eos_token_ids=eos_token_ids, prompt_format=prompt_format, random_weights=random_weights,
        weights_bytes=weights, kv_bytes_per_token=kv_bytes,
        kv_budget_tokens=_kv_budget(config, runner, processor, weights, kv_bytes, text.max_position_embeddings),
        kv_spare_columns=kv_cache.SPARE_COLUMNS, kv_row_multiple=8 if static else 1,
        device=_device_name(device), dtype=str(dtype).removeprefix("torch."), quantization_backend=backend,
    )
    return LoadedModel(info, runner, processor, detokenizer)


def _from_pretrained(config: LoadConfig, device: torch.device, dtype: torch.dtype):
    """The transformers processor, the model (quantized if asked) and the quantization backend."""
    try:
        backend = resolve_backend(config.quantization, config.quantization_backend, device)
        hf_processor = AutoProcessor.from_pretrained(config.model_path)
        model = Qwen2AudioForConditionalGeneration.from_pretrained(  # reads mmapped safetensors tensor by tensor
            config.model_path, dtype=dtype, device_map=device.type,
            quantization_config=quantization_config(config.quantization, backend, dtype,
                                                    config.quantize_audio_encoder),
        ).eval()
    except OSError as exc:
        raise ModelLoadError(_load_advice(config.model_path, exc)) from exc
    except UnsupportedQuantization as exc:
        raise ModelLoadError(str(exc)) from exc
    return hf_processor, model, backend


def _kv_budget(config: LoadConfig, runner: Qwen2AudioRunner, processor: PromptProcessor, weights: int,
               kv_bytes: int, max_model_len: int) -> int:
    """KV-cache tokens the scheduler may fill: --kv-cache-tokens, or what --memory-utilization of the device
    leaves after the weights and (on a GPU) one 30 s clip's prefill, never more than the batch can use."""
    if config.kv_cache_tokens:
        return config.kv_cache_tokens
    activations = 0
    if runner.device.type == "cuda":
        clip = np.zeros(MAX_CLIP_SAMPLES, np.float32)
        activations = runner.prefill_peak_bytes(processor.prepare(audio_question("profile"), [clip]))
        # a full batch's decode step (the graphs' pool holds its activations)
        activations = max(activations, runner.decode_peak_bytes(processor.probe_prompt(), config.max_batch_size))
    reading = kv_budget.read_memory(runner.device, weights, activations)
    layers = runner.model.config.text_config.num_hidden_layers
    budget = kv_budget.kv_budget_tokens(reading, config.memory_utilization, kv_bytes, layers,
                                     cap=config.max_batch_size * max_model_len)
    if budget == 0:
        raise ModelLoadError(
            f"no memory is left for the KV cache after {weights / 2**30:.2f} GiB of weights within "
            f"--memory-utilization {config.memory_utilization}: try --quantization int4, a higher "
            "--memory-utilization, or free the device")
    return budget


def _prompt_format(requested: str, model_path: str) -> str:
    """chat for an Instruct checkpoint, base for Qwen/Qwen2-Audio-7B: named so, or a folder that ships no chat
    template (the processor itself would fall back to transformers' default one), unless --prompt-format says."""
    if requested != "auto":
        return requested
    folder = Path(model_path)
    if folder.is_dir():
        return "chat" if _ships_chat_template(folder) else "base"
    name = folder.name.lower()
    return "base" if name.startswith("qwen2-audio-7b") and "instruct" not in name else "chat"


def _ships_chat_template(folder: Path) -> bool:
    if any((folder / name).exists() for name in ("chat_template.jinja", "chat_template.json")):
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        path = folder / name
        if path.exists() and "chat_template" in json.loads(path.read_text()):
            return True
    return False


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA GPU (is the CUDA build of torch installed?)")
    return torch.device(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()}, {cpu.THREADS_AT_START} threads"


def _log_loaded(config: LoadConfig, model, weights: int, backend: str | None, device: torch.device,
                dtype: torch.dtype, random_weights: bool, seconds: float) -> None:
    params = model.num_parameters()
    quantized = "" if backend is None else f" ({config.quantization} weights by {backend})"
    free = ""
    if device.type == "cuda":
        available, total = torch.cuda.mem_get_info(device)
        free = f", GPU {torch.cuda.get_device_name(device)} {available / 2**30:.1f}/{total / 2**30:.1f} GiB free"
    logger.info(
        "loaded %s: %s parameters, %.3f GiB of weights%s, on %s in %s, in %.1f s%s",
        config.model_path, f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.2f}M", weights / 2**30,
        quantized, device, str(dtype).removeprefix("torch."), seconds, free,
    )
    if random_weights:
        logger.warning("=" * 88)
        logger.warning("RANDOM WEIGHTS: %s is a random-weight test model; its answers are meaningless.",
                       config.model_path)
        logger.warning("=" * 88)


def _eos_ids(generation_config, tokenizer) -> tuple[int, ...]:
    eos = generation_config.eos_token_id if generation_config.eos_token_id is not None else tokenizer.eos_token_id
    return tuple(sorted({eos} if isinstance(eos, int) else set(eos)))


def _sampling_defaults(generation_config) -> dict:
    """What model.generate does with the checkpoint's generation_config.json when a request sets nothing: each
    field from the file, else transformers' own default (GenerationConfig._get_default_generation_params: top_k 50,
    top_p 1.0, temperature 1.0, repetition_penalty 1.0, do_sample False). Without do_sample it decodes greedily,
    which is temperature 0 here; the other values then apply to a request that asks for a temperature."""
    fallback = generation_config._get_default_generation_params()

    def value(name: str):
        given = getattr(generation_config, name, None)
        return given if given is not None else fallback[name]

    defaults = {name: value(name) for name in _SAMPLING_FIELDS}
    if not value("do_sample"):
        defaults["temperature"] = 0.0
    return defaults


def _load_advice(model_path: str, exc: OSError) -> str:
    if Path(model_path).exists():
        return f"could not load the model folder {model_path}: {exc}"
    return (
        f"could not load {model_path!r}: it is not in the local Hugging Face cache and the hub could not be reached. "
        f"Download it where there is network (`hf download {model_path}`), or pass --model /path/to/a/local/folder; "
        "to try the API with no download at all, run `qwen2-audio-server serve --random-weights`."
    )
