"""`align dpo`: one preference-optimisation run (any variant) from a resolved `AlignDPOConfig`."""

from __future__ import annotations

from pathlib import Path

from align.config import config_to_dict
from align.errors import ConfigError
from align.train.common import no_empty_output_on_failure
from align.train.dpo.config import AlignDPOConfig
from align.train.run_state import check_resume, last_complete_checkpoint, start_record


@no_empty_output_on_failure
def run_dpo(config: AlignDPOConfig, resume: bool = False, progress: bool = True) -> Path:
    """Check every row, train, save the model (or adapter) and `run.json` into `output_dir`; returns it."""
    import datasets
    import torch
    from transformers import set_seed

    from align.data.collate import ConversationEncoder
    from align.models.families import family_of
    from align.models.load import load_model_and_processor
    from align.train.common import is_main_process, prepare_deepspeed
    from align.train.dpo.data import PreferenceCollator, load_preference_data, povid_noise
    from align.train.dpo.trainer import AlignDPOTrainer
    from align.train.dpo.variants import get_variant
    from align.train.progress import training_progress
    from align.train.run_config import apply_policy_and_report
    from align.train.sft_run import _save_final, natural_policy

    cfg = config
    if not cfg.model:
        raise ConfigError("model is required (--model PATH or `model:` in the recipe)")
    if not cfg.data:
        raise ConfigError("data is required (--data PATH or `data:` in the recipe)")
    if cfg.output_dir is None:
        raise ConfigError("output_dir is required (--output-dir DIR)")
    variant = get_variant(cfg.variant)
    out = Path(cfg.output_dir)
    settings = config_to_dict(cfg)  # as resolved: the trainers later fill some fields in
    if resume and check_resume(out, settings):
        return out  # this run, finished already
    prepare_deepspeed(cfg.deepspeed)
    main = is_main_process()
    torch.set_flush_denormal(True)
    set_seed(cfg.seed)
    model, processor = load_model_and_processor(cfg.model, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation)
    family = family_of(model.config)
    policy = cfg.train or natural_policy(family)
    # Rows are checked (contract, spans, lengths) before anything trains or is written.
    data = load_preference_data(cfg.data, processor, family, cfg.image_root, cfg.max_length, cfg.too_long,
                                needs_spans=variant.needs_spans, score_fields=variant.score_fields(cfg),
                                needs_images=variant.corrupted_chosen or variant.noisy_chosen,
                                phrase_pairs=variant.phrase_pairs, corrupted_images=variant.corrupted_chosen)
    kl = None
    if variant.kl_samples and cfg.kl_data and cfg.halva_alpha > 0:
        from align.train.sft_data import load_sft_data

        kl = load_sft_data(cfg.kl_data, processor, family, cfg.image_root, cfg.max_length, cfg.too_long,
                           progress=False)
    title = f"dpo --variant {cfg.variant}: {family}, train={policy}, {len(data)} pairs"
    if data.dropped:
        title += f" ({data.dropped} too long, dropped)"
    model = apply_policy_and_report(model, family, cfg, policy, title, show=main and progress)
    from peft import PeftModel

    ref_model = None
    # (TRL would load one itself for full fine-tuning; halva with halva_alpha=0 loads it without using it.)
    if cfg.ref_model or (not isinstance(model, PeftModel) and not cfg.precompute_ref_log_probs):
        # Full or partial fine-tuning: a separate frozen reference (TRL's own loader knows fewer families).
        ref_model = load_model_and_processor(cfg.ref_model or cfg.model, dtype=cfg.dtype,
                                             attn_implementation=cfg.attn_implementation)[0]
        ref_model.requires_grad_(False).eval()
    ref_cache = None
    if cfg.precompute_ref_log_probs:
        from align.train.dpo.ref_cache import RefCache, data_fingerprint, default_directory

        ref_cache = RefCache(Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else default_directory(cfg.data),
                             data_fingerprint(cfg.data, data, processor), _cache_settings(cfg, variant))

    trainer = AlignDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=cfg,
        # `length` lets train_sampling_strategy=group_by_length batch pairs of similar length (less padding).
        train_dataset=datasets.Dataset.from_dict({"row": list(range(len(data))), "length": [
            max(la.chosen.length, la.rejected.length) for la in data.layouts]}),
        data_collator=PreferenceCollator(ConversationEncoder(processor, family), data,
                                         gamma=cfg.ddpo_gamma if variant.token_weights else None,
                                         scores=variant.score_fields(cfg),
                                         corruption_seed=cfg.seed if variant.corrupted_chosen else None,
                                         phrase_ids=variant.phrase_pairs,
                                         noise=povid_noise(cfg.povid_noise_step) if variant.noisy_chosen else None,
                                         noise_seed=cfg.seed, kl=kl),
        processing_class=processor,
        family=family,
        ref_cache=ref_cache,
        show_progress=progress,
    )
    checkpoint = last_complete_checkpoint(out) if resume else None
    start_record(out, "dpo", settings)
    with training_progress(trainer, f"dpo {cfg.variant}", enabled=progress):
        result = trainer.train(resume_from_checkpoint=checkpoint)
    _save_final(trainer, out)
    if main:
        from align.train.common import write_run_json

        write_run_json(out, "dpo", settings, {
            "complete": True, "variant": cfg.variant, "family": family, "policy": policy,
            "base_model": cfg.model, "reference": _reference_name(cfg, model, ref_model),
            "reference_cache": trainer.ref_cache_status, "rows": len(data), "dropped_rows": data.dropped,
            "kl_samples": len(kl) if kl is not None else None,
            "resumed_from": checkpoint, "train_loss": result.training_loss, "global_step": result.global_step,
            "metrics": result.metrics, "log_history": trainer.state.log_history,
        })
    return out


def _reference_name(cfg: AlignDPOConfig, model, ref_model) -> str:
    from peft import PeftModel

    if cfg.precompute_ref_log_probs:
        return f"cached reference log-probs of {cfg.ref_model or cfg.model}"
    if ref_model is not None:
        return cfg.ref_model or cfg.model
    return "adapter-disabled policy" if isinstance(model, PeftModel) else f"{cfg.model} (starting weights)"


def _cache_settings(cfg: AlignDPOConfig, variant) -> dict:
    """What besides the data and the reference weights changes the cached values."""
    settings = {"variant": cfg.variant, "dtype": str(cfg.dtype), "bf16": bool(cfg.bf16), "fp16": bool(cfg.fp16),
                "ld_alpha": cfg.ld_alpha}
    if variant.token_weights:
        settings.update(ddpo_gamma=cfg.ddpo_gamma, ddpo_average=cfg.ddpo_average)
    if variant.corrupted_chosen or variant.noisy_chosen:
        settings["seed"] = cfg.seed
    if variant.noisy_chosen:
        settings["povid_noise_step"] = cfg.povid_noise_step
    return settings
