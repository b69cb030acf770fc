"""Family-specific encoding holds for the tiny IDEFICS, BLIP-2, InstructBLIP, Fuyu and Kosmos-2 checkpoints (and
batched generation for every family):
images sit where the family needs them, the text is the chat template's, batched generation is left-padded and
matches row-by-row generation, and the processor fixes work."""

from __future__ import annotations

import pickle

import pytest

from align.models.tiny import TINY_BUILDERS

torch = pytest.importorskip("torch")

FAMILIES = ("idefics", "blip2", "instructblip", "fuyu", "kosmos2")


def _image(color="red", size=(40, 30)):
    from PIL import Image

    return Image.new("RGB", size, color)


def _conv(text, answer=None, items=None):
    """One user turn (an image, then `text`, unless `items` are given) and optionally the assistant's answer."""
    content = items if items is not None else [{"type": "image"}, {"type": "text", "text": text}]
    conv = [{"role": "user", "content": content}]
    if answer is not None:
        conv.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return conv


def _load(tiny_checkpoint, family):
    from align.models.load import load_model_and_processor

    model, processor = load_model_and_processor(tiny_checkpoint(family), dtype="float32")
    return model.eval(), processor


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_survives_reload(family, tiny_checkpoint):
    from align.models.load import load_processor

    path = tiny_checkpoint(family)
    processor = load_processor(path)
    assert processor.chat_template == (path / "chat_template.jinja").read_text(encoding="utf-8")
    assert "{% generation %}" in processor.chat_template  # trainers mask everything but the assistant's text
    rendered = processor.apply_chat_template(_conv("Hi?"), add_generation_prompt=True, tokenize=False)
    assert "<image>" not in rendered and "|SPEAKER|" not in rendered  # these processors insert image tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_builds_the_same_files(family, tmp_path):
    from align.models.tiny import build_tiny

    first, second = build_tiny(family, tmp_path / "a", seed=0), build_tiny(family, tmp_path / "b", seed=0)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert [f for f in files if (first / f).read_bytes() != (second / f).read_bytes()] == []


@pytest.mark.parametrize("family", sorted(TINY_BUILDERS))
def test_batched_generation_is_left_padded_and_matches_one_by_one(family, tiny_checkpoint):
    from align.models.inputs import encode

    model, processor = _load(tiny_checkpoint, family)
    prompts = [_conv("Describe this image in detail, please."), _conv("Star?")]
    images = [[_image("red", (40, 30))], [_image("blue", (30, 50))]]
    batch = encode(processor, family, prompts, images)
    mask = batch["attention_mask"]  # [B, T]
    assert mask[:, -1].all() and not mask[1].all(), "the shorter row must be padded on the left"
    with torch.no_grad():
        together = model.generate(**batch, max_new_tokens=5, do_sample=False)[:, batch["input_ids"].shape[1]:]
        for row in range(2):
            alone = encode(processor, family, [prompts[row]], [images[row]])
            out = model.generate(**alone, max_new_tokens=5, do_sample=False)[0, alone["input_ids"].shape[1]:]
            # A row that stops early (EOS) is padded in the batch: the batched tokens past its end are all padding.
            head, tail = together[row][: len(out)], together[row][len(out):]
            assert torch.equal(out, head), f"row {row}: {out.tolist()} vs {together[row].tolist()} batched"
            assert (tail == processor.tokenizer.pad_token_id).all(), tail.tolist()


def test_idefics_text_attends_to_the_image_before_it(tiny_checkpoint):
    from align.models.inputs import encode
    from align.models.load import load_processor

    processor = load_processor(tiny_checkpoint("idefics"))
    text, image = (lambda t: {"type": "text", "text": t}), {"type": "image"}
    conversations = [
        _conv(None, items=[text("Look at this:"), image, text("Is there a circle?")]),
        _conv(None, items=[image, text("and"), image, text("Same colour?")]),
    ]
    batch = encode(processor, "idefics", conversations, [[_image()], [_image("red"), _image("blue")]])
    ids, attends = batch["input_ids"], batch["image_attention_mask"]  # [B, T], [B, T, max images]
    assert attends.shape == (*ids.shape, 2)
    assert batch["pixel_values"].shape[:2] == (2, 2)  # [B, max images, 3, H, W]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for row, n_images in enumerate((1, 2)):
        starts = (ids[row] == image_id).nonzero().flatten().tolist()
        assert len(starts) == n_images
        bounds = [*starts, ids.shape[1]]
        assert attends[row, : starts[0]].sum() == 0, "text before the first image cannot see an image"
        for k in range(n_images):
            # From image k until the next image, positions attend to image k only (IDEFICS: the latest image).
            span = attends[row, bounds[k] : bounds[k + 1]]
            assert span[:, k].all() and span.sum() == span.shape[0]
    first = processor.tokenizer.decode(ids[0], skip_special_tokens=True)
    assert first.startswith("User: Look at this:Is there a circle?") and first.endswith("Assistant:")


def test_idefics_refuses_images_that_do_not_match_the_messages(tiny_checkpoint):
    from align.errors import DataError
    from align.models.inputs import encode
    from align.models.load import load_processor

    processor = load_processor(tiny_checkpoint("idefics"))
    with pytest.raises(DataError, match="1 image item"):
        encode(processor, "idefics", [_conv("Hi?")], [[_image(), _image()]])


@pytest.mark.parametrize("family", ["blip2", "instructblip"])
def test_blip_rows_hold_exactly_the_query_tokens_after_the_padding(family, tiny_checkpoint):
    from align.models.inputs import encode
    from align.models.load import load_config, load_processor

    path = tiny_checkpoint(family)
    config, processor = load_config(path), load_processor(path)
    n, image_id = config.num_query_tokens, config.image_token_index
    conversations = [_conv("Is there a red circle in the picture?", answer="Yes."), _conv("Star?", answer="No.")]
    batch = encode(processor, family, conversations, [[_image()], [_image("blue")]], add_generation_prompt=False)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert batch["pixel_values"].shape[0] == 2
    for row in range(2):
        assert int((ids[row] == image_id).sum()) == n
        n_pad = int((mask[row] == 0).sum())
        assert not mask[row, :n_pad].any() and mask[row, n_pad:].all(), "padding in one block, on the left"
        assert (ids[row, n_pad : n_pad + n] == image_id).all(), "the query tokens lead the text"
        text = processor.tokenizer.decode(ids[row, n_pad + n :], skip_special_tokens=False)
        assert text == processor.apply_chat_template(conversations[row], tokenize=False)


def test_instructblip_qformer_reads_the_instruction_only(tiny_checkpoint):
    from align.models.inputs import encode
    from align.models.load import load_processor

    processor = load_processor(tiny_checkpoint("instructblip"))
    question = "Is there a red circle?"
    generation = encode(processor, "instructblip", [_conv(question)], [[_image()]], add_generation_prompt=True)
    training = encode(processor, "instructblip", [_conv(question, answer="Yes, a red circle.")], [[_image()]],
                      add_generation_prompt=False)
    assert torch.equal(generation["qformer_input_ids"], training["qformer_input_ids"])
    seen = processor.qformer_tokenizer.decode(training["qformer_input_ids"][0], skip_special_tokens=True)
    assert seen == question.lower()  # no roles, no answer


@pytest.mark.parametrize("family", ["blip2", "instructblip", "fuyu"])
def test_one_image_per_example_families_refuse_other_counts(family, tiny_checkpoint):
    from align.errors import DataError
    from align.models.inputs import encode
    from align.models.load import load_processor

    processor = load_processor(tiny_checkpoint(family))
    with pytest.raises(DataError, match="exactly one image"):
        encode(processor, family, [_conv("Hi?"), _conv("Ho?")], [[_image()], [_image(), _image()]])


def test_kosmos2_marks_64_image_positions_after_bos(tiny_checkpoint):
    from align.models.inputs import encode
    from align.models.load import load_config, load_processor

    path = tiny_checkpoint("kosmos2")
    config, processor = load_config(path), load_processor(path)
    assert config.latent_query_num == 64
    batch = encode(processor, "kosmos2", [_conv("Describe the image in detail."), _conv("Star?")],
                   [[_image()], [_image("blue", (30, 50))]])
    ids, marked = batch["input_ids"], batch["image_embeds_position_mask"]  # [B, T] both
    assert marked.sum(dim=1).tolist() == [64, 64]
    tok = processor.tokenizer
    for row in range(2):
        first = int(marked[row].nonzero().min())
        assert marked[row, first : first + 64].all()
        assert tok.convert_ids_to_tokens(ids[row, first - 2 : first].tolist()) == ["<s>", "<image>"]
        assert tok.convert_ids_to_tokens(int(ids[row, first + 64])) == "</image>"


def test_fuyu_rows_are_image_then_template_text(tiny_checkpoint):
    from align.models.inputs import encode, render_chat
    from align.models.load import load_processor

    processor = load_processor(tiny_checkpoint("fuyu"))
    tok = processor.tokenizer
    conversations = [_conv("Is there a red circle?"), _conv("Star?")]
    batch = encode(processor, "fuyu", conversations, [[_image("red", (40, 30))], [_image("blue", (30, 50))]])
    ids = batch["input_ids"]
    assert not (ids == tok.convert_tokens_to_ids("<0x04>")).any(), "no answer marker the template did not write"
    # Every |SPEAKER| token takes one [3*8*8] patch: 4x3 patches for 40x30 (32x24 after resizing), 3x4 for 30x50.
    assert int((ids == tok.convert_tokens_to_ids("|SPEAKER|")).sum()) == batch["pixel_values"].shape[0] == 24
    for row, conv in enumerate(conversations):
        bos = int((ids[row] == tok.bos_token_id).nonzero().max())
        assert tok.decode(ids[row, bos + 1 :]) == render_chat(processor, conv, add_generation_prompt=True)


def test_fuyu_patch_makes_the_pil_processor_run_and_is_idempotent(tiny_checkpoint, tmp_path):
    pytest.importorskip("torchvision")  # the reference output comes from the torchvision backend
    from transformers import AutoProcessor

    from align.models.patches import patch_fuyu_processor

    path = tiny_checkpoint("fuyu")
    pil = AutoProcessor.from_pretrained(str(path), backend="pil")  # the backend with the bug
    assert type(pil.image_processor).__name__ == "FuyuImageProcessorPil"
    before = _saved_config(pil, tmp_path / "before")
    assert patch_fuyu_processor(pil) is pil
    patched = pil.__dict__["_process_images"]
    patch_fuyu_processor(pil)
    assert pil.__dict__["_process_images"] is patched, "a second call must not wrap the fix again"

    texts, images = ["USER: Is there a circle? ASSISTANT: ", "hi"], [_image(), _image("blue", (30, 50))]
    got = pil(text=texts, images=images, return_legacy_image_output=False, return_tensors="pt")
    reference = AutoProcessor.from_pretrained(str(path))  # torchvision backend: no bug
    want = reference(text=texts, images=images, return_legacy_image_output=False, return_tensors="pt")
    assert set(got) == set(want)
    for key in want:
        assert torch.allclose(got[key].float(), want[key].float(), atol=1e-6), key
    assert _saved_config(pil, tmp_path / "after") == before, "the fix must not leak into saved files"
    assert pickle.loads(pickle.dumps(pil))(text=texts[:1], images=images[:1], return_tensors="pt") is not None


def _saved_config(processor, folder) -> str:
    processor.save_pretrained(folder)
    return (folder / "processor_config.json").read_text(encoding="utf-8")
