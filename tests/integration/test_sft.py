"""`align sft` end to end on tiny models and shapes data: what must change changes, what must stay frozen stays
bit-identical, stages chain, resume reproduces the uninterrupted run, bad rows stop everything before it starts."""

from __future__ import annotations

import json

import pytest

from align.models.tiny import TINY_BUILDERS

torch = pytest.importorskip("torch")

STEP_ARGS = ["per_device_train_batch_size=2", "max_steps=3", "learning_rate=1e-2", "max_length=512",
             "save_strategy=no", "logging_steps=1"]


def _sft(run_cli, model, data, out, *extra):
    return run_cli("sft", "--model", model, "--data", data, "--output-dir", out, *extra, *STEP_ARGS)


def _model(path):
    from align.models.load import load_model_and_processor

    return load_model_and_processor(path, dtype="float32")[0]


def _changed_and_trainable(base_dir, out_dir, family, policy):
    """Parameter names that changed between two checkpoints, and those the policy trains."""
    from align.models.freeze import apply_train_policy

    before, after = dict(_model(base_dir).named_parameters()), dict(_model(out_dir).named_parameters())
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    policy_model = apply_train_policy(_model(base_dir), family, policy)
    trainable = {k for k, p in policy_model.named_parameters() if p.requires_grad}
    return changed, trainable


@pytest.mark.parametrize("family", sorted(TINY_BUILDERS))
def test_three_steps_with_the_natural_policy(family, tiny_checkpoint, shapes_world, run_cli, tmp_path):
    from align.models.families import get_family

    base = tiny_checkpoint(family)
    out = tmp_path / "out"
    result = _sft(run_cli, base, shapes_world / "sft.jsonl", out)
    assert result.code == 0, result
    policy = get_family(family).natural_policy
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["policy"] == policy and run["global_step"] == 3
    assert all(isinstance(e.get("loss", 0.0), float) for e in run["log_history"])

    changed, trainable = _changed_and_trainable(base, out, family, policy)
    assert changed, "nothing trained"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    # Nearly every trainable tensor moves in 3 AdamW steps at lr 1e-2 (a few, such as unused embedding rows'
    # tensors, can stay: they are whole tensors here, so require most of them).
    assert len(changed) >= 0.8 * len(trainable), (len(changed), len(trainable))

    # The output is a checkpoint transformers loads with its processor and chat template.
    from align.models.load import load_model_and_processor

    model, processor = load_model_and_processor(out)
    assert processor.chat_template
