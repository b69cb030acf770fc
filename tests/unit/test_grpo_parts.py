"""GRPO's pure parts: group advantages on hand-worked rewards, the reward columns checked before training, the
config's one-line problems."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from align.errors import ConfigError, DataError  # noqa: E402
from align.losses import group_advantages  # noqa: E402
from align.train.rewards import check_reward_columns, columns_read  # noqa: E402

EPS = 1e-4


def _close(got: torch.Tensor, want: list[float]) -> None:
    assert got.tolist() == pytest.approx(want, abs=1e-6), got.tolist()


def test_group_advantages_weight_sum_then_normalise_within_each_group():
    # Two groups of two completions, two reward functions weighted 1 and 0.5: rewards 1, 0 | 1.5, 0.5.
    per_func = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    out = group_advantages(per_func, torch.tensor([1.0, 0.5]), num_generations=2)
    _close(out.rewards, [1.0, 0.0, 1.5, 0.5])
    # Each group: mean 0.5 (resp. 1), sample std sqrt((0.25 + 0.25) / 1) = sqrt(0.5).
    a = 0.5 / (math.sqrt(0.5) + EPS)
    _close(out.advantages, [a, -a, a, -a])
    assert out.zero_std.tolist() == [False] * 4


def test_group_advantages_scale_none_and_batch():
    per_func = torch.tensor([[1.0], [0.0], [1.5], [0.5]])
    weights = torch.tensor([1.0])
    _close(group_advantages(per_func, weights, 2, scale="none").advantages, [0.5, -0.5, 0.5, -0.5])
    # Batch std: mean 0.75, squared deviations 0.0625 + 0.5625 + 0.5625 + 0.0625 = 1.25, / 3.
    std = math.sqrt(1.25 / 3)
    _close(group_advantages(per_func, weights, 2, scale="batch").advantages,
           [0.5 / (std + EPS), -0.5 / (std + EPS), 0.5 / (std + EPS), -0.5 / (std + EPS)])


def test_group_advantages_zero_for_one_reward_groups_and_unscored_completions():
    nan = float("nan")
    # Group 1: the first completion unscored (every function NaN), so the group holds one reward: no signal.
    # Group 2: the second function skips both; rewards 2 and 0 from the first.
    # Group 3: the same reward twice.
    per_func = torch.tensor([[nan, nan], [1.0, 1.0], [2.0, nan], [0.0, nan], [1.0, 0.0], [1.0, 0.0]])
    out = group_advantages(per_func, torch.tensor([1.0, 1.0]), 2)
    b = 1.0 / (math.sqrt(2.0) + EPS)
    _close(out.advantages, [0.0, 0.0, b, -b, 0.0, 0.0])
    assert math.isnan(out.rewards[0].item()) and out.rewards[1].item() == 2.0
    assert out.zero_std.tolist() == [True, True, False, False, True, True]  # group 1 has one scored reward


def test_group_advantages_normalize_then_sum():
    # Group 1: function 0 gives 1, 0; function 1 gives 0, 0 (std 0: contributes 0).
    # Group 2: function 0 gives 3, 1 and function 1 gives 0, 2: they cancel.
    per_func = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 0.0], [1.0, 2.0]])
    out = group_advantages(per_func, torch.tensor([1.0, 1.0]), 2, aggregation="normalize_then_sum")
    a = 0.5 / (math.sqrt(0.5) + EPS)
    c = 1.0 / (math.sqrt(2.0) + EPS)
    summed = [a, -a, c - c, -c + c]
    std = math.sqrt((a * a + a * a) / 3)  # sample std of [a, -a, 0, 0] around its mean 0
    _close(out.rewards, summed)
    _close(out.advantages, [s / (std + EPS) for s in summed])


def test_group_advantages_refuses_an_unknown_aggregation():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        group_advantages(torch.zeros(2, 1), torch.ones(1), 2, aggregation="mean")


def test_columns_read_are_declared_or_the_named_parameters_without_a_default():
    from align.data import shapes_rewards
    from align.eval.shapes_chair import claim_reward

    def custom(prompts, completions, answer, box=None, scale=2.0, completion_ids=None, trainer_state=None, **kw):
        return []

    assert columns_read(custom) == ["answer"]  # box=None is optional: the function handles its absence
    assert columns_read(shapes_rewards.count) == ["answer"]
    assert columns_read(shapes_rewards.grounding_iou) == ["box", "image_size"]  # grounding_format is optional
    assert columns_read(shapes_rewards.answer_format) == []
    assert columns_read(claim_reward) == ["objects"]


def test_check_reward_columns_names_the_first_row_without_a_read_column():
    from align.data import shapes_rewards

    records = [{"answer": 2}, {"answer": 3}, {"task": "count"}]
    origins = [("p.jsonl", 1), ("p.jsonl", 2), ("p.jsonl", 3)]
    check_reward_columns([("fmt", shapes_rewards.answer_format)], records, origins)  # reads no column
    with pytest.raises(DataError) as caught:
        check_reward_columns([("n", shapes_rewards.count)], records, origins)
    assert str(caught.value) == ("p.jsonl, row 3, field 'answer': reward function 'n' reads the column 'answer', "
                                 "which this row does not set")


def _config(**kw):
    from align.train.grpo.settings import AlignGRPOConfig

    base = {"output_dir": "out", "reward_funcs": ["align.data.shapes_rewards:count"], "report_to": "none"}
    return AlignGRPOConfig(**{**base, **kw})


def test_grpo_config_defaults_for_this_machine_and_align():
    from align.train.common import cuda_bf16_available

    cfg = _config(per_device_train_batch_size=4, num_generations=4)
    assert cfg.bf16 is cuda_bf16_available() and not cfg.activation_checkpointing  # TRL: True for both
    assert cfg.train == "lora" and cfg.beta == 0.0 and cfg.loss_type == "dapo"
    assert cfg.generation_batch_size == 4 and cfg.steps_per_generation == 1


@pytest.mark.parametrize("kw, problem", [
    ({"per_device_train_batch_size": 3, "num_generations": 2},
     "a generation batch of 3 completions (per_device_train_batch_size 3 x 1 process(es) x 1 steps) does not divide "
     "into groups of num_generations 2; make it a multiple"),
    ({"per_device_train_batch_size": 2, "num_generations": 1}, "num_generations must be at least 2"),
    ({"generation_batch_size": 6, "per_device_train_batch_size": 4, "num_generations": 2},
     "generation_batch_size 6 must be a multiple of per_device_train_batch_size x processes = 4"),
    ({"reward_funcs": []}, "no reward: set reward_model"),
    ({"reward_weights": [1.0, 2.0]}, "reward_weights has 2 entries for 1 reward_funcs"),
    ({"loss_type": "ppo"}, "loss_type must be one of grpo, dapo, dr_grpo, bnpo"),
    ({"beta": -0.1}, "beta must be >= 0, got -0.1"),
    ({"importance_sampling_level": "chunk"}, "importance_sampling_level must be token (GRPO) or sequence (GSPO)"),
    ({"use_vllm": True}, "use_vllm is not supported by align grpo: align samples with the model's own generate"),
])
def test_grpo_config_problems_are_one_line_each(kw, problem):
    kw = {"per_device_train_batch_size": 4, "num_generations": 4, **kw}
    with pytest.raises(ConfigError) as caught:
        _config(**kw)
    assert problem in str(caught.value)
