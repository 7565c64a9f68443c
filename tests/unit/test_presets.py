"""The bench's `full` preset is the published Qwen2-Audio-7B architecture (checked on the meta device: no memory)."""

import torch
from transformers import Qwen2AudioForConditionalGeneration

from server.tiny_model import preset_config, train_tokenizer


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
