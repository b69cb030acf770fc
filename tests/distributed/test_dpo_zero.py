"""`align dpo --variant mdpo` under DeepSpeed ZeRO-3 on a CPU (gloo), 2 ranks under torchrun, in shared layouts
(prefix sharing, padding-free rows, one image encoding per step) and without them.

The policy trains projector+llm of a tiny LLaVA on halva pairs (as tests/integration/test_dpo.py makes them), with a
separate frozen reference that TRL prepares for DeepSpeed itself. The run must finish, write run.json and a
checkpoint that loads with plain transformers, where what the policy trains changed and the frozen vision tower is
bit-identical to the base.
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

FAMILY, POLICY = "llava", "projector+llm"
STEP_ARGS = ["per_device_train_batch_size=1", "max_steps=2", "learning_rate=1e-2", "max_length=512",
             "save_strategy=no", "logging_steps=1"]


@pytest.fixture(scope="module")
def first4(pairs):
    """The first 4 halva pairs (with spans) of the session's `pairs` folder."""
    return pairs / "first4.jsonl"


def _params(path) -> dict:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    return {name: p.detach() for name, p in model.named_parameters()}


def _trainable(base) -> set[str]:
    from align.models.freeze import apply_train_policy
    from align.models.load import load_model_and_processor

    model = apply_train_policy(load_model_and_processor(base, dtype="float32")[0], FAMILY, POLICY)
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_mdpo_under_zero3_on_two_ranks_trains_only_the_policy(tiny_checkpoint, first4, tmp_path):
    from safetensors import safe_open

    base = Path(tiny_checkpoint(FAMILY))
    out = tmp_path / "out"
    align_cli(["dpo", "--variant", "mdpo", "--model", base, "--data", first4, "--output-dir", out,
               "--deepspeed", "zero3", "--train", POLICY, *STEP_ARGS], nproc=2)

    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["variant"] == "mdpo" and run["policy"] == POLICY and run["global_step"] == 2
    assert run["reference"] == str(base)
    steps = [e for e in run["log_history"] if "loss" in e]
    assert len(steps) == 2 and all("loss/mdpo_conditional" in e for e in steps)
    assert not list(out.glob(".final.tmp-*")), "the temporary save folder was left behind"

    def keys(folder: Path) -> set[str]:
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            return set(f.keys())

    # Whole weights under the base checkpoint's key names (ZeRO-3 gathers its shards).
    assert keys(out) == keys(base)
    before, after = _params(base), _params(out)
    assert after.keys() == before.keys()
    assert all(after[k].shape == before[k].shape and after[k].dtype == torch.float32 for k in after)
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    trainable = _trainable(base)
    assert changed == trainable, (sorted(changed - trainable)[:5], sorted(trainable - changed)[:5])
    vision = [k for k in after if ".vision_tower." in f".{k}"]
    assert vision and not set(vision) & changed  # bit-identical frozen tower

    # The run used the shared layouts (their default here); the same run without them has the same losses.
    assert all(v == {"used": True} for v in run["layouts"].values()), run["layouts"]
    plain = tmp_path / "plain"
    align_cli(["dpo", "--variant", "mdpo", "--model", base, "--data", first4, "--output-dir", plain,
               "--deepspeed", "zero3", "--train", POLICY, *STEP_ARGS, "prefix_sharing=false", "padding_free=false",
               "shared_image_encoding=false"], nproc=2)
    unshared = [e["loss"] for e in json.loads((plain / "run.json").read_text())["log_history"] if "loss" in e]
    assert max(abs(e["loss"] - u) for e, u in zip(steps, unshared, strict=True)) < 1e-5, (steps, unshared)


def test_cached_reference_under_zero3_on_two_ranks(tiny_checkpoint, first4, tmp_path):
    """povid (two reference calls per batch: clean and noised image) with precompute_ref_log_probs under ZeRO-3:
    the first run computes the cache through a DeepSpeed inference engine over both ranks' shards, the second reads
    it; both train like the live reference."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(first4.parent, data, ignore=shutil.ignore_patterns(".ref_logps"))
    base = Path(tiny_checkpoint(FAMILY))
    losses = {}
    for name, extra in (("live", []), ("miss", ["precompute_ref_log_probs=true"]),
                        ("hit", ["precompute_ref_log_probs=true"])):
        out = tmp_path / name
        align_cli(["dpo", "--variant", "povid", "--model", base, "--data", data / first4.name, "--output-dir", out,
                   "--deepspeed", "zero3", "--train", POLICY, *STEP_ARGS, *extra], nproc=2)
        run = json.loads((out / "run.json").read_text())
        losses[name] = [e["loss"] for e in run["log_history"] if "loss" in e]
        if name != "live":
            assert run["reference_cache"]["hit"] is (name == "hit")
    assert len(list((data / ".ref_logps").glob("*.safetensors"))) == 1
    assert losses["miss"] == losses["hit"]
    for cached, live in zip(losses["miss"], losses["live"], strict=True):
        assert abs(cached - live) < 1e-5


def test_halva_lora_under_zero2_in_one_process(tiny_checkpoint, first4, shapes_world, tmp_path):
    """halva with a LoRA policy under ZeRO-2, one process: the KL term's reference is the adapter-disabled policy
    (no second model), both terms are logged and the adapter is saved."""
    base = Path(tiny_checkpoint(FAMILY))
    out = tmp_path / "out"
    align_cli(["dpo", "--variant", "halva", "--model", base, "--data", first4, "--output-dir", out,
               "--deepspeed", "zero2", "--train", "lora", f"kl_data={shapes_world / 'sft.jsonl'}", *STEP_ARGS])
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["reference"] == "adapter-disabled policy" and run["global_step"] == 2
    steps = [e for e in run["log_history"] if "loss" in e]
    assert all("loss/halva_align" in e and "loss/halva_kl" in e for e in steps)
    assert steps[-1]["loss/halva_kl"] > 0  # the adapter moved the policy off the reference
    assert (out / "adapter_model.safetensors").is_file()
