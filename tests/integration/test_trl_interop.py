"""Datasets align writes are TRL's format on disk: `datasets.load_dataset("parquet")` and `load_from_disk` give
conversational rows with decoded images, and TRL's own DPOTrainer trains on them unchanged."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def built_pairs(shapes_world, tmp_path_factory):
    from align.cli.main import main

    out = tmp_path_factory.mktemp("interop") / "pairs"
    try:
        main(["build-pairs", "halva", "--input", str(shapes_world / "sources.jsonl"), "--out", str(out), "--limit", "8"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return out


def _load_parquet(folder):
    import datasets

    return datasets.load_dataset("parquet", data_files=str(folder / "data-*.parquet"), split="train")


def test_parquet_shards_load_as_conversations_with_images(built_pairs):
    from PIL import Image
    from trl.data_utils import is_conversational

    from align.data.io import read_records

    loaded = _load_parquet(built_pairs)
    ours = read_records(built_pairs)
    assert len(loaded) == len(ours) == 8
    assert type(loaded.features["images"].feature).__name__ == "Image"
    for row, record in zip(loaded, ours, strict=True):
        assert is_conversational(row)
        assert isinstance(row["images"][0], Image.Image)
        assert row["chosen"] == record["chosen"] and row["rejected"] == record["rejected"]
        # Arrow structs fill absent keys with null: the image part of the prompt carries text None.
        assert row["prompt"][0]["content"][0] == {"type": "image", "text": None}
        assert [list(s) for s in row["chosen_spans"]] == record["chosen_spans"]
        assert all(isinstance(v, int) for span in row["rejected_spans"] for v in span)


def test_load_from_disk_folder_reads_back_in_align(built_pairs, tmp_path):
    import datasets
    from trl.data_utils import is_conversational

    from align.data.io import load_records, read_records

    _load_parquet(built_pairs).save_to_disk(str(tmp_path / "saved"))
    saved = datasets.load_from_disk(str(tmp_path / "saved"))
    assert is_conversational(saved[0])
    back = load_records(tmp_path / "saved", kind="preference")
    ours = read_records(built_pairs)
    assert [r["chosen"] for r in back] == [r["chosen"] for r in ours]
    assert [r["prompt"] for r in back] == [r["prompt"] for r in ours]  # the null text keys are dropped again


@pytest.mark.slow
def test_trl_dpo_trainer_trains_on_the_shards_unchanged(built_pairs, tiny_checkpoint, tmp_path):
    import torch
    from trl import DPOConfig, DPOTrainer

    from align.models.load import load_model_and_processor

    model_dir = tiny_checkpoint("llava")
    model, processor = load_model_and_processor(model_dir, dtype="float32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3,
                     save_strategy="no", report_to="none", disable_tqdm=True, bf16=False, gradient_checkpointing=False,
                     max_length=512, use_cpu=True, seed=0)
    trainer = DPOTrainer(model=model, args=args, train_dataset=_load_parquet(built_pairs), processing_class=processor)
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
