"""`align dpo`: one preference-optimisation run (any variant) from a resolved `AlignDPOConfig`."""

from __future__ import annotations

from pathlib import Path

from align.train.dpo.settings import AlignDPOConfig
from align.train.run_state import no_empty_output_on_failure
from align.train.skeleton import TrainingRun, load_starting_model, natural_policy


@no_empty_output_on_failure
def run_dpo(config: AlignDPOConfig, resume: bool = False, progress: bool = True) -> Path:
    """Check every row, train, save the model (or adapter) and `run.json` into `output_dir`; returns it."""
    import datasets
    from peft import PeftModel

    from align.data.collate import ConversationEncoder
    from align.models.zero3_images import refuse_uncovered_image_mix
    from align.train.dpo.data import PreferenceCollator, load_preference_data
    from align.train.dpo.layouts import resolve_layouts
    from align.train.dpo.trainer import AlignDPOTrainer
    from align.train.dpo.variants import get_variant
    from align.train.run_config import apply_policy_and_report

    cfg = config
    run = TrainingRun.begin(cfg, "dpo", resume, progress)
    variant = get_variant(cfg.variant)
    if run.finished:
        return run.output_dir
    run.prepare(cfg)
    model, processor, family = load_starting_model(cfg.model, cfg)
    policy = cfg.train or natural_policy(family)
    # Rows are checked (contract, spans, scores, lengths) before anything trains or is written.
    data = load_preference_data(cfg.data, processor, family, cfg.image_root, cfg.max_length, cfg.too_long,
                                **variant.data_options(cfg))
    refuse_uncovered_image_mix(data, family)
    options = variant.collator_options(cfg, processor, family)  # reads (and checks) e.g. halva's kl_data
    title = f"dpo --variant {cfg.variant}: {family}, train={policy}, {len(data)} pairs"
    if data.dropped:
        title += f" ({data.dropped} too long, dropped)"
    resolved = {}  # the shared layouts depend on what trains; refused before the parts table is printed
    model = apply_policy_and_report(model, family, cfg, policy, title, show=run.show,
                                    check=lambda m: resolved.update(layouts=resolve_layouts(cfg, family, variant, m)))
    layouts, layout_record = resolved["layouts"]
    collator = PreferenceCollator(ConversationEncoder(processor, family), data, **options, layouts=layouts)

    ref_model = None
    # (TRL would load one itself for full fine-tuning; a variant that never reads it loads it without using it.)
    if cfg.ref_model or (not isinstance(model, PeftModel) and not cfg.precompute_ref_log_probs):
        # Full or partial fine-tuning: a separate frozen reference (TRL's own loader knows fewer families).
        ref_model = load_starting_model(cfg.ref_model or cfg.model, cfg)[0]
        ref_model.requires_grad_(False).eval()
    ref_cache = None
    if cfg.precompute_ref_log_probs:
        from align.train.dpo.ref_cache import RefCache, cache_settings, data_fingerprint, default_directory

        ref_cache = RefCache(Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else default_directory(cfg.data),
                             data_fingerprint(cfg.data, data, processor), cache_settings(cfg, variant))

    trainer = AlignDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=cfg,
        # `length` lets train_sampling_strategy=group_by_length batch pairs of similar length (less padding).
        train_dataset=datasets.Dataset.from_dict({"row": list(range(len(data))), "length": [
            max(la.chosen.length, la.rejected.length) for la in data.layouts]}),
        data_collator=collator,
        processing_class=processor,
        family=family,
        ref_cache=ref_cache,
        show_progress=progress,
    )
    result, checkpoint = run.train(trainer, f"dpo {cfg.variant}")
    return run.finish(trainer, {
        "variant": cfg.variant, "family": family, "policy": policy,
        "base_model": cfg.model, "reference": _reference_name(cfg, model, ref_model),
        "reference_cache": trainer.ref_cache_status, "layouts": layout_record, "rows": len(data),
        "dropped_rows": data.dropped,
        "kl_samples": len(collator.kl) if collator.kl is not None else None,
        "resumed_from": checkpoint, "train_loss": result.training_loss, "global_step": result.global_step,
        "metrics": result.metrics, "log_history": trainer.state.log_history,
    })


def _reference_name(cfg: AlignDPOConfig, model, ref_model) -> str:
    from peft import PeftModel

    if cfg.precompute_ref_log_probs:
        return f"cached reference log-probs of {cfg.ref_model or cfg.model}"
    if ref_model is not None:
        return cfg.ref_model or cfg.model
    return "adapter-disabled policy" if isinstance(model, PeftModel) else f"{cfg.model} (starting weights)"
