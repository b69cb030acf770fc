"""A ZeRO-3 run killed after step 3 and continued with `--resume` ends with the weights of the run that was never
interrupted (within 1e-6): DeepSpeed's partitioned optimizer states, the scheduler, the RNG states and the data
order all come back from checkpoint-3. 2 ranks under torchrun; the kill is a SIGKILL of both ranks right after the
checkpoint was written (tests/distributed/stop_after.py).

PPO resumes from a checkpoint at a rollout boundary here (one minibatch step per rollout): a run cut inside a
rollout draws that rollout again with the restored policy, which the uninterrupted run drew with an older one.
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

HERE = Path(__file__).resolve().parent
RUN = ["--deepspeed", "zero3", "max_steps=5", "save_strategy=steps", "save_steps=3", "logging_steps=1", "seed=0"]


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {f"{path.relative_to(folder)}:{k}": v for path in sorted(folder.glob("**/*.safetensors"))
            if "checkpoint-" not in str(path.relative_to(folder)) for k, v in load_file(str(path)).items()}


def _interrupted_then_resumed(args: list, out: Path) -> None:
    env = {"STOP_AFTER_STEP": "3", "PYTHONPATH": str(HERE)}
    killed = align_cli([*args, "--output-dir", out, *RUN], nproc=2, module="stop_after", env_extra=env, check=False)
    assert killed.returncode != 0
    assert (out / "checkpoint-3" / "trainer_state.json").is_file() and not (out / "checkpoint-5").exists()
    assert json.loads((out / "run.json").read_text())["complete"] is False
    align_cli([*args, "--output-dir", out, *RUN, "--resume"], nproc=2)


def _compare(args: list, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    align_cli([*args, "--output-dir", straight, *RUN], nproc=2)
    _interrupted_then_resumed(args, resumed)
    run = json.loads((resumed / "run.json").read_text())
    assert run["complete"] and run["global_step"] == 5
    expected, got, at_3 = _tensors(straight), _tensors(resumed), _tensors(straight / "checkpoint-3")
    assert expected.keys() == got.keys() == at_3.keys() and expected
    # Steps 4 and 5 moved the weights well beyond the tolerance (else the comparison below says nothing).
    assert max((expected[k] - at_3[k]).abs().max().item() for k in expected) > 1e-4
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0, msg=lambda m, k=key: f"{k}: {m}")


def test_dpo_resumed_under_zero3_ends_with_the_uninterrupted_weights(tiny_checkpoint, pairs, tmp_path):
    args = ["dpo", "--variant", "dpo", "--model", tiny_checkpoint("llava"), "--data", pairs / "all.jsonl",
            "--train", "projector+llm", "per_device_train_batch_size=1", "learning_rate=1e-3", "max_length=512"]
    _compare(args, tmp_path)


def test_ppo_resumed_under_zero3_ends_with_the_uninterrupted_weights(tiny_checkpoint, shapes_world, tmp_path):
    args = ["ppo", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl", "--reward-func",
            "align.train.ppo.rewards.shapes_color", "length_bonus_score=1.0", "rollout_batch_size=1",
            "per_device_train_batch_size=1", "ppo_epochs=1", "max_new_tokens=4", "learning_rate=1e-2"]
    _compare(args, tmp_path)
