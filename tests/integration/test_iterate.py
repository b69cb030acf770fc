"""`align iterate` on a tiny LLaVA: rounds of sample -> pairs -> (SFT) -> DPO, resumed after a kill with the same
weights, refused under changed settings, stopped by a round without pairs, and each round's eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

HERE = Path(__file__).parent


def _recipe(path: Path, world: Path, model: Path, **sections) -> Path:
    recipe = {
        "model": str(model), "data": str(world / "sources.jsonl"), "rounds": 2, "prompts_per_round": 4,
        "pairs": {"method": "correct", "corrector": "feedback_parts:adds_a_circle", "samples": 2,
                  "temperature": 1.0, "max_new_tokens": 10},
        "dpo": {"variant": "ddpo", "max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                "save_strategy": "no", "report_to": "none", "bf16": False, "gradient_checkpointing": False},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) and key in recipe else value
    path.write_text(yaml.safe_dump(recipe))
    return path


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next(folder.glob("*.safetensors"))))


@pytest.fixture
def parts_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_two_rounds_resumed_after_a_kill_end_with_the_uninterrupted_weights(shapes_world, tiny_checkpoint, run_cli,
                                                                           tmp_path, parts_on_path):
    import torch

    from align.iterate.rounds import run_iterate
    from align.iterate.settings import IterateConfig
    from align.resolve import resolve_config

    model = tiny_checkpoint("llava")
    recipe = _recipe(tmp_path / "it.yaml", shapes_world, model)
    whole = run_cli("iterate", "--config", recipe, "--output-dir", tmp_path / "whole")
    assert whole.code == 0, whole
    record = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert record["complete"] and [r["round"] for r in record["rounds"]] == [1, 2]
    first, second = record["rounds"]
    assert second["started_from"] == first["policy"] == str(tmp_path / "whole" / "round_1" / "model")
    assert second["reference"] == first["policy"]  # reference: previous
    assert first["pairs"] == 8 and first["prompts"] == 4  # 4 prompts x 2 samples, each corrected
    for k in (1, 2):
        folder = tmp_path / "whole" / f"round_{k}"
        assert {p.name for p in folder.iterdir()} >= {"samples", "pairs", "model", "round.json"}
    samples_1 = [r["id"] for r in _records(tmp_path / "whole" / "round_1" / "samples")]
    samples_2 = [r["id"] for r in _records(tmp_path / "whole" / "round_2" / "samples")]
    assert not set(samples_1) & set(samples_2)  # fresh prompts each round while there are any (12 train rows)
    start = _weights(Path(model))
    end = _weights(tmp_path / "whole" / "round_2" / "model")
    assert any(not torch.equal(start[k], end[k]) for k in start)

    class Killed(Exception):
        pass

    def kill(record):
        if record["round"] == 1:
            raise Killed

    cfg = resolve_config(IterateConfig, recipe=recipe, overrides=[f"output_dir={tmp_path / 'cut'}"])
    with pytest.raises(Killed):
        run_iterate(cfg, show=False, on_round=kill)
    assert (tmp_path / "cut" / "round_1" / "round.json").is_file() and not (tmp_path / "cut" / "round_2").exists()
    trained_once = (tmp_path / "cut" / "round_1" / "model" / "run.json").stat().st_mtime_ns
    resumed = run_cli("iterate", "--config", recipe, "--output-dir", tmp_path / "cut")
    assert resumed.code == 0, resumed
    assert (tmp_path / "cut" / "round_1" / "model" / "run.json").stat().st_mtime_ns == trained_once  # not retrained
    again = _weights(tmp_path / "cut" / "round_2" / "model")
    assert end.keys() == again.keys() and all(torch.equal(end[k], again[k]) for k in end)


def _records(folder):
    from align.data.io import read_records

    return list(read_records(folder))


def test_a_changed_recipe_is_refused_with_what_differs_and_more_rounds_continue(shapes_world, tiny_checkpoint,
                                                                               run_cli, tmp_path, parts_on_path):
    recipe = _recipe(tmp_path / "it.yaml", shapes_world, tiny_checkpoint("llava"), rounds=1)
    out = tmp_path / "run"
    assert run_cli("iterate", "--config", recipe, "--output-dir", out).code == 0
    changed = run_cli("iterate", "--config", recipe, "--output-dir", out, "dpo.learning_rate=0.01", "seed=3")
    assert changed.code == 2 and "dpo.learning_rate: 0.001 -> 0.01" in changed.err and "seed: 0 -> 3" in changed.err
    more = run_cli("iterate", "--config", recipe, "--output-dir", out, "--rounds", "2")
    assert more.code == 0, more
    assert json.loads((out / "run.json").read_text())["complete"] and (out / "round_2" / "round.json").is_file()


def test_a_round_without_pairs_stops_naming_the_round(shapes_world, tiny_checkpoint, run_cli, tmp_path):
    """A random tiny model names no shape, so the exact corrector has nothing to correct."""
    recipe = _recipe(tmp_path / "it.yaml", shapes_world, tiny_checkpoint("llava"),
                     pairs={"corrector": "align.data.shapes_corrector:corrector", "temperature": 0.0})
    result = run_cli("iterate", "--config", recipe, "--output-dir", tmp_path / "run")
    assert result.code == 2 and "round 1 made no pairs" in result.err, result
    assert not (tmp_path / "run" / "round_1" / "model").exists()


def test_an_alignment_step_first_then_each_rounds_eval(shapes_world, tiny_checkpoint, run_cli, tmp_path,
                                                      parts_on_path):
    """OPA-DPO's shape: SFT on the revisions, DPO from that model with it as reference; then the eval section."""
    recipe = _recipe(tmp_path / "it.yaml", shapes_world, tiny_checkpoint("llava"), rounds=1,
                     sft_first={"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                "save_strategy": "no", "report_to": "none", "bf16": False,
                                "gradient_checkpointing": False},
                     eval=[{"benchmark": "shapes-chair", "questions": str(shapes_world / "chair_questions.jsonl"),
                            "max_new_tokens": 8, "options": {"sources": str(shapes_world / "sources.jsonl")}}])
    result = run_cli("iterate", "--config", recipe, "--output-dir", tmp_path / "run")
    assert result.code == 0, result
    folder = tmp_path / "run" / "round_1"
    record = json.loads((folder / "round.json").read_text())
    assert record["reference"] == str(folder / "sft")  # the aligned model is DPO's start and reference
    dpo = json.loads((folder / "model" / "run.json").read_text())
    assert dpo["config"]["model"] == str(folder / "sft") and dpo["config"]["ref_model"] is None
    sft_rows = _records(folder / "sft_data")
    pairs = _records(folder / "pairs")
    assert [r["messages"][-1] for r in sft_rows] == [p["chosen"][0] for p in pairs]
    assert {"chair_i", "recall"} <= set(record["metrics"]["shapes-chair"])
    assert (folder / "eval" / "shapes-chair" / "metrics.json").is_file()
    assert set(record["seconds"]) == {"sample", "pairs", "sft", "dpo", "eval"}


def test_pairs_kept_as_image_paths_train_too(shapes_world, tiny_checkpoint, run_cli, tmp_path, parts_on_path):
    """`pairs.images: keep` leaves the world's relative paths in the pairs: DPO and the SFT step resolve them."""
    recipe = _recipe(tmp_path / "it.yaml", shapes_world, tiny_checkpoint("llava"), rounds=1,
                     pairs={"images": "keep"},
                     sft_first={"max_steps": 1, "per_device_train_batch_size": 2, "save_strategy": "no",
                                "report_to": "none", "bf16": False, "gradient_checkpointing": False})
    result = run_cli("iterate", "--config", recipe, "--output-dir", tmp_path / "run")
    assert result.code == 0, result
    assert all(isinstance(p["images"][0], str) for p in _records(tmp_path / "run" / "round_1" / "pairs"))


@pytest.mark.parametrize(("override", "message"), [
    ("pairs.method=halva", "pairs.method must name an on-policy builder (rlaifv, hound, correct)"),
    ("pairs.model=x", "pairs: model are set by align iterate"),
    ("dpo.variant=nope", "variant"),
    ("reference=best", "reference must be one of previous, initial"),
])
def test_bad_settings_are_refused_before_any_work(override, message, shapes_world, tiny_checkpoint, run_cli,
                                                  tmp_path, parts_on_path):
    recipe = _recipe(tmp_path / "it.yaml", shapes_world, tiny_checkpoint("llava"))
    result = run_cli("iterate", "--config", recipe, "--output-dir", tmp_path / "run", override)
    assert result.code == 2 and message in result.err, result
    assert not (tmp_path / "run").exists()
