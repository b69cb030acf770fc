"""halva and povid on one real batch, checked against computations that do not go through align's trainer: the
model's own logits, log_softmax and gather, written out here."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")


def _trainer(variant, tiny_checkpoint, tmp_path, **cfg):
    """AlignDPOTrainer on tiny llava, reference = another random checkpoint (so the KL is not 0)."""
    import datasets

    from align.models.load import load_model_and_processor
    from align.train.dpo.settings import AlignDPOConfig
    from align.train.dpo.trainer import AlignDPOTrainer

    policy, processor = load_model_and_processor(tiny_checkpoint("llava"), dtype="float32")
    ref = load_model_and_processor(tiny_checkpoint("llava", seed=1), dtype="float32")[0]
    args = AlignDPOConfig(output_dir=str(tmp_path / variant), variant=variant, **cfg)
    trainer = AlignDPOTrainer(model=policy, ref_model=ref, args=args,
                              train_dataset=datasets.Dataset.from_dict({"row": [0, 1]}),
                              data_collator=lambda f: f, processing_class=processor, family="llava")
    return trainer, policy, ref, processor


def _logits(model, inputs):
    """The model's own (unpatched-path) logits [N, T, V] of a batch."""
    keep = {k: v for k, v in inputs.items() if k not in ("completion_mask", "phrase_ids", "kl_inputs", "noisy_inputs")}
    with torch.no_grad():
        return model(**keep, use_cache=False).logits.float()


def test_halva_loss_is_phrase_alignment_plus_alpha_kl(tiny_checkpoint, pairs, shapes_world, tmp_path):
    from align.data.collate import ConversationEncoder
    from align.data.messages import completion_text
    from align.train.dpo.data import PreferenceCollator, load_preference_data
    from align.train.sft.data import load_sft_data

    alpha = 0.4
    trainer, policy, ref, processor = _trainer("halva", tiny_checkpoint, tmp_path, halva_alpha=alpha,
                                               kl_data=str(shapes_world / "sft.jsonl"))
    data = load_preference_data(pairs / "fixed.jsonl", processor, "llava", needs_spans=True, phrase_pairs=True)
    kl = load_sft_data(shapes_world / "sft.jsonl", processor, "llava", progress=False)
    batch = PreferenceCollator(ConversationEncoder(processor, "llava"), data, phrase_ids=True, kl=kl)(
        [{"row": 0}, {"row": 1}])
    ids, phrase_ids = batch["input_ids"], batch["phrase_ids"]  # [4, T]: chosen 0, chosen 1, rejected 0, rejected 1
    tokenizer = processor.tokenizer
    # The collator's phrase ids spell the k-th span of each side, word for word.
    for i, (row, side) in enumerate([(0, "chosen"), (1, "chosen"), (0, "rejected"), (1, "rejected")]):
        record = data.records[row]
        text = completion_text(record[side])
        spans = record[f"{side}_spans"]
        assert int(phrase_ids[i].max()) == len(spans)
        for k, (s, e) in enumerate(spans, start=1):
            assert tokenizer.decode(ids[i][phrase_ids[i] == k]).strip() == text[s:e], (i, k)

    # By hand: LP of each phrase from the policy's logits; softplus(LPh - LPc), mean over pairs.
    logp = _logits(policy, batch)[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [4, T-1]
    shifted = phrase_ids[:, 1:]
    terms = []
    for row in (0, 1):
        for k in range(1, int(shifted[row].max()) + 1):
            correct = logp[row][shifted[row] == k].sum()
            hallucinated = logp[2 + row][shifted[2 + row] == k].sum()
            terms.append(torch.log1p(torch.exp(hallucinated - correct)))
    align = torch.stack(terms).mean()
    # KL(ref || policy) over the kl samples' assistant tokens, summed over tokens and vocabulary, mean over samples
    samples = batch["kl_inputs"]
    mask = samples["completion_mask"][:, 1:].bool()
    p_ref = _logits(ref, samples)[:, :-1].log_softmax(-1)
    p_pol = _logits(policy, samples)[:, :-1].log_softmax(-1)
    per_token = (p_ref.exp() * (p_ref - p_pol)).sum(-1)  # [B, T-1]
    kl_value = (per_token * mask).sum(1).mean()
    assert kl_value > 1e-3  # different checkpoints: the KL term is really there
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, dict(batch), False).item()
    assert abs(loss - (align + alpha * kl_value).item()) < 1e-4


def test_povid_noise_term_scores_the_noisy_argmax_under_the_clean_image(tiny_checkpoint, pairs, tmp_path):
    """With weights (0, 1) povid's loss is DPO(chosen, y_noise) where y_noise is computed here from the policy's and
    the reference's own logits; and it differs from the dpo loss."""
    import torch.nn.functional as F

    from align.data.collate import ConversationEncoder
    from align.train.dpo.data import PreferenceCollator, load_preference_data, povid_noise

    beta = 0.1
    trainer, policy, ref, processor = _trainer("povid", tiny_checkpoint, tmp_path, beta=beta, povid_text_weight=0.0,
                                               povid_noise_weight=1.0)
    data = load_preference_data(pairs / "fixed.jsonl", processor, "llava", needs_images=True)
    batch = PreferenceCollator(ConversationEncoder(processor, "llava"), data, noise=povid_noise(500), noise_seed=7)(
        [{"row": 0}, {"row": 1}])
    noisy = batch["noisy_inputs"]
    n = noisy["input_ids"].shape[1]
    assert torch.equal(noisy["input_ids"], batch["input_ids"][:2, :n])  # same tokens, another image

    def by_hand(model):
        clean = _logits(model, batch)[:2, :-1].log_softmax(-1)  # chosen rows [2, T-1, V]
        argmax = _logits(model, noisy)[:, :-1].argmax(-1)  # [2, n-1]
        mask = batch["completion_mask"][:2, 1:].float()
        labels = batch["input_ids"][:2, 1:]
        chosen = (clean.gather(-1, labels[..., None]).squeeze(-1) * mask).sum(1)
        noise = (clean[:, : n - 1].gather(-1, argmax[..., None]).squeeze(-1) * mask[:, : n - 1]).sum(1)
        return chosen, noise, argmax, labels

    chosen, noise, argmax, labels = by_hand(policy)
    ref_chosen, ref_noise, _, _ = by_hand(ref)
    # the noisy-image argmax is not the response itself (else the term would be DPO against the chosen)
    completion = batch["completion_mask"][:2, 1:n].bool()
    assert bool((argmax[completion] != labels[:, : n - 1][completion]).any())
    expected = -F.logsigmoid(beta * ((chosen - ref_chosen) - (noise - ref_noise))).mean()
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, dict(batch), False).item()
    assert abs(loss - expected.item()) < 1e-5
