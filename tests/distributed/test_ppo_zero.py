"""`align ppo` under DeepSpeed ZeRO-2 and ZeRO-3 on a CPU (gloo), 2 ranks under torchrun.

A tiny LLaVA's LoRA policy trains against a reward model (trained here first, also under ZeRO-3 on 2 ranks) plus
a reward function; the critic starts from the reward model. Under ZeRO-3 the rollouts are generated with the gathered
parameters and the frozen reward model is a partitioned inference engine. The run must finish and save a policy
adapter whose LoRA matrices trained, and the critic beside it.
"""

from __future__ import annotations

import json

import pytest
from launch import align_cli

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")
pytest.importorskip("trl")

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def reward_model(tiny_checkpoint, pairs, tmp_path_factory):
    """`align reward` under ZeRO-3 on 2 ranks: its adapter and head are saved whole from the gathered weights."""
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("rm") / "rm"
    align_cli(["reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl", "--output-dir", out,
               "--deepspeed", "zero3", "max_steps=2", "per_device_train_batch_size=1", "learning_rate=1e-2",
               "save_strategy=no"], nproc=2)
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all(v.numel() > 0 for v in adapter.values())  # not the empty shards of a rank
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert load_file(str(out / "scalar_head.safetensors"))["weight"].abs().sum() > 0
    return out


@pytest.mark.parametrize("stage", ["zero3", "zero2"])
def test_ppo_on_two_ranks(tiny_checkpoint, shapes_world, reward_model, tmp_path, stage):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    align_cli(["ppo", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl", "--reward-model",
               reward_model, "--reward-func", "align.train.ppo.rewards.shapes_color", "--output-dir", out,
               "--deepspeed", stage, "reward_weights=[0.5]", "max_steps=4", "rollout_batch_size=2",
               "per_device_train_batch_size=1", "ppo_epochs=1", "max_new_tokens=4", "learning_rate=1e-2",
               "logging_steps=1", "save_strategy=no"], nproc=2)
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["global_step"] == 4 and len(run["reward_curve"]) == 2
    logged = [e for e in run["log_history"] if "rewards/reward_model" in e]
    assert logged and "rewards/align.train.ppo.rewards.shapes_color" in logged[0]
    assert not list(out.glob(".final.tmp-*"))
    lora = {k: v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k}
    assert lora and all(v.numel() > 0 for v in lora.values())  # gathered whole, not empty ZeRO-3 shards
    assert any(v.abs().sum() > 0 for v in lora.values())
    head = load_file(str(out / "value_model" / "scalar_head.safetensors"))
    assert head["weight"].shape == (1, 64) and head["weight"].abs().sum() > 0
    assert json.loads((out / "value_model" / "scalar_head.json").read_text())["initialised_from"] == str(reward_model)
