"""The KV-cache budget: what a share of the device's memory leaves after the weights and activations."""

from server.runner.kv_budget import MemoryReading, kv_budget_bytes, kv_budget_tokens, kv_bytes_per_token

GiB = 2**30


def test_the_published_7b_takes_half_a_mebibyte_per_token_in_bf16():
    assert kv_bytes_per_token(layers=32, kv_heads=32, head_dim=128, dtype_bytes=2) == 2**19


def test_the_share_binds_on_a_device_of_our_own():
    # a 24 GiB GPU holding 6 GiB of int4 weights; 1 GiB kept for a 30 s prefill's activations
    gpu = MemoryReading(total=24 * GiB, free=18 * GiB, held=6 * GiB, weights=6 * GiB, activations=1 * GiB)
    assert kv_budget_bytes(gpu, 0.9) == int(0.9 * 24 * GiB - 6 * GiB - 1 * GiB)


def test_memory_others_hold_is_left_alone():
    # a shared machine: others hold 10 GiB, so leaving 10% of the total free binds before the share does
    ram = MemoryReading(total=24 * GiB, free=12 * GiB, held=2 * GiB, weights=1 * GiB, activations=0)
    assert kv_budget_bytes(ram, 0.9) == int(12 * GiB - 0.1 * 24 * GiB)


def test_no_room_is_zero_and_the_batch_caps_the_tokens():
    full = MemoryReading(total=8 * GiB, free=1 * GiB, held=7 * GiB, weights=7 * GiB, activations=GiB // 2)
    assert kv_budget_tokens(full, 0.9, 2**19, 32, cap=10**6) == 0
    roomy = MemoryReading(total=80 * GiB, free=64 * GiB, held=16 * GiB, weights=16 * GiB, activations=GiB)
    assert kv_budget_tokens(roomy, 0.9, 2**19, 32, cap=8 * 8192) == 8 * 8192
    # one layer's worth stays free for re-making the cache layer by layer
    assert kv_budget_tokens(roomy, 0.5, 2**19, 32, cap=10**6) == (40 * GiB - 16 * GiB - GiB) // 2**19 * 32 // 33
