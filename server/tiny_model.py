"""Write a random-weight Qwen2-Audio of the real architecture, shaped like a hub snapshot.

The folder loads through the same `from_pretrained` calls as Qwen/Qwen2-Audio-7B-Instruct and holds what its
snapshot holds (tests/support/qwen2_audio_7b_instruct.json): the real `Qwen2AudioConfig` (small dimensions, the
published vocabulary), a Qwen2 tokenizer whose special tokens have the published ids (server/tiny_tokenizer.py),
the Whisper preprocessor config, the checkpoint's chat template and generation config; the base checkpoint's
layout has no chat template. Outputs are meaningless but deterministic, which is what tests and offline API
trials need.
"""

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    GenerationConfig,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2Tokenizer,
    WhisperFeatureExtractor,
)

from server.runner.loader import RANDOM_WEIGHTS_MARKER
from server.tiny_tokenizer import REGULAR_TOKENS, SPECIAL_TOKENS, VOCAB_ROWS, spoken_ids, train_tokenizer

logger = logging.getLogger(__name__)

# The chat template of Qwen/Qwen2-Audio-7B-Instruct's tokenizer_config.json: an audio part is one with an 'audio'
# or 'audio_url' key (docs/qwen2-audio.md, "Chat templates differ by where they come from"; tests/support/checkpoint.py
# has the sources). The processor's own template file carries the same.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != "
    "'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] "
    "}}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in "
    "message['content'] %}{% if 'audio' in content or 'audio_url' in content %}{% set audio_count.value = "
    "audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in "
    "content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The sampling values of Qwen/Qwen2-Audio-7B-Instruct's generation_config.json (as a public copy of it lists
# them: zlai-llm/zlai, Qwen2Audio7BInstructGenerateConfig), with both end ids.
INSTRUCT_GENERATION = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.5, "repetition_penalty": 1.1}

# Model sizes: `tiny` for tests, `small` for CPU benchmarks, `full` is the published 7B configuration. Every
# preset has the published vocabulary (156032 embedding rows) and so its token ids.
PRESETS = {
    "tiny": {"d_model": 64, "encoder_layers": 2, "encoder_heads": 4, "encoder_ffn": 128,
             "hidden": 64, "layers": 2, "heads": 4, "intermediate": 128},
    "small": {"d_model": 256, "encoder_layers": 4, "encoder_heads": 4, "encoder_ffn": 1024,
              "hidden": 512, "layers": 6, "heads": 8, "intermediate": 1536},
    "full": {"d_model": 1280, "encoder_layers": 32, "encoder_heads": 20, "encoder_ffn": 5120,
             "hidden": 4096, "layers": 32, "heads": 32, "intermediate": 11008},
}


def preset_config(tokenizer: Qwen2Tokenizer, preset: str = "tiny") -> Qwen2AudioConfig:
    size = PRESETS[preset]
    return Qwen2AudioConfig(
        audio_config={
            "num_mel_bins": 128,
            "encoder_layers": size["encoder_layers"],
            "encoder_attention_heads": size["encoder_heads"],
            "encoder_ffn_dim": size["encoder_ffn"],
            "d_model": size["d_model"],
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": VOCAB_ROWS,
            "hidden_size": size["hidden"],
            "intermediate_size": size["intermediate"],
            "num_hidden_layers": size["layers"],
            "num_attention_heads": size["heads"],
            "num_key_value_heads": size["heads"],  # plain MHA, like the 7B
            "max_position_embeddings": 8192,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        },
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )


LAYOUTS = ("instruct", "base")  # Qwen2-Audio-7B-Instruct ships a chat template; the base Qwen2-Audio-7B does not


# Written into the marker file: a folder from an earlier version (before the published vocabulary) is written anew.
SNAPSHOT_VERSION = "snapshot layout 2"


def ensure_random_model(path: str | Path, preset: str = "tiny", layout: str = "instruct") -> Path:
    """The random-weight model of `preset` at `path`, written the first time it is asked for (or again when an
    earlier version of this code wrote it)."""
    marker = Path(path) / RANDOM_WEIGHTS_MARKER
    if not marker.exists() or SNAPSHOT_VERSION not in marker.read_text():
        logger.info("writing a random-weight %s model to %s", preset, path)
        write_tiny_model(path, preset=preset, layout=layout)
    return Path(path)


def write_tiny_model(out_dir: str | Path, seed: int = 0, vocab_size: int = 1000, preset: str = "tiny",
                     layout: str = "instruct") -> Path:
    """Create the snapshot in `out_dir` and return its path (written aside, then moved in whole). `layout` base
    leaves the chat template out, as the base checkpoint's snapshot does."""
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        _write(Path(tmp) / "model", seed, vocab_size, preset, layout)
        if final.exists():
            shutil.rmtree(final)
        (Path(tmp) / "model").rename(final)
    logger.info("wrote a random-weight Qwen2-Audio to %s", final)
    return final


def _write(out: Path, seed: int, vocab_size: int, preset: str, layout: str) -> None:
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(vocab_size)
    config = preset_config(tokenizer, preset)
    generation_config = _generation_config(tokenizer, layout)
    if preset == "full":  # bfloat16 as published (16.8 GB), written a module at a time: it would not fit twice in RAM
        write_streamed(config, out, torch.bfloat16)
        generation_config.save_pretrained(out)
    else:
        model = Qwen2AudioForConditionalGeneration(config).eval()
        _spread_weights(model, spoken_ids(vocab_size))
        model.generation_config = generation_config
        model.save_pretrained(out)
    _save_processor(out, tokenizer, CHAT_TEMPLATE if layout == "instruct" else None)
    (out / RANDOM_WEIGHTS_MARKER).write_text(
        f"This folder holds a random-weight Qwen2-Audio made by `qwen2-audio-server tiny-model` ({SNAPSHOT_VERSION}).\n"
        "Its answers are meaningless; it exists for tests and for trying the API offline.\n"
    )


def _generation_config(tokenizer: Qwen2Tokenizer, layout: str) -> GenerationConfig:
    """The published checkpoint's: both end ids, <|endoftext|> pads; the Instruct one samples as it does."""
    end_of_text, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    sampling = INSTRUCT_GENERATION if layout == "instruct" else {}
    return GenerationConfig(bos_token_id=end_of_text, eos_token_id=[end_of_text, im_end], pad_token_id=end_of_text,
                            **sampling)


def _save_processor(out: Path, tokenizer: Qwen2Tokenizer, chat_template: str | None) -> None:
    """The processor's files as the published snapshot holds them (saved in 2024, before transformers kept them in
    processor_config.json and chat_template.jinja): the Whisper feature extractor in preprocessor_config.json,
    the tokenizer with the chat template inside tokenizer_config.json, the processor's template in
    chat_template.json. The base checkpoint has no template."""
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    for name in ("tokenizer_config.json", "preprocessor_config.json"):
        values = json.loads((out / name).read_text()) | {"processor_class": "Qwen2AudioProcessor"}
        values.pop("chat_template", None)
        if chat_template and name == "tokenizer_config.json":
            values["chat_template"] = chat_template
        (out / name).write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n")
    if chat_template:
        (out / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}, indent=2) + "\n")


# The published checkpoint's key names (transformers renames them on load), by the model's own prefixes.
_CHECKPOINT_PREFIXES = [("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
                        ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")]


@torch.no_grad()
def write_streamed(config: Qwen2AudioConfig, out: Path, dtype: torch.dtype, shard_bytes: int = 4 * 10**9) -> None:
    """Random weights (transformers' standard init) in safetensors shards of at most `shard_bytes` with an index,
    like the hub snapshot (5 shards of under 4 GB for the 7B), holding one module and one shard in memory at a
    time instead of the whole model."""
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = Qwen2AudioForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    out.mkdir(parents=True, exist_ok=True)
    modules = dict(model.named_modules())
    plan = plan_shards(model, shard_bytes)
    weight_map, total = {}, 0
    for number, prefixes in enumerate(plan):
        shard: dict[str, torch.Tensor] = {}
        for prefix in prefixes:
            module = modules[prefix]
            names = set(_direct_tensors(module))
            module.to_empty(device="cpu", recurse=False)
            model._init_weights(module)
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                if name in names:
                    shard[_checkpoint_key(f"{prefix}.{name}")] = tensor.detach().contiguous()
                    total += tensor.numel() * tensor.element_size()
            module.to_empty(device="meta", recurse=False)  # frees it; the shard keeps its tensors
        name = f"model-{number + 1:05d}-of-{len(plan):05d}.safetensors"
        save_file(shard, out / name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, name)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.dtype = dtype
    config.save_pretrained(out)


def plan_shards(model: torch.nn.Module, shard_bytes: int) -> list[list[str]]:
    """The modules (with tensors of their own) of each shard, in order: a module that would take its shard past
    `shard_bytes` starts the next one, as transformers' save_pretrained fills shards."""
    shards: list[list[str]] = [[]]
    size = 0
    for prefix, module in model.named_modules():
        tensors = _direct_tensors(module)
        if not tensors:
            continue
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(prefix)
        size += nbytes
    return shards


def _direct_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's own parameters and persistent buffers (what a checkpoint stores for it)."""
    return dict(module.named_parameters(recurse=False)) | {
        name: b for name, b in module.named_buffers(recurse=False) if name not in module._non_persistent_buffers_set}


def _checkpoint_key(name: str) -> str:
    for ours, theirs in _CHECKPOINT_PREFIXES:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    return name


@torch.no_grad()
def _spread_weights(model: Qwen2AudioForConditionalGeneration, spoken: list[int]) -> None:
    """Widen the random init so greedy outputs follow the input instead of collapsing to one token.

    With the default init (std 0.02) or a variance-preserving one, greedy decoding of a 20 s clip repeats a
    single token; at 3/sqrt(fan_in) every clip length gives varied, input-dependent tokens. The output rows of
    ids no text encodes to (the tokenizer's fillers, the embedding's spare rows) are zeroed, so the model answers
    in tokens that mean something to the tokenizer; those of the end ids are scaled down, so that an answer
    rarely ends early (among ~700 tokens, two end ids would end a sampled answer within a few hundred tokens):
    tests of stopping, deadlines and long streams need answers that run.
    """
    for name, param in model.named_parameters():
        if param.dim() >= 2 and "norm" not in name:
            param.normal_(0.0, 3.0 / param.shape[-1] ** 0.5)
    rows = model.lm_head.weight
    keep = torch.zeros(rows.shape[0], dtype=torch.bool)
    keep[spoken] = True
    rows[~keep] = 0.0
    end_ids = [REGULAR_TOKENS + SPECIAL_TOKENS.index(token) for token in ("<|endoftext|>", "<|im_end|>")]
    rows[end_ids] *= 0.5
