"""Shared layouts of preference batches (`prefix_sharing`, `padding_free`, `shared_image_encoding`): the per-token
log-probs, logits and gradients of the unshared layout, for every family that declares them; others refused."""

from __future__ import annotations

import pytest

from align.models.families import FAMILIES

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

SHARED = sorted(name for name, family in FAMILIES.items() if family.shared_layouts)
# (prefix_sharing, padding_free) switches that repack the batch
REPACKED = [(True, False), (False, True), (True, True)]


def _model(tiny_checkpoint, family):
    from align.models.layout_forward import add_layout_forward, share_vision_encoder
    from align.models.lm_head import add_log_probs_head
    from align.models.load import load_model_and_processor

    model, processor = load_model_and_processor(tiny_checkpoint(family), dtype="float32")[:2]
    model.eval()
    add_log_probs_head(model, family, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    add_layout_forward(model, family)
    share_vision_encoder(model, family)
    return model, processor


def _batch(processor, family, data_path, rows, layouts, mdpo=False):
    from align.data.collate import ConversationEncoder
    from align.train.dpo.data import PreferenceCollator, load_preference_data

    data = load_preference_data(data_path, processor, family, needs_images=mdpo, corrupted_images=mdpo)
    collator = PreferenceCollator(ConversationEncoder(processor, family), data, layouts=layouts,
                                  corruption_seed=0 if mdpo else None)
    return collator([{"row": r} for r in rows])


def _per_token(model, batch):
    from align.train.dpo.data import model_inputs

    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    out = model(**model_inputs(batch), labels=labels, fused_lm_head=True, use_cache=False)
    return out, batch["completion_mask"][:, 1:].bool()


@pytest.mark.parametrize("family", SHARED)
@pytest.mark.parametrize(("prefix", "packed"), REPACKED)
def test_shared_layouts_give_the_unshared_log_probs_and_gradients(family, prefix, packed, tiny_checkpoint, pairs):
    from align.train.dpo.data import Layouts

    model, processor = _model(tiny_checkpoint, family)
    rows = [0, 3, 1, 2]
    plain = _batch(processor, family, pairs / "all.jsonl", rows, None)
    shared = _batch(processor, family, pairs / "all.jsonl", rows, Layouts(prefix, packed, share_vision=True))
    layout = shared["layout"]
    n, width = plain["input_ids"].shape
    real = int(plain["attention_mask"].sum())
    if prefix:  # each pair's prompt and image tokens are computed once (+1 token per pair: the branch point)
        assert layout.tokens() < real - len(rows) * 10
    else:
        assert layout.tokens() == real
    if packed:
        assert layout.sources.shape[0] <= (len(rows) if prefix else n)

    grads = []
    for batch in (plain, shared):
        out, mask = _per_token(model, batch)
        model.zero_grad()
        (out.log_probs * mask).sum().backward()
        grads.append(({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, out, mask))
    (g0, want, mask), (g1, got, _) = grads
    assert want.log_probs.shape == got.log_probs.shape == mask.shape
    assert torch.allclose(want.log_probs[mask], got.log_probs[mask], atol=1e-5), \
        (want.log_probs[mask] - got.log_probs[mask]).abs().max()
    assert torch.allclose(want.entropy[mask], got.entropy[mask], atol=1e-5)
    assert torch.equal(want.is_top1[mask], got.is_top1[mask])
    assert (got.log_probs[~mask] == 0).all()
    assert g0.keys() == g1.keys() and g0
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-5), (name, (g0[name] - g1[name]).abs().max())


@pytest.mark.parametrize("family", SHARED)
def test_mdpo_corrupted_rows_and_full_logits_in_a_shared_layout(family, tiny_checkpoint, pairs):
    """mdpo's third row group (the chosen response under a corrupted image) rides as sequences of its own; full
    logits (halva's KL, povid's argmax tokens) come back in the unshared layout too."""
    from align.train.dpo.data import Layouts, model_inputs

    model, processor = _model(tiny_checkpoint, family)
    rows = [2, 0, 1]
    plain = _batch(processor, family, pairs / "all.jsonl", rows, None, mdpo=True)
    shared = _batch(processor, family, pairs / "all.jsonl", rows, Layouts(True, True, share_vision=True), mdpo=True)
    assert plain["input_ids"].shape[0] == 9
    with torch.no_grad():
        want, mask = _per_token(model, plain)
        got, _ = _per_token(model, shared)
        assert torch.allclose(want.log_probs[mask], got.log_probs[mask], atol=1e-5)
        logits = [model(**model_inputs(b), use_cache=False).logits for b in (plain, shared)]
    attended = plain["attention_mask"].bool()
    assert logits[0].shape == logits[1].shape
    assert torch.allclose(logits[0][attended], logits[1][attended], atol=1e-4)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_shared_image_encoding_encodes_each_image_once_per_step(family, tiny_checkpoint, pairs):
    """The reference's call after the policy's reuses the policy's image features (the encoder runs once), and
    a call without the layout's memo encodes again."""
    from align.models.layout_forward import vision_encoder
    from align.train.dpo.data import Layouts, model_inputs

    model, processor = _model(tiny_checkpoint, family)
    calls = []
    # the encoder's first layer with weights runs only when it encodes
    first = next(m for m in vision_encoder(model, family).modules()
                 if not list(m.children()) and any(True for _ in m.parameters(recurse=False)))
    first.register_forward_hook(lambda *_: calls.append(1))
    batch = _batch(processor, family, pairs / "all.jsonl", [0, 1], Layouts(True, True, share_vision=True))
    with torch.no_grad():
        first, _ = _per_token(model, batch)
        second, _ = _per_token(model, batch)  # the reference call of the same step
    assert len(batch["layout"].vision_memo) == 1 and len(calls) == 1
    assert torch.equal(first.log_probs, second.log_probs)
    # A call that passes no cache flag (the fused head passes use_cache=False, which LLaVA hands on to its vision
    # tower) is served by the same memo entry: the flag never changes what the encoder returns.
    with torch.no_grad():
        model(**model_inputs(batch))
    assert len(batch["layout"].vision_memo) == 1 and len(calls) == 1
    batch["layout"].share_vision = False
    with torch.no_grad():
        third, _ = _per_token(model, batch)
    assert len(calls) == 2 and torch.equal(first.log_probs, third.log_probs)


# AdamW divides by sqrt(v) + eps: gradient entries near eps would turn float rounding (which differs between
# layouts) into updates of order learning_rate; eps 1e-6 keeps the comparison about the layouts.
TRAJECTORY_ARGS = ["max_steps=10", "per_device_train_batch_size=3", "learning_rate=1e-3", "save_strategy=no",
                   "logging_steps=1", "seed=3", "adam_epsilon=1e-6"]
OFF = ["shared_image_encoding=false", "prefix_sharing=false", "padding_free=false"]


def _losses(run_cli, family, variant, model, data, out, *extra):
    import json

    result = run_cli("dpo", "--variant", variant, "--model", model, "--data", data, "--output-dir", out,
                     *TRAJECTORY_ARGS, *extra)
    assert result.code == 0, result
    run = json.loads((out / "run.json").read_text())
    return [e["loss"] for e in run["log_history"] if "loss" in e], run["layouts"]


@pytest.mark.parametrize(("family", "variant", "extra"), [
    ("llava", "dpo", ()), ("qwen2_vl", "ddpo", ("activation_checkpointing=true",)), ("llava_next", "mdpo", ()),
    ("llava", "povid", ())])
def test_ten_step_losses_with_and_without_shared_layouts(family, variant, extra, tiny_checkpoint, pairs, run_cli,
                                                         tmp_path):
    """(qwen2_vl also recomputes its activations in backward: the vision memo and the packed rows hold there.)"""
    model, data = tiny_checkpoint(family), pairs / "all.jsonl"
    shared, record = _losses(run_cli, family, variant, model, data, tmp_path / "shared", *extra)
    assert record == {name: {"used": True} for name in ("shared_image_encoding", "prefix_sharing", "padding_free")}
    plain, off = _losses(run_cli, family, variant, model, data, tmp_path / "plain", *OFF, *extra)
    assert all(not v["used"] and v["why"] == "switched off" for v in off.values())
    assert len(shared) == len(plain) == 10 and len(set(plain)) > 5  # the model trains: the losses move
    assert max(abs(a - b) for a, b in zip(shared, plain, strict=True)) < 1e-5, (shared, plain)


def test_unsupported_family_and_trainable_vision(tiny_checkpoint, pairs, run_cli, tmp_path):
    """Switched on where they cannot apply: one line saying why; left unset: off, with the reason in run.json."""
    import json

    data = pairs / "all.jsonl"
    refused = run_cli("dpo", "--model", tiny_checkpoint("idefics"), "--data", data, "--output-dir", tmp_path / "a",
                      "max_steps=1", "prefix_sharing=true")
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert refused.err.startswith(
        "error: prefix_sharing: family idefics does not take shared layouts (supported: llava, llava_next, "
        "llava_next_video, qwen2_vl, qwen2_5_vl)")
    refused = run_cli("dpo", "--model", tiny_checkpoint("llava"), "--data", data, "--output-dir", tmp_path / "b",
                      "--train", "all", "max_steps=1", "shared_image_encoding=true")
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert refused.err.startswith("error: shared_image_encoding: model.vision_tower.")
    assert "trains, so the policy's image features differ from the reference's" in refused.err
    result = run_cli("dpo", "--model", tiny_checkpoint("llava"), "--data", data, "--output-dir", tmp_path / "c",
                     "--train", "all", "max_steps=1", "save_strategy=no")
    assert result.code == 0, result
    record = json.loads((tmp_path / "c" / "run.json").read_text())["layouts"]
    assert record["prefix_sharing"] == {"used": True} and not record["shared_image_encoding"]["used"]


@pytest.mark.parametrize("attention", ["eager", "flex_attention"])
def test_other_attention_implementations_take_the_layout_mask(attention, tiny_checkpoint, pairs):
    """eager gets the additive form of the mask, flex_attention a block mask (its backward runs on CUDA only, so
    on a CPU the forward is compared)."""
    from align.train.dpo.data import Layouts

    model, processor = _model(tiny_checkpoint, "llava")
    model.set_attn_implementation(attention)
    assert model.config.get_text_config()._attn_implementation == attention
    rows = [0, 3, 1, 2]
    plain = _batch(processor, "llava", pairs / "all.jsonl", rows, None)
    shared = _batch(processor, "llava", pairs / "all.jsonl", rows, Layouts(True, True, share_vision=True))
    with torch.no_grad():
        want, mask = _per_token(model, plain)
        got, _ = _per_token(model, shared)
    assert torch.allclose(want.log_probs[mask], got.log_probs[mask], atol=1e-5)


def test_sub_batches_share_their_image_encoding_too(tiny_checkpoint, pairs):
    """povid's noised-image rows (a sub-batch of their own) are encoded once for the policy's and the reference's
    calls on them."""
    from align.data.collate import ConversationEncoder
    from align.models.layout_forward import vision_encoder
    from align.train.dpo.data import (
        Layouts,
        PreferenceCollator,
        load_preference_data,
        model_inputs,
        povid_noise,
    )

    model, processor = _model(tiny_checkpoint, "llava")
    calls = []
    first = next(m for m in vision_encoder(model, "llava").modules()
                 if not list(m.children()) and any(True for _ in m.parameters(recurse=False)))
    first.register_forward_hook(lambda *_: calls.append(1))
    data = load_preference_data(pairs / "all.jsonl", processor, "llava", needs_images=True)
    collator = PreferenceCollator(ConversationEncoder(processor, "llava"), data, noise=povid_noise(500),
                                  layouts=Layouts(True, True, share_vision=True))
    noisy = collator([{"row": 0}, {"row": 1}])["noisy_inputs"]
    with torch.no_grad():
        logits = [model(**model_inputs(noisy), use_cache=False).logits for _ in range(2)]
    assert len(calls) == 1 and torch.equal(logits[0], logits[1])
