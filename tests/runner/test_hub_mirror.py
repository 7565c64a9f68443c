"""The random-weight models write what the published snapshot holds (tests/support/qwen2_audio_7b_instruct.json),
so that what passes on them passes on the real checkpoint."""

import json
from pathlib import Path

import pytest
from transformers import AutoProcessor

from server.tiny_model import write_tiny_model
from tests.support.checkpoint import HUB_CHAT_TEMPLATE

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

HUB = json.loads((Path(__file__).resolve().parents[1] / "support" / "qwen2_audio_7b_instruct.json").read_text())


def _value(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def _json(folder: str, name: str) -> dict:
    return json.loads((Path(folder) / name).read_text())


def test_the_files_and_values_are_the_published_ones(tiny_model_dir):
    config, generation = _json(tiny_model_dir, "config.json"), _json(tiny_model_dir, "generation_config.json")
    for key, expected in HUB["config"]["values"].items():
        assert _value(config, key) == expected, key
    for key, expected in HUB["generation_config"]["values"].items():
        assert generation[key] == expected, key
    preprocessor = _json(tiny_model_dir, "preprocessor_config.json")
    for key, expected in HUB["preprocessor_config"]["values"].items():
        assert preprocessor[key] == expected, key
    tokenizer_config = _json(tiny_model_dir, "tokenizer_config.json")
    assert tokenizer_config["chat_template"] == HUB_CHAT_TEMPLATE
    assert tokenizer_config["tokenizer_class"] == HUB["tokenizer_config"]["values"]["tokenizer_class"]


def test_the_loaded_processor_has_the_published_ids_and_template(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    for token, expected in HUB["special_token_ids"]["values"].items():
        assert processor.tokenizer.convert_tokens_to_ids(token) == expected, token
    assert processor.chat_template == HUB_CHAT_TEMPLATE  # not transformers' built-in default


def test_the_base_layout_has_no_chat_template_anywhere(tmp_path):
    folder = write_tiny_model(tmp_path / "base", layout="base")
    assert not (folder / "chat_template.json").exists() and not (folder / "chat_template.jinja").exists()
    assert "chat_template" not in _json(folder, "tokenizer_config.json")
    assert "do_sample" not in _json(folder, "generation_config.json")


@pytest.mark.parametrize("name", ["model-00001-of-00005.safetensors", "model-00005-of-00005.safetensors"])
def test_the_full_preset_is_sharded_as_published(name):
    """Planned on the meta device: the full preset's bfloat16 modules in shards of at most 4 GB, as the hub's."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from server.tiny_model import plan_shards, preset_config
    from server.tiny_tokenizer import train_tokenizer

    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration(preset_config(train_tokenizer(), "full")).to(torch.bfloat16)
    shards = plan_shards(model, 4 * 10**9)
    assert len(shards) == HUB["weight_files"]["values"]["shards"]
    assert name in [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
