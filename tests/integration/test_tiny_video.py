"""Video prompts on the video-capable tiny families, and LLaVA-NeXT's any-resolution tiles.

Token counts are worked out by hand from the tiny configs (32 px frames, CLIP patch 8, Qwen patch 14) so a change
in how a processor expands placeholders, or a config/processor mismatch, fails here rather than deep in training.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

# 4 frames of 32x32:
#   llava_next_video: 4x4 CLIP patches per frame, average-pooled with stride 2 -> 2x2 = 4 tokens x 4 frames = 16.
#   qwen2_vl / qwen2_5_vl: each frame upscaled to the 56x56 minimum -> 4x4 patches of 14 px; frames pair up
#   (temporal patch 2) -> grid (t, h, w) = (2, 4, 4) = 32 patches; 2x2 merge -> 8 tokens.
VIDEO_TOKENS = {"llava_next_video": 16, "qwen2_vl": 8, "qwen2_5_vl": 8}
QWEN_GRID = [2, 4, 4]
FRAMES = 4


def _frames(colors):
    from PIL import Image

    return [Image.new("RGB", (32, 32), c) for c in colors]


def _video_prompt(text="What changes in the video?"):
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]


def _load(tiny_checkpoint, family):
    from align.models.load import load_model_and_processor

    return load_model_and_processor(tiny_checkpoint(family), dtype="float32")


def _video_token_id(model):
    return model.config.video_token_id


def test_every_video_family_has_expected_counts():
    from align.models.families import FAMILIES
    from align.models.tiny import TINY_BUILDERS

    video_families = {name for name, spec in FAMILIES.items() if spec.supports_video and name in TINY_BUILDERS}
    assert video_families == set(VIDEO_TOKENS), "add the hand-worked token count of every new video family"


@pytest.mark.parametrize("family", sorted(VIDEO_TOKENS))
def test_video_forward_backward(family, tiny_checkpoint):
    from align.models.families import get_family, part_of
    from align.models.inputs import encode

    model, processor = _load(tiny_checkpoint, family)
    spec = get_family(family)
    videos = [_frames(["red", "green", "blue", "white"]), _frames(["black", "gray", "yellow", "purple"])]
    # One video per example; the second is given as a bare frame list, which encode treats as one video.
    batch = encode(processor, family, [_video_prompt()] * 2, [[], []], add_generation_prompt=False,
                   videos=[[videos[0]], videos[1]])
    ids = batch["input_ids"]  # [2, T]
    per_row = (ids == _video_token_id(model)).sum(dim=1)
    assert per_row.tolist() == [VIDEO_TOKENS[family]] * 2
    if family.startswith("qwen"):
        assert batch["video_grid_thw"].tolist() == [QWEN_GRID] * 2
        # [videos x patches, C x temporal x 14 x 14]
        assert tuple(batch["pixel_values_videos"].shape) == (2 * 32, 3 * 2 * 14 * 14)
        assert set(batch["mm_token_type_ids"][ids == _video_token_id(model)].tolist()) == {2}
    else:
        assert tuple(batch["pixel_values_videos"].shape) == (2, FRAMES, 3, 32, 32)  # [videos, frames, C, H, W]

    model.train()
    labels = ids.masked_fill(batch["attention_mask"] == 0, -100)
    labels[ids == _video_token_id(model)] = -100  # placeholders are not targets
    out = model(**batch, labels=labels)
    assert out.logits.shape[:2] == ids.shape
    assert torch.isfinite(out.loss)
    # Same text, different videos: the rows must differ after the video, so the frames reach the decoder.
    assert not torch.allclose(out.logits[0, -1], out.logits[1, -1])
    out.loss.backward()
    touched = {part_of(n, spec) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"vision", "connector", "language_model", "lm_head"} <= touched, touched


@pytest.mark.parametrize("family", sorted(VIDEO_TOKENS))
def test_generate_from_video_prompt(family, tiny_checkpoint):
    from align.models.inputs import encode

    model, processor = _load(tiny_checkpoint, family)
    prompts = [_video_prompt("Describe the video."), _video_prompt("Is there a red star moving to the left?")]
    batch = encode(processor, family, prompts, [[], []],
                   videos=[[_frames(["red", "blue"] * 2)], [_frames(["green", "white", "black", "gray"])]])
    ids = batch["input_ids"]
    # Left padding: both prompts end at the last column, the shorter one starts with pad.
    assert batch["attention_mask"][:, -1].tolist() == [1, 1]
    assert batch["attention_mask"][0, 0] == 0
    assert (ids == _video_token_id(model)).sum(dim=1).tolist() == [VIDEO_TOKENS[family]] * 2
    model.eval()
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == 2
    assert generated.shape[1] > ids.shape[1]
    assert torch.equal(generated[:, : ids.shape[1]], ids)


@pytest.mark.parametrize("family", sorted(VIDEO_TOKENS))
def test_image_and_video_in_one_batch(family, tiny_checkpoint):
    from PIL import Image

    from align.models.inputs import encode

    model, processor = _load(tiny_checkpoint, family)
    image_prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape?"}]}]
    batch = encode(processor, family, [image_prompt, _video_prompt()], [[Image.new("RGB", (32, 32), "red")], []],
                   videos=[[], [_frames(["red", "green", "blue", "white"])]])
    ids = batch["input_ids"]
    image_id, video_id = model.config.image_token_id, _video_token_id(model)
    # 32x32 image: llava_next_video -> overview 16 + tiles of its 32x64 canvas unpadded to 4x4 + 4 newlines = 36;
    # Qwen -> 56x56 -> 4x4 patches -> 4 merged tokens.
    expected_image = 4 if family.startswith("qwen") else 36
    assert (ids == image_id).sum(dim=1).tolist() == [expected_image, 0]
    assert (ids == video_id).sum(dim=1).tolist() == [0, VIDEO_TOKENS[family]]
    model.train()
    out = model(**batch, labels=ids.masked_fill(batch["attention_mask"] == 0, -100))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.lm_head.weight.grad is not None


def test_llava_next_two_aspect_ratios(tiny_checkpoint):
    """A wide 40x30 and a tall 30x50 image (W x H) in one batch pick different any-resolution canvases.

    wide (H30, W40): canvas 32x64 (1x2 tiles) -> 4x8 patch grid, width unpadded to 40 * 4/30 = 5.3 -> 6 columns:
        16 overview + 4*6 tile + 4 newline = 44 tokens.
    tall (H50, W30): canvas 64x32 (2x1 tiles) -> 8x4 grid, height unpadded to 50 * 4/30 = 6.7 -> 6 rows:
        16 overview + 6*4 tile + 6 newline = 46 tokens.
    Each image is 1 overview + 2 tiles = 3 crops of 32x32.
    """
    from PIL import Image

    from align.models.families import get_family, part_of
    from align.models.inputs import encode

    family = "llava_next"
    model, processor = _load(tiny_checkpoint, family)
    assert model.config.image_grid_pinpoints == processor.image_processor.image_grid_pinpoints
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    images = [[Image.new("RGB", (40, 30), "red")], [Image.new("RGB", (30, 50), "blue")]]
    batch = encode(processor, family, [prompt, prompt], images, add_generation_prompt=False)
    assert batch["image_sizes"].tolist() == [[30, 40], [50, 30]]  # (H, W)
    assert tuple(batch["pixel_values"].shape) == (2, 3, 3, 32, 32)  # [images, crops, C, H, W]
    per_row = (batch["input_ids"] == model.config.image_token_id).sum(dim=1)
    assert per_row.tolist() == [44, 46]

    # The model packs exactly as many features per image as the processor wrote placeholders.
    with torch.no_grad():
        features = model.model.get_image_features(batch["pixel_values"], batch["image_sizes"]).pooler_output
    assert [f.shape[0] for f in features] == [44, 46]

    model.train()
    ids = batch["input_ids"]
    labels = ids.masked_fill((batch["attention_mask"] == 0) | (ids == model.config.image_token_id), -100)
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    # image_newline only enters through the tile grid, so a gradient there proves the any-resolution path ran.
    assert model.model.image_newline.grad is not None and model.model.image_newline.grad.abs().sum() > 0
    spec = get_family(family)
    touched = {part_of(n, spec) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "connector" in touched and "vision" in touched

    model.eval()
    batch = encode(processor, family, [prompt, prompt], images)
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 3)
