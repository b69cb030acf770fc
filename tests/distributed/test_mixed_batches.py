"""Under ZeRO-3, one rank's micro-batch has an image and the other's has none: the run completes, it does not hang.

With parameters partitioned, every module's forward gathers its weights from all ranks. Before align encoded a blank
image on the image-less rank (align/models/zero3_images.py), that rank skipped the vision tower's gathers while the
other ran them: gloo failed with a size mismatch and NCCL hangs until its timeout. Each run here holds 2 rows, one
with an image and one without, 1 row per rank, so every step mixes them; the launcher's timeout bounds a hang.
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

TIMEOUT = 420  # s; a run takes well under a minute on 2 cores, a hang runs into this
STEP_ARGS = ["--deepspeed", "zero3", "--train", "projector+llm", "per_device_train_batch_size=1", "max_steps=2",
             "learning_rate=1e-2", "max_length=512", "save_strategy=no", "logging_steps=1"]


def _mixed_sft_rows(world: Path, out: Path) -> Path:
    """2 SFT rows (images relative to the world, passed as --image-root): its first, with an image, and a text-only
    one."""
    from align.data.io import read_records, write_jsonl

    with_image = dict(next(iter(read_records(world / "sft.jsonl"))))
    text_only = {"id": "text_only", "images": [], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Name a shape with three sides."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A triangle has three sides."}]}]}
    write_jsonl(out, [with_image, text_only])
    return out


def _check_complete(out: Path) -> None:
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["global_step"] == 2
    assert len([e for e in run["log_history"] if "loss" in e]) == 2
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_sft_with_and_without_images_across_ranks_completes_under_zero3(tiny_checkpoint, shapes_world, family,
                                                                        tmp_path):
    data = _mixed_sft_rows(shapes_world, tmp_path / "mixed.jsonl")
    out = tmp_path / "out"
    align_cli(["sft", "--model", tiny_checkpoint(family), "--data", data, "--output-dir", out, "--image-root",
               shapes_world, *STEP_ARGS], nproc=2, timeout=TIMEOUT)
    _check_complete(out)


@pytest.mark.parametrize("layouts", ["shared_image_encoding=true", "shared_image_encoding=false"])
def test_dpo_with_and_without_images_across_ranks_completes_under_zero3(tiny_checkpoint, pairs, layouts, tmp_path):
    out = tmp_path / "out"
    align_cli(["dpo", "--variant", "dpo", "--model", tiny_checkpoint("llava"), "--data", pairs / "noimages.jsonl",
               "--output-dir", out, *STEP_ARGS, layouts], nproc=2, timeout=TIMEOUT)
    _check_complete(out)
