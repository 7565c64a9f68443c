"""What the loader reads from a checkpoint: the sampling defaults model.generate would apply, and every end id."""

import json
import shutil

import pytest

from server.runner.loader import LoadConfig, load_model

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too


@pytest.fixture
def checkpoint(tiny_model_dir, tmp_path):
    """A copy of the tiny model whose generation_config.json the test rewrites."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)

    def with_generation_config(**values) -> str:
        # written as a file, not saved by GenerationConfig: checkpoints carry combinations its validation refuses
        (folder / "generation_config.json").write_text(json.dumps(values))
        return str(folder)

    return with_generation_config


def test_the_checkpoints_own_values_are_the_defaults(checkpoint):
    # the sampling values of Qwen/Qwen2-Audio-7B-Instruct's generation_config.json (tests/support/qwen2_audio_7b_instruct.json)
    folder = checkpoint(do_sample=True, temperature=0.7, top_k=20, top_p=0.5, repetition_penalty=1.1,
                        eos_token_id=[151643, 151645], pad_token_id=151643)
    info = load_model(LoadConfig(folder, kv_cache_tokens=4096)).info
    assert dict(info.sampling_defaults) == {"temperature": 0.7, "top_p": 0.5, "top_k": 20, "repetition_penalty": 1.1}
    assert info.eos_token_ids == (151643, 151645)  # either one ends an answer


def test_what_a_checkpoint_leaves_out_is_what_generate_does(checkpoint):
    """transformers 5.24: GenerationConfig._get_default_generation_params, and greedy without do_sample."""
    info = load_model(LoadConfig(checkpoint(eos_token_id=7), kv_cache_tokens=4096)).info
    assert dict(info.sampling_defaults) == {"temperature": 0.0, "top_p": 1.0, "top_k": 50, "repetition_penalty": 1.0}
    assert info.eos_token_ids == (7,)


def test_do_sample_false_is_greedy_whatever_the_temperature(checkpoint):
    info = load_model(LoadConfig(checkpoint(do_sample=False, temperature=0.9, repetition_penalty=1.2),
                                 kv_cache_tokens=4096)).info
    assert info.sampling_defaults["temperature"] == 0.0 and info.sampling_defaults["repetition_penalty"] == 1.2
