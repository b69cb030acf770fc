"""Settings that would make a wrong model, or crash later, are refused when the config is built: exit 2, one
`error:` line naming the key, no traceback, nothing left behind. A loss that turns non-finite stops the run at
that step and nothing is saved as finished."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

# (command, setting): every trainer command x the settings a user mistypes.
SETTINGS = {
    "per_device_train_batch_size=0": "per_device_train_batch_size must be >= 1",
    "per_device_train_batch_size=-2": "per_device_train_batch_size must be >= 1",
    "learning_rate=-1": "learning_rate must be > 0",
    "learning_rate=nan": "learning_rate must be a finite number",
    "gradient_accumulation_steps=0": "gradient_accumulation_steps must be >= 1",
    "num_train_epochs=-1": "num_train_epochs must be > 0",
    "max_steps=0": "max_steps must be -1 or >= 1",
    "max_grad_norm=inf": "max_grad_norm must be a finite number",
    "stages.1.learning_rate=1e-4": "stages",
}
DPO_ONLY = {
    "beta=nan": "beta must be a finite number",
    "beta=-1": "beta must be > 0",
    "beta=0": "beta must be > 0",
    "loss_type=bogus": "unknown loss_type 'bogus'",
    "ddpo_gamma=0": "ddpo_gamma must be > 0",
}
PPO_ONLY = {"temperature=0": "temperature must be > 0", "gamma=1.5": "gamma must be in [0, 1]",
            "kl_coef=-0.1": "kl_coef must be >= 0"}


def _args(command, tiny, world, pairs):
    data = {"sft": world / "sft.jsonl", "dpo": pairs, "reward": pairs, "ppo": world / "sft.jsonl"}[command]
    extra = ["--reward-func", "ppo_rewards:length"] if command == "ppo" else []
    return [command, "--model", tiny, "--data", data, *extra]


CASES = [(c, s, m) for c in ("sft", "dpo", "reward", "ppo") for s, m in SETTINGS.items()] \
    + [("dpo", s, m) for s, m in DPO_ONLY.items()] + [("ppo", s, m) for s, m in PPO_ONLY.items()]


@pytest.mark.parametrize("command, setting, message", CASES)
def test_out_of_range_settings_are_one_line_errors(command, setting, message, tiny_checkpoint, shapes_world,
                                                   built_pairs, run_cli, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))  # ppo_rewards
    out = tmp_path / "out"
    result = run_cli(*_args(command, tiny_checkpoint("llava"), shapes_world, built_pairs), "--output-dir", out,
                     setting)
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.err
    assert "Traceback" not in result.err + result.out
    assert not out.exists()


@pytest.fixture(scope="module")
def built_pairs(pairs):
    return pairs / "fixed.jsonl"


def test_validate_reports_every_bad_number_of_a_recipe(run_cli, tmp_path):
    recipe = tmp_path / "dpo" / "bad.yaml"
    recipe.parent.mkdir()
    recipe.write_text("model: m\ndata: d\nper_device_train_batch_size: 0\nbeta: -1\nlearning_rate: -3\n")
    result = run_cli("validate", recipe)
    assert result.code == 2, result
    for problem in ("per_device_train_batch_size must be >= 1, got 0", "beta must be > 0, got -1.0",
                    "learning_rate must be > 0, got -3.0"):
        assert problem in result.err, result.err


def test_a_loss_that_turns_nan_stops_the_run_at_its_step(tiny_checkpoint, built_pairs, run_cli, tmp_path):
    """lr 1e30: the first update blows the weights up, so the loss of step 2 is NaN (or the gradient norm is
    infinite before it): the run stops with one line naming the step, and writes no model and no run.json."""
    out = tmp_path / "out"
    result = run_cli("dpo", "--model", tiny_checkpoint("llava"), "--data", built_pairs, "--output-dir", out,
                     "max_steps=4", "learning_rate=1e30", "per_device_train_batch_size=2", "max_length=512")
    assert result.code == 2, result
    line = result.err.strip().splitlines()[-1]
    assert line.startswith("error: step ") and ("the loss is nan" in line or "gradient norm is" in line), line
    assert not (out / "run.json").exists() and not out.exists()


def test_the_guard_does_not_touch_a_healthy_run(tiny_checkpoint, built_pairs, run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("dpo", "--model", tiny_checkpoint("llava"), "--data", built_pairs, "--output-dir", out,
                     "max_steps=2", "per_device_train_batch_size=2", "max_length=512")
    assert result.code == 0, result
    assert json.loads((out / "run.json").read_text())["complete"]
