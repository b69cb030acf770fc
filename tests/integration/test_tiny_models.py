"""Every tiny family builds offline, reloads through load_model_and_processor, trains a step and generates."""

from __future__ import annotations

import pytest

from align.models.tiny import TINY_BUILDERS

torch = pytest.importorskip("torch")


def _image(color="red", size=(40, 30)):
    from PIL import Image

    return Image.new("RGB", size, color)


def _prompt(text="Is there a red circle in the image?"):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


@pytest.mark.parametrize("family", sorted(TINY_BUILDERS))
def test_tiny_family_loads_trains_and_generates(family, tiny_checkpoint):
    from align.models.families import count_parameters_by_part, get_family
    from align.models.inputs import encode
    from align.models.load import load_model_and_processor

    path = tiny_checkpoint(family)
    model, processor = load_model_and_processor(path, dtype="float32")
    spec = get_family(family)
    assert getattr(processor, "chat_template", None), "chat template must survive save/reload"

    # Every parameter belongs to a named part, and every declared part owns parameters.
    counts = count_parameters_by_part(model, spec)
    assert "other" not in counts, f"parameters outside every part: {counts.get('other')}"
    assert set(counts) == set(spec.parts), (set(counts), set(spec.parts))
    total = sum(c["total"] for c in counts.values())
    assert total < 2_000_000

    # Forward + backward on a batch of 4 with images: finite loss, gradients reach the LLM and the connector.
    model.train()
    batch = encode(processor, family, [_prompt()] * 4, [[_image(c)] for c in ("red", "blue", "green", "gray")])
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    from align.models.families import part_of

    touched = {part_of(name, spec) for name in grads}
    assert "language_model" in touched
    if "connector" in spec.parts:
        assert "connector" in touched, "image features must flow into the loss"

    # Generation from an image prompt, batched and left-padded.
    model.eval()
    prompts = [_prompt("Describe this image."), _prompt("Is there a star?")]
    batch = encode(processor, family, prompts, [[_image("red")], [_image("blue", (30, 50))]])
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == 2
    assert generated.shape[1] > batch["input_ids"].shape[1]
