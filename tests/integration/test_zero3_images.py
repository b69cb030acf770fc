"""The blank image that keeps ranks without images in step under ZeRO-3 (align/models/zero3_images.py), checked in
one process: a forward without images runs the vision tower and projector, and changes neither the outputs nor any
gradient; a forward with images encodes them once; generation's one-token steps encode nothing. Families without
the blank image refuse data that mixes rows with and without images, naming the first such row."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from align.models.families import FAMILIES

torch = pytest.importorskip("torch")

COVERED = sorted(name for name, family in FAMILIES.items() if family.blank_image_features)


def _text_only_inputs(processor):
    messages = [{"role": "user", "content": [{"type": "text", "text": "Name a shape with three sides."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=[text], return_tensors="pt")


def _image_inputs(processor, make_image, tmp_path):
    from PIL import Image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.open(make_image(tmp_path / "red.png", size=(64, 64)))
    return processor(text=[text], images=[image], return_tensors="pt")


def _tower_calls(model, family):
    from align.models.layout_forward import vision_encoder

    calls = []
    encoder = vision_encoder(model, family)
    if isinstance(encoder, torch.nn.ModuleList):  # Qwen2-VL's blocks: the first runs once per encoding
        encoder = encoder[0]
    encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("family", COVERED)
def test_a_forward_without_images_encodes_a_blank_one_and_changes_nothing(family, tiny_checkpoint, make_image,
                                                                          tmp_path):
    from align.models.load import load_model_and_processor
    from align.models.zero3_images import encode_images_on_every_rank

    plain, processor = load_model_and_processor(tiny_checkpoint(family), dtype="float32")
    hooked, _ = load_model_and_processor(tiny_checkpoint(family), dtype="float32")
    assert encode_images_on_every_rank(hooked, processor, family)
    calls = _tower_calls(hooked, family)
    text = _text_only_inputs(processor)

    outputs = {}
    for name, model in (("plain", plain), ("hooked", hooked)):
        model.train()
        logits = model(**text, use_cache=False).logits  # [1, T, V]
        logits.float().pow(2).mean().backward()
        outputs[name] = (logits.detach(), {n: p.grad for n, p in model.named_parameters()})
    assert len(calls) == 1  # the blank image went through the tower, once
    torch.testing.assert_close(outputs["hooked"][0], outputs["plain"][0], atol=0, rtol=0)
    plain_grads, hooked_grads = outputs["plain"][1], outputs["hooked"][1]
    for name, grad in hooked_grads.items():
        if plain_grads[name] is None:  # the vision tower and projector: reached by 0 x features only
            assert grad is None or not grad.any(), name
        else:
            torch.testing.assert_close(grad, plain_grads[name], atol=0, rtol=0, msg=name)
    assert any(g is not None for n, g in hooked_grads.items() if plain_grads[n] is None)  # it was in the graph

    with torch.no_grad():  # real images: encoded once, no blank one besides
        calls.clear()
        hooked(**_image_inputs(processor, make_image, tmp_path), use_cache=False)
        assert len(calls) == 1
        calls.clear()  # generation: the prompt's forward encodes a blank image, the one-token steps nothing
        hooked.eval().generate(**text, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        assert len(calls) == 1


def _records(*image_lists):
    return SimpleNamespace(records=[{"images": images} for images in image_lists],
                           origins=[("pairs.jsonl", i + 1) for i in range(len(image_lists))])


def test_uncovered_families_refuse_rows_with_and_without_images_under_zero3(monkeypatch):
    from align.errors import ConfigError
    from align.models import zero3_images

    mixed = _records(["a.png"], [], ["b.png"], [])
    uncovered = next(name for name, family in FAMILIES.items() if not family.blank_image_features)
    zero3_images.refuse_uncovered_image_mix(mixed, uncovered)  # one process, or not ZeRO-3: nothing to fear

    monkeypatch.setattr(zero3_images, "zero3_partitioned_run", lambda: True)
    with pytest.raises(ConfigError, match=r"^pairs\.jsonl, row 2: no image, beside rows with images \(2 of 4"):
        zero3_images.refuse_uncovered_image_mix(mixed, uncovered)
    zero3_images.refuse_uncovered_image_mix(mixed, COVERED[0])
    zero3_images.refuse_uncovered_image_mix(_records(["a.png"], ["b.png"]), uncovered)
    zero3_images.refuse_uncovered_image_mix(_records([], None), uncovered)  # no rank ever encodes an image
