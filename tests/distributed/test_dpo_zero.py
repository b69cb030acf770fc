"""`align dpo --variant mdpo` under DeepSpeed ZeRO-3 on a CPU (gloo), 2 ranks under torchrun.

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

pytestmark = pytest.mark.distributed

FAMILY, POLICY = "llava", "projector+llm"
STEP_ARGS = ["per_device_train_batch_size=1", "max_steps=2", "learning_rate=1e-2", "max_length=512",
             "save_strategy=no", "logging_steps=1"]


@pytest.fixture(scope="module")
def pairs(shapes_world, tmp_path_factory):
    """Halva pairs (with spans) built from the shapes sources, the first 4 rows as pairs.jsonl."""
    from align.cli.main import main
    from align.data.io import read_records, write_jsonl

    out = tmp_path_factory.mktemp("dpo-pairs") / "pairs"
    try:
        main(["build-pairs", "halva", "--input", str(shapes_world / "sources.jsonl"), "--out", str(out),
              "vocabulary=shapes"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    rows = [dict(r) for r in read_records(out)]
    assert len(rows) >= 4
    write_jsonl(out / "pairs.jsonl", rows[:4])
    return out / "pairs.jsonl"


def _params(path) -> dict:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    return {name: p.detach() for name, p in model.named_parameters()}


def _trainable(base) -> set[str]:
    from align.models.freeze import apply_train_policy
    from align.models.load import load_model_and_processor

    model = apply_train_policy(load_model_and_processor(base, dtype="float32")[0], FAMILY, POLICY)
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_mdpo_under_zero3_on_two_ranks_trains_only_the_policy(tiny_checkpoint, pairs, tmp_path):
    from safetensors import safe_open

    base = Path(tiny_checkpoint(FAMILY))
    out = tmp_path / "out"
    align_cli(["dpo", "--variant", "mdpo", "--model", base, "--data", pairs, "--output-dir", out,
               "--deepspeed", "zero3", "--train", POLICY, *STEP_ARGS], nproc=2)

    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["variant"] == "mdpo" and run["policy"] == POLICY and run["global_step"] == 2
    assert run["reference"] == str(base)
    steps = [e for e in run["log_history"] if "loss" in e]
    assert len(steps) == 2 and all("loss/mdpo_conditional" in e for e in steps)
    assert not list(out.glob(".final-tmp-*")), "the temporary save folder was left behind"

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
