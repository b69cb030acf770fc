"""What launched runs rely on, without launching: the check of saved weights, the launcher's `--local_rank`
argument, accelerate configs in recipes/, and the launcher's mixed precision against align's."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")


def _save(path, tensors):
    from safetensors.torch import save_file

    save_file(tensors, str(path))


def test_weights_problem_accepts_a_model_an_index_with_its_shards_or_an_adapter(tmp_path):
    from align.models.saved_weights import weights_problem

    (tmp_path / "model").mkdir()
    _save(tmp_path / "model" / "model.safetensors", {"w": torch.ones(2, 3)})
    assert weights_problem(tmp_path / "model") is None

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    _save(sharded / "model-00001-of-00002.safetensors", {"a": torch.ones(2)})
    _save(sharded / "model-00002-of-00002.safetensors", {"b": torch.ones(2)})
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert weights_problem(sharded) is None
    (sharded / "model-00002-of-00002.safetensors").unlink()
    assert "model-00002-of-00002.safetensors" in weights_problem(sharded)

    (tmp_path / "adapter").mkdir()
    _save(tmp_path / "adapter" / "adapter_model.safetensors", {"lora_A": torch.ones(4, 2)})
    assert weights_problem(tmp_path / "adapter") is None


def test_weights_problem_names_what_a_sharded_save_leaves(tmp_path):
    """No weights file (DeepSpeed's global_stepN/ only), or the empty tensors a ZeRO-3 rank holds for itself."""
    from align.models.saved_weights import weights_problem

    (tmp_path / "global_step2").mkdir()
    (tmp_path / "config.json").write_text("{}")
    assert "no model weights" in weights_problem(tmp_path)
    _save(tmp_path / "model.safetensors", {"ok": torch.ones(3), "shard": torch.empty(0)})
    assert "1 empty tensors (e.g. shard" in weights_problem(tmp_path)
    _save(tmp_path / "model.safetensors", {"ok": torch.ones(3)})
    (tmp_path / "value_model").mkdir()
    _save(tmp_path / "value_model" / "adapter_model.safetensors", {"lora_B": torch.empty(0, 4)})
    assert weights_problem(tmp_path).startswith("value_model/adapter_model.safetensors holds 1 empty")
    (tmp_path / "value_model" / "adapter_model.safetensors").unlink()
    (tmp_path / "checkpoint-2").mkdir()  # the Trainer's own checkpoints are not the result
    _save(tmp_path / "checkpoint-2" / "model.safetensors", {"shard": torch.empty(0)})
    assert weights_problem(tmp_path) is None


def test_check_saved_weights_refuses_to_call_the_run_complete(tmp_path):
    from align.errors import ModelError
    from align.train.skeleton import check_saved_weights

    with pytest.raises(ModelError, match="training finished but no model weights .* not marked complete"):
        check_saved_weights(tmp_path)


@pytest.mark.parametrize(("argv", "kept"), [
    (["dpo", "--model", "m", "--local_rank=1"], ["dpo", "--model", "m"]),
    (["sft", "--local-rank", "0", "x=1"], ["sft", "x=1"]),
    (["sft", "--local_rank_file=a"], ["sft", "--local_rank_file=a"]),
])
def test_the_deepspeed_launchers_local_rank_argument_is_dropped(argv, kept):
    from align.cli.main import without_local_rank

    assert without_local_rank(argv) == kept


def test_accelerate_recipes_are_checked_by_accelerates_reader(tmp_path):
    from align.recipes import check_recipe

    good = "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\n" \
           "mixed_precision: 'no'\nnum_processes: 2\n"
    (tmp_path / "good.yaml").write_text(good)
    assert check_recipe(tmp_path / "good.yaml", kind="accelerate") == []
    (tmp_path / "bf16.yaml").write_text(good.replace("'no'", "bf16"))
    assert check_recipe(tmp_path / "bf16.yaml", kind="accelerate") == [
        f"{tmp_path / 'bf16.yaml'}: mixed_precision must be 'no' (align sets precision with `bf16`), got 'bf16'"]
    (tmp_path / "typo.yaml").write_text(good + "num_procesess: 2\n")
    [problem] = check_recipe(tmp_path / "typo.yaml", kind="accelerate")
    assert "not an accelerate config" in problem and "num_procesess" in problem


def test_launcher_mixed_precision_that_the_machine_lacks_is_one_line(monkeypatch, tmp_path):
    """`accelerate launch` exports its config's mixed_precision; bf16 without CUDA is refused before DeepSpeed
    would stop with its multi-line mismatch table."""
    from align.errors import ConfigError
    from align.train.sft.settings import AlignSFTConfig

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only message")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ConfigError, match="sets mixed_precision: bf16 but this machine has no CUDA"):
        AlignSFTConfig(output_dir=str(tmp_path))
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert AlignSFTConfig(output_dir=str(tmp_path)).bf16 is False
