"""`align sft` beyond one stage: recipes with stages, resume, LoRA + merge, LLaVA JSON, videos, grounding, and
bad rows that stop the run before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
SMALL = ["per_device_train_batch_size=2", "learning_rate=1e-2", "max_length=512", "logging_steps=1"]


def _params(path):
    from align.models.load import load_model_and_processor

    return dict(load_model_and_processor(path, dtype="float32")[0].named_parameters())


def _changed(a, b):
    return {k for k in a if not torch.equal(a[k], b[k])}


def _losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "run.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def test_two_stage_recipe_chains_stages(tiny_checkpoint, shapes_world, run_cli, tmp_path):
    base = tiny_checkpoint("llava")
    out = tmp_path / "two-stage"
    result = run_cli("sft", "--config", REPO / "recipes/sft/tiny_shapes.yaml", "--model", base,
                     "--data", shapes_world / "sft.jsonl", "--output-dir", out,
                     "stages.0.max_steps=2", "stages.1.max_steps=2", "max_length=512", "logging_steps=1")
    assert result.code == 0, result
    first = out / "stages" / "1-projector"
    stage1, stage2 = json.loads((first / "run.json").read_text()), json.loads((out / "run.json").read_text())
    assert (stage1["policy"], stage2["policy"]) == ("projector", "projector+llm")
    assert stage2["base_model"] == str(first)  # stage 2 starts from stage 1's output
    assert stage1["config"]["learning_rate"] == 1e-3 and stage2["config"]["learning_rate"] == 5e-4

    p0, p1, p2 = _params(base), _params(first), _params(out)
    stage1_changed, stage2_changed = _changed(p0, p1), _changed(p1, p2)
    assert stage1_changed and all(k.startswith("model.multi_modal_projector") for k in stage1_changed)
    assert any(k.startswith("model.language_model") for k in stage2_changed)
    assert not any(k.startswith("model.vision_tower") for k in stage1_changed | stage2_changed)


def test_resume_reproduces_the_uninterrupted_run(tiny_checkpoint, shapes_world, run_cli, tmp_path):
    base = tiny_checkpoint("llava")
    args = [*SMALL, "max_steps=6", "save_strategy=steps", "save_steps=3"]
    full = tmp_path / "full"
    assert run_cli("sft", "--model", base, "--data", shapes_world / "sft.jsonl", "--output-dir", full,
                   *args).code == 0

    # An interrupted run leaves its checkpoint at step 3 and nothing else.
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copytree(full / "checkpoint-3", interrupted / "checkpoint-3")
    result = run_cli("sft", "--model", base, "--data", shapes_world / "sft.jsonl", "--output-dir", interrupted,
                     "--resume", *args)
    assert result.code == 0, result
    run = json.loads((interrupted / "run.json").read_text())
    assert run["resumed_from"].endswith("checkpoint-3")
    assert _losses(interrupted)[6] == pytest.approx(_losses(full)[6], abs=1e-6)
    assert _losses(interrupted)[4] == pytest.approx(_losses(full)[4], abs=1e-6)


def test_lora_adapter_then_merge(tiny_checkpoint, shapes_world, run_cli, tmp_path):
    base = tiny_checkpoint("llava")
    out = tmp_path / "lora"
    result = run_cli("sft", "--model", base, "--data", shapes_world / "sft.jsonl", "--output-dir", out,
                     "--train", "lora+projector", *SMALL, "max_steps=3", "save_strategy=no", "lora_r=4",
                     "lora_alpha=8")
    assert result.code == 0, result
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()

    merged = tmp_path / "merged"
    assert run_cli("models", "merge", out, "--out", merged).code == 0
    p0, pm = _params(base), _params(merged)
    changed = _changed(p0, pm)
    assert any(k.startswith("model.language_model") for k in changed)  # LoRA deltas folded in
    assert any(k.startswith("model.multi_modal_projector") for k in changed)  # projector trained fully
    assert not any(k.startswith("model.vision_tower") or k == "lm_head.weight" for k in changed)


def _llava_json(world: Path, path: Path, n: int = 6) -> Path:
    rows = [json.loads(line) for line in (world / "sft.jsonl").read_text().splitlines()][:n]
    converted = []
    for row in rows:
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"][0]["text"]
        question = next(item["text"] for item in user if item["type"] == "text")
        converted.append({"id": row["id"], "image": str(world / row["images"][0]),
                          "conversations": [{"from": "human", "value": "<image>\n" + question},
                                            {"from": "gpt", "value": answer}]})
    path.write_text(json.dumps(converted))
    return path


def test_llava_conversation_json_trains(tiny_checkpoint, shapes_world, run_cli, tmp_path):
    data = _llava_json(shapes_world, tmp_path / "llava.json")
    result = run_cli("sft", "--model", tiny_checkpoint("llava"), "--data", data, "--image-root", shapes_world,
                     "--output-dir", tmp_path / "out", *SMALL, "max_steps=2", "save_strategy=no")
    assert result.code == 0, result
    assert json.loads((tmp_path / "out" / "run.json").read_text())["rows"] == 6


@pytest.mark.parametrize("family", ["llava_next_video", "qwen2_vl"])
def test_video_frame_records_train(family, tiny_checkpoint, shapes_world, run_cli, tmp_path):
    frames = [f"images/shapes_{i:06d}.png" for i in range(4)]
    rows = [{"id": f"v{k}", "images": [frames],
             "messages": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]}]}
            for k in range(4)]
    data = shapes_world / f"video_{family}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("sft", "--model", tiny_checkpoint(family), "--data", data, "--output-dir", tmp_path / "out",
                     *SMALL, "max_steps=2", "save_strategy=no")
    assert result.code == 0, result


def test_grounding_markup_is_rendered_in_the_family_convention(tiny_checkpoint, shapes_world, tmp_path):
    from align.data.grounding import grounding_records
    from align.models.load import load_processor
    from align.train.sft.data import load_sft_data

    sources = [json.loads(line) for line in (shapes_world / "sources.jsonl").read_text().splitlines()][:4]
    data = shapes_world / "grounding.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in grounding_records(sources, n_per_image=3, seed=1)))
    processor = load_processor(tiny_checkpoint("qwen2_vl"))
    loaded = load_sft_data(data, processor, "qwen2_vl", progress=False)  # grounding_format auto -> qwen
    texts = [item["text"] for r in loaded.records for m in r["messages"] for item in m["content"]
             if item["type"] == "text"]
    assert any("<box>(" in t for t in texts) and not any("<bbox>" in t for t in texts)
    shikra = load_sft_data(data, processor, "qwen2_vl", grounding_format="shikra", progress=False)
    texts = [item["text"] for r in shikra.records for m in r["messages"] for item in m["content"]
             if item["type"] == "text"]
    assert any("[0." in t for t in texts) and not any("<box>" in t for t in texts)


def _bad_rows(tmp_path, make_image, rows):
    make_image(tmp_path / "img.png", size=(64, 64))
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(images, user, answer="A red circle."):
    messages = [{"role": "user", "content": user}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return {"id": f"r{len(images)}{answer}", "images": images, "messages": messages}


_IMAGE_Q = [{"type": "image"}, {"type": "text", "text": "Describe."}]
_GOOD = _row(["img.png"], _IMAGE_Q)


@pytest.mark.parametrize("bad, expected", [
    (_row(["missing.png"], _IMAGE_Q), "field 'images'"),
    (_row(["img.png"], [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Two?"}]), "placeholder"),
    (_row(["img.png"], _IMAGE_Q, answer="   "), "empty"),
    (_row(["img.png"], _IMAGE_Q, answer=None), "assistant"),
])
def test_bad_rows_stop_before_training(bad, expected, tiny_checkpoint, run_cli, make_image, tmp_path):
    data = _bad_rows(tmp_path, make_image, [_GOOD, dict(bad, id="bad")])
    out = tmp_path / "out"
    result = run_cli("sft", "--model", tiny_checkpoint("llava"), "--data", data, "--output-dir", out, *SMALL,
                     "max_steps=1")
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}, row 2") and expected in lines[0], lines
    assert not out.exists()


def test_image_tokens_cut_by_max_length_is_an_error(tiny_checkpoint, run_cli, make_image, tmp_path):
    data = _bad_rows(tmp_path, make_image, [_GOOD])
    out = tmp_path / "out"
    result = run_cli("sft", "--model", tiny_checkpoint("llava"), "--data", data, "--output-dir", out,
                     "max_length=8", "max_steps=1")
    assert result.code == 2
    assert "exceed max_length 8" in result.err and "image tokens" in result.err and "row 1" in result.err
    assert not out.exists()


def test_llama_adapter_policy_trains_through_the_fused_head(tiny_checkpoint, shapes_world, run_cli, tmp_path):
    """PEFT's adaption-prompt wrapper keeps its own copy of `forward`; the trainer must route it to the LM head."""
    out = tmp_path / "adapter"
    result = run_cli("sft", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl",
                     "--output-dir", out, "--train", "adapter+projector", *SMALL, "max_steps=2", "save_strategy=no")
    assert result.code == 0, result
    assert (out / "adapter_config.json").is_file() and (out / "align_trainables.safetensors").is_file()
    losses = _losses(out)
    assert set(losses) == {1, 2} and all(loss > 0 for loss in losses.values())


def test_rows_that_repeat_a_conversation_share_one_encoding_but_never_across_image_sizes(
        tiny_checkpoint, make_image, tmp_path, monkeypatch):
    from align.data.collate import ConversationEncoder
    from align.models.load import load_processor
    from align.train.sft.data import example_of, load_sft_data

    make_image(tmp_path / "small.png", size=(64, 64))
    make_image(tmp_path / "wide.png", size=(128, 64))
    rows = [_row(["small.png"], [{"type": "image"}, {"type": "text", "text": "Is there a circle?"}], "Yes"),
            _row(["wide.png"], [{"type": "image"}, {"type": "text", "text": "Is there a circle?"}], "Yes"),
            _row(["small.png"], [{"type": "image"}, {"type": "text", "text": "Is there a circle?"}], "Yes"),
            _row(["small.png"], [{"type": "image"}, {"type": "text", "text": "Is there a star?"}], "No")]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({**r, "id": f"q{i}"}) + "\n" for i, r in enumerate(rows)))
    processor = load_processor(tiny_checkpoint("qwen2_vl"))  # image tokens grow with the image's size
    calls = []
    original = ConversationEncoder._encode_spans
    monkeypatch.setattr(ConversationEncoder, "_encode_spans",
                        lambda self, example: calls.append(1) or original(self, example))
    data = load_sft_data(path, processor, "qwen2_vl", progress=False)
    assert len(calls) == 3  # row 2 repeats row 0 (same text, same size); the wide image is encoded on its own
    encoder = ConversationEncoder(processor, "qwen2_vl")
    fresh = [original(encoder, example_of(r, data.base_dir, None, path, i)[0]) for i, r in enumerate(data.records)]
    assert data.spans == fresh
    assert data.spans[1].length > data.spans[0].length and data.spans[0] == data.spans[2]


def test_training_shows_step_progress_and_logs(tiny_checkpoint, shapes_world, run_cli, tmp_path):
    """The CLI run draws align's step progress (plain lines off a terminal) in place of transformers' tqdm bar,
    and prints the logged values above it. (transformers turns its bar off when its logger is quieter than
    warnings, as in this suite, hence disable_tqdm=false here.)"""
    result = run_cli("sft", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl",
                     "--output-dir", tmp_path / "out", *SMALL, "max_steps=3", "disable_tqdm=false")
    assert result.code == 0, result
    assert "sft: 3/3 steps (100%)" in result.err
    assert "sft step 1: loss " in result.err
    assert "it/s]" not in result.err and "s/it]" not in result.err  # no tqdm bar
