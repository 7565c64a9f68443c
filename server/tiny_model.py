"""Write a random-weight Qwen2-Audio of the real architecture, shaped like a hub snapshot.

The folder loads through the same `from_pretrained` calls as Qwen/Qwen2-Audio-7B-Instruct: the real
`Qwen2AudioConfig` (small dimensions), a Qwen2 byte-level BPE tokenizer trained here with the real special
tokens, the real Whisper feature extractor and the real chat template. Outputs are meaningless but
deterministic, which is what tests and offline API trials need.
"""

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2Tokenizer,
    WhisperFeatureExtractor,
)

from server.runner.loader import RANDOM_WEIGHTS_MARKER

logger = logging.getLogger(__name__)

# The special tokens of the real tokenizer, in the real order (151643.. in the 7B vocabulary).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]

# Training text: English, Chinese and accented words, so the vocabulary holds multi-byte characters
# and tokens that split them (streaming must never emit half a character).
_CORPUS = [
    "The quick brown fox jumps over the lazy dog while the audio model listens to every word.",
    "Please transcribe this recording of a meeting about the quarterly budget and the new office.",
    "Detect the language and recognize the speech. Translate the speech into English, German or French.",
    "Recognize the emotion with keywords in English: happy, sad, angry, neutral, surprised, calm.",
    "Generate the caption in English: a dog barks, rain falls, glass breaks, music plays softly.",
    "语音识别和翻译是这个模型的主要功能。今天天气很好，我们去公园散步吧。",
    "音乐、笑声、掌声和鸟叫声都可以被识别出来。请把这段话翻译成英文。",
    "Café, naïve, über, señor, façade, smörgåsbord, Ærø, œuvre, déjà vu, Zürich, Kraków.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024, dates and times like 10:30 and 3.5 seconds.",
]


def train_tokenizer(vocab_size: int) -> Qwen2Tokenizer:
    """A byte-level BPE trained on the corpus above, wrapped in the real Qwen2 tokenizer class."""
    template = Qwen2Tokenizer()  # carries Qwen2's real pre-tokenizer (split regex + byte level)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = template.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 20, trainer=trainer)
    vocab = bpe.get_vocab()
    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=8192,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return tokenizer


# Model sizes: `tiny` for tests, `small` for CPU benchmarks, `full` is the published 7B configuration.
PRESETS = {
    "tiny": {"d_model": 64, "encoder_layers": 2, "encoder_heads": 4, "encoder_ffn": 128,
             "hidden": 64, "layers": 2, "heads": 4, "intermediate": 128, "vocab": None},
    "small": {"d_model": 256, "encoder_layers": 4, "encoder_heads": 4, "encoder_ffn": 1024,
              "hidden": 512, "layers": 6, "heads": 8, "intermediate": 1536, "vocab": None},
    "full": {"d_model": 1280, "encoder_layers": 32, "encoder_heads": 20, "encoder_ffn": 5120,
             "hidden": 4096, "layers": 32, "heads": 32, "intermediate": 11008, "vocab": 156032},
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
            "vocab_size": size["vocab"] or len(tokenizer),
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


def ensure_random_model(path: str | Path, preset: str = "tiny", layout: str = "instruct") -> Path:
    """The random-weight model of `preset` at `path`, written the first time it is asked for."""
    if not (Path(path) / RANDOM_WEIGHTS_MARKER).exists():
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
    eos_ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    generation_config = GenerationConfig(
        bos_token_id=eos_ids[1], eos_token_id=eos_ids, pad_token_id=eos_ids[1], do_sample=False
    )
    if preset == "full":  # bfloat16 as published (16.8 GB), written a module at a time: it would not fit twice in RAM
        write_streamed(config, out, torch.bfloat16)
        generation_config.save_pretrained(out)
    else:
        model = Qwen2AudioForConditionalGeneration(config).eval()
        _spread_weights(model)
        model.generation_config = generation_config
        model.save_pretrained(out)
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)
    processor.save_pretrained(out)
    if layout == "base":
        _remove_chat_template(out)
    (out / RANDOM_WEIGHTS_MARKER).write_text(
        "This folder holds a random-weight Qwen2-Audio made by `qwen2-audio-server tiny-model`.\n"
        "Its answers are meaningless; it exists for tests and for trying the API offline.\n"
    )


def _remove_chat_template(out: Path) -> None:
    """The chat template out of every file that may carry it (the processor wrote it beside the tokenizer)."""
    for name in ("chat_template.jinja", "chat_template.json"):
        (out / name).unlink(missing_ok=True)
    for name in ("tokenizer_config.json", "processor_config.json"):
        path = out / name
        if path.exists():
            config = json.loads(path.read_text())
            config.pop("chat_template", None)
            path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


# The published checkpoint's key names (transformers renames them on load), by the model's own prefixes.
_CHECKPOINT_PREFIXES = [("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
                        ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")]


@torch.no_grad()
def write_streamed(config: Qwen2AudioConfig, out: Path, dtype: torch.dtype, shard_bytes: int = 2 * 2**30) -> None:
    """Random weights (transformers' standard init) in safetensors shards with an index, like a hub snapshot,
    holding one module and one shard in memory at a time instead of the whole model."""
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = Qwen2AudioForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = []
    shard: dict[str, torch.Tensor] = {}
    total = 0
    for prefix, module in model.named_modules():
        direct = dict(module.named_parameters(recurse=False)) | {
            name: b for name, b in module.named_buffers(recurse=False) if name not in module._non_persistent_buffers_set}
        if not direct:
            continue
        module.to_empty(device="cpu", recurse=False)
        model._init_weights(module)
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if name in direct:
                shard[_checkpoint_key(f"{prefix}.{name}")] = tensor.detach().contiguous()
                total += tensor.numel() * tensor.element_size()
        module.to_empty(device="meta", recurse=False)  # frees it; the shard keeps its tensors
        if sum(t.numel() * t.element_size() for t in shard.values()) >= shard_bytes:
            shards.append(_save_shard(shard, out, len(shards)))
            shard = {}
    if shard:
        shards.append(_save_shard(shard, out, len(shards)))
    weight_map = {}
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (out / f"shard-{i}.safetensors").rename(out / name)
        weight_map |= dict.fromkeys(keys, name)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.dtype = dtype
    config.save_pretrained(out)


def _save_shard(tensors: dict[str, torch.Tensor], out: Path, number: int) -> list[str]:
    save_file(tensors, out / f"shard-{number}.safetensors", metadata={"format": "pt"})
    return list(tensors)


def _checkpoint_key(name: str) -> str:
    for ours, theirs in _CHECKPOINT_PREFIXES:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    return name


@torch.no_grad()
def _spread_weights(model: Qwen2AudioForConditionalGeneration) -> None:
    """Widen the random init so greedy outputs follow the input instead of collapsing to one token.

    With the default init (std 0.02) or a variance-preserving one, greedy decoding of a 20 s clip repeats a
    single token; at 3/sqrt(fan_in) every clip length gives varied, input-dependent tokens.
    """
    for name, param in model.named_parameters():
        if param.dim() >= 2 and "norm" not in name:
            param.normal_(0.0, 3.0 / param.shape[-1] ** 0.5)
