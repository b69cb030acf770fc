"""`align grpo` under DeepSpeed ZeRO-3 and ZeRO-2 on a CPU (gloo), 2 ranks under torchrun.

Each prompt's group of answers is split over the two ranks' batches as TRL's sampler lays it out, and the
advantages come from the rewards gathered over both. ZeRO-3: a LoRA policy whose reference (beta > 0) is the
adapter-disabled policy, answers sampled with the gathered parameters. ZeRO-2: projector+llm with a frozen copy as
the reference, a DeepSpeed inference engine. Both must finish and save whole weights that trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch import align_cli

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")
pytest.importorskip("trl")

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REWARDS = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "integration")}  # ppo_rewards: length
COMMON = ["--reward-func", "ppo_rewards:length", "max_steps=3", "num_generations=2", "per_device_train_batch_size=2",
          "max_completion_length=4", "learning_rate=1e-2", "beta=0.04", "logging_steps=1", "save_strategy=no"]


def test_grpo_lora_under_zero3_on_two_ranks(tiny_checkpoint, shapes_world, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    align_cli(["grpo", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl", "--output-dir", out,
               "--deepspeed", "zero3", *COMMON], nproc=2, env_extra=REWARDS)
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["global_step"] == 3 and run["reference"] == "adapter-disabled policy"
    assert run["deepspeed"]["zero_stage"] == 3 and len(run["reward_curve"]) == 3
    kl = [e["kl"] for e in run["log_history"] if "kl" in e]
    assert len(kl) == 3 and kl[-1] > 0
    lora = {k: v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k}
    assert lora and all(v.numel() > 0 for v in lora.values())  # gathered whole, not empty ZeRO-3 shards
    assert any(v.abs().sum() > 0 for v in lora.values())


def test_grpo_projector_and_llm_under_zero2_on_two_ranks(tiny_checkpoint, shapes_world, tmp_path):
    from safetensors.torch import load_file

    base = tiny_checkpoint("llava")
    out = tmp_path / "out"
    align_cli(["grpo", "--model", base, "--data", shapes_world / "sft.jsonl", "--output-dir", out, "--deepspeed",
               "zero2", "--train", "projector+llm", *COMMON], nproc=2, env_extra=REWARDS)
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["deepspeed"]["zero_stage"] == 2 and run["reference"] == str(base)
    before, after = load_file(str(Path(base) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if "vision_tower" in k)
    assert any(not torch.equal(before[k], after[k]) for k in before if "multi_modal_projector" in k)
