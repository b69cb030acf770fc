"""`align models tiny/info/families` through the real entry point; loading errors are one line."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


def test_models_tiny_then_info_reports_the_saved_parameter_count(run_cli, tmp_path):
    out = tmp_path / "tiny-llava"
    result = run_cli("models", "tiny", "--family", "llava", "--out", out, "--seed", "3")
    assert result.code == 0, result
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "chat_template.jinja").is_file()
    assert not list(tmp_path.glob(".tiny-llava.tmp-*")), "temporary folder left behind"
    saved = json.loads((out / "align_tiny.json").read_text())
    assert saved["family"] == "llava" and saved["seed"] == 3

    info = run_cli("models", "info", out)
    assert info.code == 0, info
    assert f"{saved['parameters']:,}" in info.out
    for part in ("vision", "connector", "language_model", "lm_head"):
        assert part in info.out


def test_same_seed_same_weights_different_seed_different_weights(tmp_path):
    from safetensors.torch import load_file

    from align.models.tiny import build_tiny

    a = load_file(build_tiny("llava", tmp_path / "a", seed=1) / "model.safetensors")
    b = load_file(build_tiny("llava", tmp_path / "b", seed=1) / "model.safetensors")
    c = load_file(build_tiny("llava", tmp_path / "c", seed=2) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a)


def test_families_lists_every_family(run_cli):
    from align.models.families import FAMILIES

    result = run_cli("models", "families")
    assert result.code == 0
    for name in FAMILIES:
        assert name in result.out


def test_loading_a_missing_checkpoint_is_a_one_line_error(run_cli, tmp_path):
    result = run_cli("models", "info", tmp_path / "nowhere")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load a model config from")


def test_unsupported_model_type_names_the_supported_families(tmp_path):
    from align.errors import ModelError
    from align.models.load import load_model_and_processor

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="model type 'bert' is not a supported family; supported: .*llava"):
        load_model_and_processor(tmp_path)


def test_llava_sizes_are_wider_models_that_load(run_cli, tmp_path):
    from align.models.load import load_model_and_processor

    counts = {}
    position_std = {}
    for size in ("tiny", "small", "grid"):
        out = tmp_path / size
        assert run_cli("models", "tiny", "--family", "llava", "--size", size, "--out", out).code == 0
        counts[size] = json.loads((out / "align_tiny.json").read_text())["parameters"]
        model = load_model_and_processor(out, dtype="float32")[0]
        assert sum(p.numel() for p in model.parameters()) == counts[size]
        position_std[size] = model.model.vision_tower.embeddings.position_embedding.weight.std().item()
    assert counts["tiny"] == 236_736 and counts["small"] == 929_920 and counts["grid"] == 1_076_928
    # CLIP's 0.02 where not set; the grid size starts its 10 positions (CLS + 3x3 patches) at std 1
    assert position_std["small"] < 0.03 and 0.5 < position_std["grid"] < 1.5
    bad = run_cli("models", "tiny", "--family", "qwen2_vl", "--size", "small", "--out", tmp_path / "q")
    assert bad.code == 2 and "--size, --image-size and --patch-size are available for llava only" in bad.err
    assert not (tmp_path / "q").exists()
    unknown = run_cli("models", "tiny", "--family", "llava", "--size", "huge", "--out", tmp_path / "h")
    assert unknown.code == 2 and "base" in unknown.err


def test_llava_image_grid_options(run_cli, tmp_path, make_image):
    """--image-size / --patch-size set the vision grid: 42 px in 14 px patches is 9 image tokens per image."""
    from align.models.load import load_model_and_processor

    out = tmp_path / "grid"
    assert run_cli("models", "tiny", "--family", "llava", "--image-size", "42", "--patch-size", "14",
                   "--out", out).code == 0
    model, processor = load_model_and_processor(out, dtype="float32")[:2]
    assert model.config.vision_config.image_size == 42 and model.config.vision_config.patch_size == 14
    from PIL import Image

    image = Image.open(make_image(tmp_path / "red.png", size=(50, 50)))
    ids = processor(text="<image> hi", images=[image], return_tensors="pt")["input_ids"][0].tolist()
    assert ids.count(model.config.image_token_index) == 9
    bad = run_cli("models", "tiny", "--family", "llava", "--image-size", "40", "--patch-size", "14",
                  "--out", tmp_path / "bad")
    assert bad.code == 2 and "--image-size 40 is not a whole number of --patch-size 14 px patches" in bad.err
    assert not (tmp_path / "bad").exists()
