"""The CPU paths of the model runner: oneDNN linear layers compute what nn.Linear does, and where they apply."""

import pytest
import torch
from transformers import Qwen2AudioForConditionalGeneration

from server.runner.cpu import OneDnnLinear, can_pack, pack_linears
from server.tiny_model import preset_config
from server.tiny_tokenizer import train_tokenizer

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too


def test_a_packed_linear_computes_what_nn_linear_does():
    torch.manual_seed(0)
    for bias in (True, False):
        dense = torch.nn.Linear(48, 80, bias=bias)
        packed = OneDnnLinear(dense)
        for shape in [(5, 48), (3, 7, 48), (1, 1, 48)]:
            x = torch.randn(shape)
            with torch.inference_mode():
                expected, got = dense(x), packed(x)
            assert got.shape == expected.shape and got.dtype == torch.float32
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_every_plain_linear_is_packed_but_a_tied_lm_head():
    config = preset_config(train_tokenizer(300), "tiny")
    model = Qwen2AudioForConditionalGeneration(config).eval()
    plain = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert pack_linears(model) == plain and not any(type(m) is torch.nn.Linear for m in model.modules())

    tied = Qwen2AudioForConditionalGeneration(config).eval()
    tied.lm_head.weight = tied.get_input_embeddings().weight  # what tie_word_embeddings does
    assert pack_linears(tied) == plain - 1 and type(tied.lm_head) is torch.nn.Linear


def test_packing_is_for_unquantized_float32_on_the_cpu_only():
    cpu = torch.device("cpu")
    assert can_pack(cpu, torch.float32, quantized=False)
    assert not can_pack(cpu, torch.bfloat16, quantized=False)
    assert not can_pack(cpu, torch.float32, quantized=True)
    assert not can_pack(torch.device("cuda"), torch.float32, quantized=False)

