"""`align plan`'s arithmetic (align.plan.memory, align.plan.activations) on numbers worked out by hand."""

from __future__ import annotations

import pytest

from align.errors import ConfigError
from align.plan.activations import LayerShape, Pass, Stack, kv_cache_bytes, per_sample_bytes
from align.plan.memory import (
    GIB,
    StateBytes,
    ZeroSetup,
    fits,
    frozen_weights,
    gathered_layer,
    partition,
    trainable_states,
)

P = 7_000_000_000  # a 7B model, every parameter trained
L = 131_334_144  # its largest layer: a 32064 x 4096 embedding
BF16 = StateBytes.for_dtype("bf16")


def test_seven_billion_zero3_over_eight_gpus():
    """7B trainable parameters, bf16 mixed precision, ZeRO-3 over 8 GPUs, per GPU:

    each rank owns 7e9 / 8 = 875,000,000 parameters
      weights    875e6 x 2  =  1,750,000,000 B
      gradients  875e6 x 2  =  1,750,000,000 B
      optimizer  875e6 x 12 = 10,500,000,000 B   (fp32 master 4 + exp_avg 4 + exp_avg_sq 4)
      gathered layer: the embedding whole, 16-bit weights and gradients: 131,334,144 x (2 + 2) = 525,336,576 B
    total 14,525,336,576 B = 13.53 GiB, nothing in CPU memory.
    """
    zero3 = ZeroSetup(stage=3)
    states = trainable_states(P, zero3, 8, BF16)
    assert {k: v.gpu for k, v in states.items()} == {
        "trainable_weights": 1_750_000_000, "gradients": 1_750_000_000, "optimizer_states": 10_500_000_000}
    assert all(v.cpu == 0 for v in states.values())
    layer = gathered_layer(L, L, zero3, BF16)
    assert layer.gpu == 525_336_576
    total = sum(v.gpu for v in states.values()) + layer.gpu
    assert total == 14_525_336_576
    assert round(total / GIB, 2) == 13.53


def test_seven_billion_zero2_and_no_zero():
    """ZeRO-2 keeps the 16-bit weights whole: 7e9 x 2 = 14e9 B, gradients 1.75e9 and optimizer 10.5e9 as under
    ZeRO-3: 26.25e9 B. Without DeepSpeed every GPU holds all of it: 14e9 + 14e9 + 84e9 = 112e9 B. ZeRO-1 splits
    only the optimizer: 14e9 + 14e9 + 10.5e9 = 38.5e9 B. No gathered layer below stage 3."""
    zero2 = trainable_states(P, ZeroSetup(stage=2), 8, BF16)
    assert sum(v.gpu for v in zero2.values()) == 26_250_000_000
    assert zero2["trainable_weights"].gpu == 14_000_000_000
    plain = trainable_states(P, ZeroSetup(), 8, BF16)
    assert sum(v.gpu for v in plain.values()) == 112_000_000_000
    zero1 = trainable_states(P, ZeroSetup(stage=1), 8, BF16)
    assert sum(v.gpu for v in zero1.values()) == 38_500_000_000
    assert gathered_layer(L, L, ZeroSetup(stage=2), BF16).gpu == 0


def test_float32_has_no_master_copy():
    """float32: 4 B weights + 4 B gradients + 8 B moments = 16 B per parameter, the same total as bf16's
    2 + 2 + 12, split differently: under ZeRO-3 over 8, 875e6 x 4 = 3.5e9, 3.5e9 and 875e6 x 8 = 7e9."""
    fp32 = StateBytes.for_dtype("float32")
    assert (fp32.weights, fp32.gradients, fp32.optimizer) == (4, 4, 8)
    states = trainable_states(P, ZeroSetup(stage=3), 8, fp32)
    assert [v.gpu for v in states.values()] == [3_500_000_000, 3_500_000_000, 7_000_000_000]
    assert frozen_weights(1_000, ZeroSetup(), 8, fp32.weights).gpu == 4_000


def test_offload_moves_partitions_to_cpu():
    """zero3_offload (optimizer and params on CPU), 8 GPUs: each rank's partitions go to CPU memory,
    1.75e9 + 1.75e9 + 10.5e9 = 14e9 B per rank; the GPU keeps the gathered layer only (525,336,576 B).
    Optimizer offload alone under ZeRO-2: the GPU keeps the whole 16-bit weights (14e9 B), as DeepSpeed's
    estimator says (gpu_mem = 2 x params)."""
    offload = ZeroSetup(stage=3, offload_optimizer=True, offload_param=True)
    states = trainable_states(P, offload, 8, BF16)
    assert sum(v.gpu for v in states.values()) == 0
    assert sum(v.cpu for v in states.values()) == 14_000_000_000
    assert gathered_layer(L, L, offload, BF16).gpu == 525_336_576
    zero2_offload = trainable_states(P, ZeroSetup(stage=2, offload_optimizer=True), 8, BF16)
    assert sum(v.gpu for v in zero2_offload.values()) == 14_000_000_000
    assert sum(v.cpu for v in zero2_offload.values()) == 1_750_000_000 + 10_500_000_000


def test_frozen_weights_and_partitions():
    """A frozen 0.3B vision tower: 0.3e9 x 2 = 6e8 B whole (ZeRO-2, frozen models whole on every rank), 3.75e7 x 2
    = 7.5e7 B under ZeRO-3 over 8, in CPU memory with offload_param. A partition rounds up: 10 over 3 is 4. A
    frozen layer gathers its weights only: 1,000 x 2 = 2,000 B."""
    assert frozen_weights(300_000_000, ZeroSetup(stage=2), 8, 2).gpu == 600_000_000
    assert frozen_weights(300_000_000, ZeroSetup(stage=3), 8, 2).gpu == 75_000_000
    offloaded = frozen_weights(300_000_000, ZeroSetup(stage=3, offload_optimizer=True, offload_param=True), 8, 2)
    assert (offloaded.gpu, offloaded.cpu) == (0, 75_000_000)
    assert partition(10, 3) == 4
    assert gathered_layer(1_000, 0, ZeroSetup(stage=3), BF16).gpu == 2_000


def test_presets_read_from_their_json():
    import json
    from pathlib import Path

    from align.train.common import resolve_deepspeed

    def setup(name):
        return ZeroSetup.from_deepspeed_config(json.loads(Path(resolve_deepspeed(name)).read_text()))

    assert setup("zero2") == ZeroSetup(stage=2)
    assert setup("zero3") == ZeroSetup(stage=3)
    assert setup("zero3_offload") == ZeroSetup(stage=3, offload_optimizer=True, offload_param=True)
    with pytest.raises(ConfigError, match="offload_param needs ZeRO stage 3"):
        ZeroSetup.from_deepspeed_config({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}})
    with pytest.raises(ConfigError, match="must be 0, 1, 2 or 3"):
        ZeroSetup(stage=4)


def test_layer_elements_reduce_to_korthikanti():
    """h = 1024, h_kv = h, plain MLP of 4h: attention h + 3h + h = 5h, norms 2h, MLP h + 2 x 4h = 9h: 16h elements,
    32h bytes in 16-bit = Korthikanti et al.'s 34h less its two 1-byte dropout masks."""
    shape = LayerShape(hidden=1024, intermediate=4096, kv_hidden=1024, gated=False)
    assert shape.elements_per_token == 16 * 1024
    assert shape.elements_per_token * 2 + 2 * 1024 == 34 * 1024


def test_llama_7b_layer_and_dpo_sample():
    """LLaMA-7B's layer (h = 4096, MHA, SwiGLU I = 11008): attention 4096 + 12288 + 4096 = 20480, norms 8192,
    MLP 4096 + 4 x 11008 = 48128: 76,800 elements = 153,600 B per token.

    32 layers over 2048 tokens, one sequence:
      no checkpointing  32 x 2048 x 76800 x 2 = 10,066,329,600 B
      checkpointing     inputs 32 x 2048 x 4096 x 2 = 536,870,912 B; recomputed layer 2048 x 76800 x 2 = 314,572,800 B
    A DPO sample (chosen + rejected, 2 rows), checkpointing: 2 x 536,870,912 + 2 x 314,572,800 = 1,702,887,424 B;
    without: 2 x 10,066,329,600 = 20,132,659,200 B."""
    shape = LayerShape(hidden=4096, intermediate=11008, kv_hidden=4096, gated=True)
    assert shape.elements_per_token == 76_800
    stack = Stack("language_model", 32, 2048, shape)
    assert stack.full() * 2 == 10_066_329_600
    assert stack.inputs() * 2 == 536_870_912
    assert stack.one_layer() * 2 == 314_572_800
    dpo = [Pass("policy", 2, (stack,))]
    on = per_sample_bytes(dpo, 2, checkpointing=True)
    assert on == {"language_model": 1_073_741_824, "vision": 0, "logits": 0, "recompute": 629_145_600,
                  "total": 1_702_887_424}
    assert per_sample_bytes(dpo, 2, checkpointing=False)["total"] == 20_132_659_200


def test_logits_vision_and_kv_cache():
    """Full logits of 2048 tokens x 50272 vocab: 16-bit logits (2 B) + float32 log-softmax (4 B) = 617,742,336 B
    per sequence. A vision stack of one CLIP-L layer (h 1024, I 4096, plain) over 576 patches without checkpointing:
    576 x 16384 x 2 = 18,874,368 B. KV cache of LLaMA-7B over 2048 tokens: 2 x 32 x 4096 x 2048 x 2 = 1,073,741,824 B."""
    text = Stack("language_model", 1, 2048, LayerShape(8, 16, 8, False))
    vision = Stack("vision", 1, 576, LayerShape(1024, 4096, 1024, False))
    parts = per_sample_bytes([Pass("policy", 1, (text, vision), logits=2048 * 50272)], 2, checkpointing=False)
    assert parts["logits"] == 617_742_336
    assert parts["vision"] == 18_874_368
    assert kv_cache_bytes(32, 4096, 2048, 2) == 1_073_741_824


def test_largest_micro_batch():
    """80 GiB = 85,899,345,920 B; with 14,525,336,576 B of model states and 1,702,887,424 B per sample,
    (85,899,345,920 - 14,525,336,576) / 1,702,887,424 = 41.9: 41 samples fit. States over the budget: none."""
    assert fits(80 * GIB, 14_525_336_576, 1_702_887_424) == 41
    assert fits(80 * GIB, 90 * GIB, 1) == 0
