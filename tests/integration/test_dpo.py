"""`align dpo` end to end on tiny models and shapes pairs: every variant trains from the CLI on tiny llava and
qwen2_vl, its margin grows on a fixed batch, `dpo` equals TRL's DPOTrainer on the same batch, and ddpo with all
token weights 1, hsa with all scores 1, stic with coefficient 0 and mdpo with weights (1, 0, 0) equal it too; mdpo
scores its 3B rows in one policy call, with the same seeded m' for policy and reference; bad input stops the run
before training."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from align.train.dpo.variants import VARIANTS  # noqa: E402

FAMILIES = ("llava", "qwen2_vl")
STEP_ARGS = ["per_device_train_batch_size=2", "learning_rate=1e-2", "max_length=512", "save_strategy=no",
             "logging_steps=1"]


def _dpo(run_cli, variant, model, data, out, *extra, kl_data=None):
    kl = [f"kl_data={kl_data}"] if variant == "halva" and kl_data else []
    return run_cli("dpo", "--variant", variant, "--model", model, "--data", data, "--output-dir", out,
                   *STEP_ARGS, *kl, *extra)


# What each variant logs as its pair margin: the implicit-reward margin, or halva's phrase log-prob margin (it has
# no reference on the pairs, so its margin does not start at 0).
MARGIN_KEY = {name: "halva/phrase_margins" if name == "halva" else "rewards/margins" for name in VARIANTS}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_three_steps_from_the_cli(variant, family, tiny_checkpoint, pairs, shapes_world, run_cli, tmp_path):
    out = tmp_path / "out"
    result = _dpo(run_cli, variant, tiny_checkpoint(family), pairs / "all.jsonl", out, "max_steps=3",
                  kl_data=shapes_world / "sft.jsonl")
    assert result.code == 0, result
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["global_step"] == 3 and run["variant"] == variant
    steps = [e for e in run["log_history"] if "loss" in e]
    assert len(steps) == 3
    keys = ("logps/chosen", "logps/rejected", MARGIN_KEY[variant])
    if variant != "halva":
        keys += ("rewards/chosen", "rewards/rejected", "rewards/accuracies")
    for key in keys:
        assert all(key in e for e in steps), key
    if variant != "dpo":
        assert all(f"loss/{variant}" in e for e in steps)
    if variant == "hsa":  # the rows' scores reach the loss through the collator
        assert all(0.5 <= e["hsa/rejected_score"] <= 1.25 for e in steps)
        assert len({e["hsa/rejected_score"] for e in steps}) > 1
    if variant == "stic":
        assert all(e["loss/stic_sft"] > 0 for e in steps)
    if variant == "mdpo":
        assert all(key in e for e in steps for key in ("loss/mdpo_conditional", "rewards/corrupted_chosen"))
    if variant == "halva":  # both terms are live: phrases were found and the KL samples moved off the reference
        assert all(e["halva/phrases"] >= 2 and "loss/halva_align" in e for e in steps)
        assert steps[-1]["loss/halva_kl"] > 0 and run["kl_samples"] > 0
    if variant == "povid":  # the noisy-image sequence is scored and differs from the chosen response
        assert all("loss/povid_noise" in e for e in steps)
        assert all(e["logps/noisy_rejected"] != e["logps/chosen"] for e in steps)
    assert (out / "config.json").is_file()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_margin_grows_on_a_fixed_batch(variant, family, tiny_checkpoint, pairs, shapes_world, run_cli, tmp_path):
    """Two rows, batch 2: every one of the 10 steps sees the same pairs; the logged margin (before each update)
    starts at 0 (policy = reference) and ends clearly positive (povid: the mean of its text and noise margins);
    halva's phrase margin (no reference) grows by more than 0.1 nats."""
    out = tmp_path / "out"
    # povid's noise term chases the policy's own argmax tokens: at lr 1e-2 its margin oscillated, at 3e-3 it grew
    lr = ["learning_rate=3e-3"] if variant == "povid" else []
    result = _dpo(run_cli, variant, tiny_checkpoint(family), pairs / "fixed.jsonl", out, "max_steps=10",
                  "lr_scheduler_type=constant", *lr, kl_data=shapes_world / "sft.jsonl")
    assert result.code == 0, result
    key = MARGIN_KEY[variant]
    steps = [e for e in json.loads((out / "run.json").read_text())["log_history"] if key in e]
    # povid's objective weighs the text margin and the noise margin (its rejected sequence moves with the policy)
    margins = [(e[key] + e["rewards/noise_margins"]) / 2 if variant == "povid" else e[key] for e in steps]
    assert len(margins) == 10
    if variant == "halva":
        assert margins[-1] > margins[0] + 0.1 and margins[-1] > max(margins[:3]), margins
        return
    assert abs(margins[0]) < 1e-6
    assert margins[-1] > 0.1 and margins[-1] > max(margins[:3]), margins


def test_lora_reference_is_the_disabled_adapter(tiny_checkpoint, pairs, run_cli, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "out"
    result = _dpo(run_cli, "ddpo", tiny_checkpoint("llava"), pairs / "fixed.jsonl", out, "--train", "lora",
                  "max_steps=2")
    assert result.code == 0, result
    run = json.loads((out / "run.json").read_text())
    assert run["reference"] == "adapter-disabled policy"
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any(".ref." in k for k in keys)  # TRL's "ref" adapter copy is not kept


def _trainers(family, path, ref_path, variants, tmp_path, **cfg):
    """{variant: AlignDPOTrainer} plus a plain TRL DPOTrainer, each with its own identical policy and reference.

    The reference is another random checkpoint, so that policy != reference and the losses are not all log 2."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from align.models.load import load_model_and_processor
    from align.train.dpo.settings import AlignDPOConfig
    from align.train.dpo.trainer import AlignDPOTrainer

    def models():
        return (load_model_and_processor(path, dtype="float32")[0],
                load_model_and_processor(ref_path, dtype="float32")[0])

    processor = load_model_and_processor(path, dtype="float32")[1]
    rows = datasets.Dataset.from_dict({"row": [0, 1]})
    aligned = {}
    for variant in variants:
        policy, ref = models()
        args = AlignDPOConfig(output_dir=str(tmp_path / variant), variant=variant, **cfg)
        aligned[variant] = AlignDPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=rows,
                                           data_collator=lambda f: f, processing_class=processor, family=family)
    policy, ref = models()
    plain = DPOTrainer(model=policy, ref_model=ref, args=DPOConfig(
        output_dir=str(tmp_path / "trl"), use_cpu=True, report_to="none", gradient_checkpointing=False, bf16=False,
        **{k: v for k, v in cfg.items() if not k.startswith(("ddpo", "hsa", "stic", "mdpo", "povid", "halva"))}),
        train_dataset=datasets.Dataset.from_dict({"images": [[], []]}), processing_class=processor)
    return aligned, plain, processor


def _loss(trainer, batch):
    with torch.no_grad():
        return trainer._compute_loss(trainer.model, dict(batch), False).item()


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_equals_trl_on_the_same_batch(loss_type, tiny_checkpoint, pairs, tmp_path):
    """llava: align's batch fed to AlignDPOTrainer(dpo) and to TRL's DPOTrainer gives the same loss; ddpo with
    gamma 1 (all token weights 1), hsa with all scores 1 and stic with coefficient 0 give it too (sigmoid only)."""
    from align.data.collate import ConversationEncoder
    from align.train.dpo.data import PreferenceCollator, load_preference_data, povid_noise

    path = tiny_checkpoint("llava")
    variants = ["dpo", "ddpo", "hsa", "stic", "mdpo", "povid"] if loss_type == "sigmoid" else ["dpo"]
    extra = {"ddpo_gamma": 1.0, "hsa_use_chosen_score": True, "stic_sft_coef": 0.0, "mdpo_conditional_weight": 0.0,
             "mdpo_anchor_weight": 0.0, "povid_text_weight": 1.0, "povid_noise_weight": 0.0} \
        if loss_type == "sigmoid" else {}
    aligned, plain, processor = _trainers("llava", path, tiny_checkpoint("llava", seed=1), variants, tmp_path,
                                          loss_type=[loss_type], **extra)
    scores = ("rejected_score", "chosen_score")
    data = load_preference_data(pairs / "fixed.jsonl", processor, "llava", needs_spans=True, score_fields=scores)
    for record in data.records:
        record["rejected_score"] = record["chosen_score"] = 1.0
    collate = PreferenceCollator(ConversationEncoder(processor, "llava"), data, gamma=1.0, scores=scores)
    batch = collate([{"row": 0}, {"row": 1}])
    assert bool((batch["token_weights"] == 1).all())
    assert batch["rejected_score"].tolist() == [1.0, 1.0] and batch["chosen_score"].tolist() == [1.0, 1.0]
    trl_batch = {k: v for k, v in batch.items() if k not in ("token_weights", *scores)}
    expected = _loss(plain, trl_batch)
    assert abs(expected - 0.6931) > 1e-3  # policy != reference: a real comparison
    assert abs(_loss(aligned["dpo"], trl_batch) - expected) < 1e-6
    if loss_type != "sigmoid":
        return
    for variant in ("ddpo", "hsa", "stic"):
        assert abs(_loss(aligned[variant], batch) - expected) < 1e-6, variant
    # gamma != 1 changes the ddpo loss: the span weights do reach it
    heavy = PreferenceCollator(ConversationEncoder(processor, "llava"), data, gamma=5.0)([{"row": 0}, {"row": 1}])
    assert (heavy["token_weights"] == 5.0).any()
    assert abs(_loss(aligned["ddpo"], heavy) - expected) > 1e-4
    # scores != 1 change the hsa loss, rejected and chosen alike: the collator's scores do reach it
    data.records[0]["rejected_score"] = 2.0
    assert abs(_loss(aligned["hsa"], collate([{"row": 0}, {"row": 1}])) - expected) > 1e-4
    data.records[0]["rejected_score"], data.records[1]["chosen_score"] = 1.0, 3.0
    assert abs(_loss(aligned["hsa"], collate([{"row": 0}, {"row": 1}])) - expected) > 1e-4
    # a coefficient != 0 adds the SFT term to stic: -coef * mean summed chosen log-prob, which is > 0
    aligned["stic"].args.stic_sft_coef = 1 / 1024
    assert _loss(aligned["stic"], batch) - expected > 1e-6
    # ddpo's SFT term is stic's on the weighted log-probs: with all weights 1, the same loss
    aligned["ddpo"].args.ddpo_sft_coef = 1 / 1024
    assert abs(_loss(aligned["ddpo"], batch) - _loss(aligned["stic"], batch)) < 1e-6
    # mdpo with weights (1, 0, 0) on its 3B batch (the first 2B rows are the dpo batch) is dpo; the other two
    # terms do reach the loss
    three = PreferenceCollator(ConversationEncoder(processor, "llava"), data, corruption_seed=42)(
        [{"row": 0}, {"row": 1}])
    assert three["input_ids"].shape[0] == 6
    assert abs(_loss(aligned["mdpo"], three) - expected) < 1e-6
    aligned["mdpo"].args.mdpo_conditional_weight = 1.0
    assert abs(_loss(aligned["mdpo"], three) - expected) > 1e-4
    aligned["mdpo"].args.mdpo_conditional_weight, aligned["mdpo"].args.mdpo_anchor_weight = 0.0, 1.0
    assert abs(_loss(aligned["mdpo"], three) - expected) > 1e-4
    # povid with weights (1, 0) is dpo (through full logits, not the fused head); the noise term reaches the loss
    noisy = PreferenceCollator(ConversationEncoder(processor, "llava"), data, noise=povid_noise(500), noise_seed=3)(
        [{"row": 0}, {"row": 1}])
    assert noisy["noisy_inputs"]["input_ids"].shape[0] == 2
    assert not torch.equal(noisy["noisy_inputs"]["pixel_values"], noisy["pixel_values"][:2])
    assert abs(_loss(aligned["povid"], noisy) - expected) < 1e-5
    aligned["povid"].args.povid_noise_weight = 0.5
    assert abs(_loss(aligned["povid"], noisy) - expected) > 1e-4


def test_pipeline_equals_trl_collator_and_trainer_on_qwen2_vl(tiny_checkpoint, pairs, tmp_path):
    """qwen2_vl, where TRL's own vision collator runs and tokenizes the same: align's collator gives TRL's batch
    (same tokens, same completion mask per row) and the same loss to 1e-6."""
    from align.data.collate import ConversationEncoder
    from align.train.dpo.data import PreferenceCollator, load_preference_data

    aligned, plain, processor = _trainers("qwen2_vl", tiny_checkpoint("qwen2_vl"),
                                         tiny_checkpoint("qwen2_vl", seed=1), ["dpo"], tmp_path)
    data = load_preference_data(pairs / "fixed.jsonl", processor, "qwen2_vl")
    ours = PreferenceCollator(ConversationEncoder(processor, "qwen2_vl"), data)([{"row": 0}, {"row": 1}])
    rows = []
    for i in (0, 1):
        chosen, _ = data.load_pair(i)
        rec = data.records[i]
        rows.append({"images": chosen.images, "prompt": rec["prompt"], "chosen": rec["chosen"],
                     "rejected": rec["rejected"]})
    theirs = plain.data_collator(rows)
    for i in range(4):
        ma, mb = ours["attention_mask"][i].bool(), theirs["attention_mask"][i].bool()
        assert torch.equal(ours["input_ids"][i][ma], theirs["input_ids"][i][mb])
        assert torch.equal(ours["completion_mask"][i][ma], theirs["completion_mask"][i][mb])
    expected = _loss(plain, theirs)
    assert abs(expected - 0.6931) > 1e-3
    assert abs(_loss(aligned["dpo"], ours) - expected) < 1e-6


@pytest.mark.parametrize(("data", "args", "message"), [
    ("nospans.jsonl", ["--variant", "ddpo"], "field 'chosen_spans'"),
    ("badspans.jsonl", ["--variant", "ddpo"], "is not inside the rejected text"),
    ("fixed.jsonl", ["--variant", "nope"], "known variants: dpo, ddpo, hsa, stic, mdpo, halva, povid"),
    ("noscores.jsonl", ["--variant", "hsa"], "field 'rejected_score'"),
    ("noimages.jsonl", ["--variant", "mdpo"], "field 'images'"),
    ("noimages.jsonl", ["--variant", "povid"], "field 'images'"),
    ("unequal.jsonl", ["--variant", "halva", "halva_alpha=0"], "the k-th chosen phrase pairs with the k-th"),
    ("fixed.jsonl", ["--variant", "halva"], "variant halva needs kl_data"),
    ("fixed.jsonl", ["--variant", "halva", "halva_alpha=0", "precompute_ref_log_probs=true"],
     "variant halva cannot use precompute_ref_log_probs"),
])
def test_bad_input_fails_before_training(data, args, message, tiny_checkpoint, pairs, run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("dpo", *args, "--model", tiny_checkpoint("llava"), "--data", pairs / data, "--output-dir", out,
                     "max_steps=1")
    assert result.code == 2, result
    assert message in result.err, result.err
    assert not (out / "run.json").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_spans_mark_the_changed_words_in_context(family, tiny_checkpoint, pairs):
    """A real pair through each family's template: the weighted tokens of row 0 spell exactly the swapped words."""
    from align.data.collate import ConversationEncoder
    from align.data.messages import completion_text
    from align.models.load import load_model_and_processor
    from align.train.dpo.data import load_preference_data

    processor = load_model_and_processor(tiny_checkpoint(family), dtype="float32")[1]
    data = load_preference_data(pairs / "fixed.jsonl", processor, family, needs_spans=True)
    record, layout = data.records[0], data.layouts[0]
    encoder = ConversationEncoder(processor, family)
    for side, example, positions in zip(("chosen", "rejected"), data.load_pair(0),
                                        (layout.chosen_weighted, layout.rejected_weighted), strict=True):
        ids = encoder.encode([example])["input_ids"][0].tolist()
        marked = processor.tokenizer.decode([ids[p] for p in positions]).split()
        text = completion_text(record[side])
        assert marked == [text[s:e] for s, e in record[f"{side}_spans"]], (side, marked)


@pytest.mark.parametrize(("variant", "data", "field"), [
    ("hsa", "noscores.jsonl", "rejected_score"),
    ("mdpo", "noimages.jsonl", "images"),
])
def test_missing_field_fails_before_training_in_one_line(variant, data, field, tiny_checkpoint, pairs, run_cli,
                                                         tmp_path):
    """A row without rejected_score (hsa) or without an image (mdpo): exit 2 before any training, one line naming
    the file, row and field."""
    out = tmp_path / "out"
    result = run_cli("dpo", "--variant", variant, "--model", tiny_checkpoint("llava"), "--data",
                     pairs / data, "--output-dir", out, "max_steps=1")
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert data in lines[0] and "row 2" in lines[0] and f"field '{field}'" in lines[0], lines
    assert not out.exists() or not any(out.iterdir())


def _mdpo_trainer(family, tiny_checkpoint, tmp_path):

    aligned, _, processor = _trainers(family, tiny_checkpoint(family), tiny_checkpoint(family, seed=1), ["mdpo"],
                                      tmp_path)
    return aligned["mdpo"], processor


def _mdpo_collator(processor, family, path, seed):
    from align.data.collate import ConversationEncoder
    from align.train.dpo.data import PreferenceCollator, load_preference_data

    data = load_preference_data(path, processor, family, needs_images=True, corrupted_images=True)
    return PreferenceCollator(ConversationEncoder(processor, family), data, corruption_seed=seed)


def _calls(module, seen):
    def hook(_module, args, kwargs):
        seen.append({k: v.clone() for k, v in kwargs.items() if k in ("input_ids", "pixel_values")})
    return module.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_mdpo_one_policy_call_same_corruption_for_policy_and_reference(family, tiny_checkpoint, pairs, tmp_path):
    """One mdpo step: the policy is called once on all 3B rows (chosen, rejected, chosen under m'), the reference
    once on the same rows and the same pixels (the same m'); the same seed rebuilds the same m', another seed not."""
    trainer, processor = _mdpo_trainer(family, tiny_checkpoint, tmp_path)
    batch = _mdpo_collator(processor, family, pairs / "fixed.jsonl", 7)([{"row": 0}, {"row": 1}])
    assert batch["input_ids"].shape[0] == 6 and batch["completion_mask"].shape[0] == 6
    policy_calls, ref_calls = [], []
    handles = [_calls(trainer.model, policy_calls), _calls(trainer.ref_model, ref_calls)]
    try:
        trainer.model.train()
        loss = trainer._compute_loss(trainer.model, dict(batch), False)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    assert len(policy_calls) == 1 and len(ref_calls) == 1
    assert policy_calls[0]["input_ids"].shape[0] == 6
    assert torch.equal(policy_calls[0]["input_ids"], ref_calls[0]["input_ids"])
    assert torch.equal(policy_calls[0]["pixel_values"], ref_calls[0]["pixel_values"])
    again = _mdpo_collator(processor, family, pairs / "fixed.jsonl", 7)([{"row": 0}, {"row": 1}])
    assert torch.equal(again["pixel_values"], batch["pixel_values"])
    other = _mdpo_collator(processor, family, pairs / "fixed.jsonl", 8)([{"row": 0}, {"row": 1}])
    assert not torch.equal(other["pixel_values"], batch["pixel_values"])
    # the clean images of chosen and rejected are untouched: only the m' group changes with the seed
    n = batch["pixel_values"].shape[0]
    assert torch.equal(other["pixel_values"][: 2 * n // 3], batch["pixel_values"][: 2 * n // 3])


@pytest.mark.parametrize("family", FAMILIES)
def test_mdpo_uses_the_rows_corrupted_images(family, tiny_checkpoint, pairs, tmp_path):
    """A row's own corrupted_images are its m' (encoded exactly like that image), not a crop; on qwen2_vl its other
    size gives other image-token counts, and the chosen tokens are still the ones marked."""
    from PIL import Image

    from align.data.collate import ConversationEncoder, Example
    from align.data.io import read_records, write_jsonl
    from align.models.load import load_model_and_processor

    rows = [dict(r) for r in read_records(pairs / "fixed.jsonl")]
    grey = pairs / "images" / "mdpo-grey.png"  # beside the clean images: paths resolve under the data's folder
    Image.new("RGB", (48, 40), (128, 64, 32)).save(grey)
    for r in rows:
        r["corrupted_images"] = ["images/mdpo-grey.png"] * len(r["images"])
    write_jsonl(pairs / "corrupted.jsonl", rows)
    processor = load_model_and_processor(tiny_checkpoint(family), dtype="float32")[1]
    collate = _mdpo_collator(processor, family, pairs / "corrupted.jsonl", 7)
    batch = collate([{"row": 0}, {"row": 1}])
    mask = batch["completion_mask"]
    assert torch.equal(mask[:2].sum(1), mask[4:].sum(1))
    for i in (0, 1):
        assert torch.equal(batch["input_ids"][i][mask[i].bool()], batch["input_ids"][4 + i][mask[4 + i].bool()])
    own = ConversationEncoder(processor, family).encode(
        [Example(list(r["prompt"]) + list(r["chosen"]), [Image.open(grey).convert("RGB")] * len(r["images"]), [])
         for r in rows])
    n = own["pixel_values"].shape[0]
    assert torch.equal(batch["pixel_values"][-n:], own["pixel_values"])
    cropped = _mdpo_collator(processor, family, pairs / "fixed.jsonl", 7)([{"row": 0}, {"row": 1}])
    assert not torch.equal(cropped["pixel_values"][-n:], own["pixel_values"])
