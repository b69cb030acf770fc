"""Cached reference log-probs (`precompute_ref_log_probs=true`): a miss computes and writes the file beside the
data, a hit reuses it without loading a reference model, the cached run trains exactly like a live reference, and
a change to the data or the reference model is a miss."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

ARGS = ["per_device_train_batch_size=2", "learning_rate=1e-2", "max_length=512", "save_strategy=no",
        "logging_steps=1", "max_steps=2", "lr_scheduler_type=constant"]


@pytest.fixture
def data(pairs, tmp_path):
    """fixed.jsonl in a folder of its own, so each test starts with no cache."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(pairs / "fixed.jsonl", folder / "pairs.jsonl")
    for line in (pairs / "fixed.jsonl").read_text().splitlines():
        for image in json.loads(line)["images"]:
            (folder / image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(pairs / image, folder / image)
    return folder / "pairs.jsonl"


@pytest.fixture
def loads(monkeypatch):
    """Counts the checkpoints `align dpo` loads."""
    import align.models.load as load

    calls = []
    original = load.load_model_and_processor

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(load, "load_model_and_processor", counting)
    return calls


def _run(run_cli, variant, model, data, out, *extra):
    result = run_cli("dpo", "--variant", variant, "--model", model, "--data", data, "--output-dir", out, *ARGS,
                     *extra)
    assert result.code == 0, result
    run = json.loads((out / "run.json").read_text())
    return run, [e["loss"] for e in run["log_history"] if "loss" in e]


@pytest.mark.parametrize("variant", ["dpo", "povid"])
def test_cache_miss_then_hit_trains_like_the_live_reference(variant, tiny_checkpoint, data, loads, run_cli,
                                                           tmp_path):
    model = tiny_checkpoint("llava")
    live, live_losses = _run(run_cli, variant, model, data, tmp_path / "live")
    assert live["reference_cache"] is None and len(loads) == 2  # policy + separate reference

    loads.clear()
    first, first_losses = _run(run_cli, variant, model, data, tmp_path / "first", "precompute_ref_log_probs=true")
    assert first["reference_cache"]["hit"] is False and len(loads) == 1  # no reference model loaded
    files = list((data.parent / ".ref_logps").glob("*.safetensors"))
    assert [str(f) for f in files] == [first["reference_cache"]["file"]]

    second, second_losses = _run(run_cli, variant, model, data, tmp_path / "second", "precompute_ref_log_probs=true")
    assert second["reference_cache"] == {**first["reference_cache"], "hit": True}
    assert len(first_losses) == len(live_losses) == 2
    assert first_losses == second_losses
    for cached, reference in zip(first_losses, live_losses, strict=True):
        assert abs(cached - reference) < 1e-5
    if variant == "povid":
        from safetensors.torch import load_file

        assert set(load_file(str(files[0]))) == {"ref_chosen_logps", "ref_rejected_logps", "ref_noisy_rejected_logps"}


def test_changed_data_or_reference_is_a_miss(tiny_checkpoint, data, run_cli, tmp_path):
    model = tiny_checkpoint("llava")
    base, _ = _run(run_cli, "dpo", model, data, tmp_path / "a", "precompute_ref_log_probs=true")
    other_model, _ = _run(run_cli, "dpo", tiny_checkpoint("llava", seed=1), data, tmp_path / "b",
                          "precompute_ref_log_probs=true")
    assert other_model["reference_cache"]["hit"] is False
    assert other_model["reference_cache"]["file"] != base["reference_cache"]["file"]
    # one rejected word changed: another key
    edited = data.parent / "edited"
    shutil.copytree(data.parent, edited, ignore=shutil.ignore_patterns(".ref_logps"))
    text = (edited / data.name).read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    rows[1]["rejected"][0]["content"][0]["text"] += " Also a star."
    (edited / data.name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    changed, _ = _run(run_cli, "dpo", model, edited / data.name, tmp_path / "c", "precompute_ref_log_probs=true",
                      f"ref_cache_dir={data.parent / '.ref_logps'}")
    assert changed["reference_cache"]["hit"] is False
    assert changed["reference_cache"]["file"] != base["reference_cache"]["file"]
    # another variant setting that changes the values (ddpo's gamma): another key
    ddpo, _ = _run(run_cli, "ddpo", model, data, tmp_path / "d", "precompute_ref_log_probs=true")
    gamma, _ = _run(run_cli, "ddpo", model, data, tmp_path / "e", "precompute_ref_log_probs=true", "ddpo_gamma=3")
    assert ddpo["reference_cache"]["file"] != gamma["reference_cache"]["file"]
    assert gamma["reference_cache"]["hit"] is False
    assert len(list((data.parent / ".ref_logps").glob("*.safetensors"))) == 5
