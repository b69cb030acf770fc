"""`flat_batches`: a batch's rows concatenated into one row with restarting positions gives the per-token
log-probs and gradients of the padded batch, for every family that declares it; others are refused."""

from __future__ import annotations

import json

import pytest

from align.models.families import FAMILIES

torch = pytest.importorskip("torch")

FLAT = sorted(name for name, family in FAMILIES.items() if family.flat_batches)


def _token_logps(model, batch):
    """Log-probs of the labelled tokens, in order: [n labelled tokens]."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logps[mask]


@pytest.mark.parametrize("family", FLAT)
def test_flat_rows_give_the_padded_batch_log_probs_and_gradients(family, tiny_checkpoint, shapes_world):
    from align.data.collate import ConversationCollator, ConversationEncoder
    from align.models.layout import pack_rows
    from align.models.load import load_model_and_processor
    from align.train.sft.data import load_sft_data

    model, processor = load_model_and_processor(tiny_checkpoint(family), dtype="float32")[:2]
    model.eval()
    data = load_sft_data(shapes_world / "sft.jsonl", processor, family, progress=False)
    rows = [1, 0, 2, 3, 4, 6, 5]  # captions and short answers: very different lengths
    assert len({data.spans[r].length for r in rows}) > 2
    encoder = ConversationEncoder(processor, family)
    padded = ConversationCollator(encoder, data.load_example, data.spans)([{"row": r} for r in rows])
    flat = ConversationCollator(encoder, data.load_example, data.spans, flat=True)([{"row": r} for r in rows])
    # first-fit packs: fewer rows than the batch, as wide as its longest row, and rows placed out of batch order
    width = int(padded["attention_mask"].sum(1).max())
    assert flat["input_ids"].shape[1] == width and 1 < flat["input_ids"].shape[0] < len(rows)
    assert "attention_mask" not in flat and (flat["position_ids"][:, 0] == 0).all()
    assert not torch.equal(flat["pixel_values"], padded["pixel_values"])  # the images follow their rows

    # Packing reorders rows: the padded batch's per-row log-probs, taken in pack order, token for token.
    per_row = (padded["labels"][:, 1:] != -100).sum(1).tolist()
    by_row = _token_logps(model, padded).split(per_row)
    order = [r for pack in pack_rows(padded["attention_mask"].sum(1).tolist()) for r in pack]
    assert order != sorted(order)
    want = torch.cat([by_row[r] for r in order])
    got = _token_logps(model, flat)
    assert want.shape == got.shape and torch.allclose(want, got, atol=1e-5), (want - got).abs().max()

    grads = []
    for batch in (padded, flat):
        model.zero_grad()
        _token_logps(model, batch).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name


def test_sft_trains_flat_and_refuses_a_family_without_it(tiny_checkpoint, shapes_world, run_cli, tmp_path):
    common = ["--data", shapes_world / "sft.jsonl", "max_steps=2", "per_device_train_batch_size=4",
              "save_strategy=no", "flat_batches=true"]
    result = run_cli("sft", "--model", tiny_checkpoint("llava"), "--output-dir", tmp_path / "flat", *common)
    assert result.code == 0, result
    assert json.loads((tmp_path / "flat" / "run.json").read_text())["global_step"] == 2
    refused = run_cli("sft", "--model", tiny_checkpoint("qwen2_vl"), "--output-dir", tmp_path / "qwen", *common)
    assert refused.code == 2 and "family qwen2_vl does not take packed rows (supported: llava" in refused.err
