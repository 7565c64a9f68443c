"""The bench's `full` preset is the published Qwen2-Audio-7B architecture (checked on the meta device: no memory)."""

import pytest
import torch
from transformers import Qwen2AudioForConditionalGeneration

from server.tiny_model import preset_config
from server.tiny_tokenizer import train_tokenizer

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too


def test_full_preset_is_the_published_7b_architecture():
    config = preset_config(train_tokenizer(1000), "full")
    text, audio = config.text_config, config.audio_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        4096, 32, 32, 32)
    assert (text.intermediate_size, text.vocab_size, text.max_position_embeddings) == (11008, 156032, 8192)
    assert (audio.d_model, audio.encoder_layers, audio.encoder_attention_heads, audio.encoder_ffn_dim) == (
        1280, 32, 20, 5120)
    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration(config)
    assert 8.3e9 < model.num_parameters() < 8.5e9  # 8.4 B, 16.8 GB in bf16


def test_the_streamed_writer_makes_a_sharded_snapshot_that_loads_whole(tmp_path):
    """The full preset is written a module at a time (it would not fit in RAM twice); checked on the tiny config."""
    import json

    from server.tiny_model import write_streamed

    config = preset_config(train_tokenizer(1000), "tiny")
    write_streamed(config, tmp_path, torch.bfloat16, shard_bytes=100_000)
    weight_map = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(weight_map.values())) > 1  # sharded, as hub snapshots are
    model, info = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # every key where transformers expects it: nothing missing or left over
    assert model.dtype == torch.bfloat16
    up = model.model.language_model.layers[0].mlp.up_proj.weight.detach().float()
    assert 0.015 < up.std() < 0.025  # transformers' standard init (std 0.02), not zeros or leftovers
    assert torch.equal(model.model.language_model.norm.weight.detach(), torch.ones_like(model.model.language_model.norm.weight))
