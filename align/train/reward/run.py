"""`align reward`: train a reward model from a resolved `AlignRewardConfig`."""

from __future__ import annotations

from pathlib import Path

from align.config import config_to_dict
from align.errors import ConfigError
from align.train.common import no_empty_output_on_failure
from align.train.reward.config import AlignRewardConfig
from align.train.run_state import check_resume, last_complete_checkpoint, start_record


@no_empty_output_on_failure
def run_reward(config: AlignRewardConfig, resume: bool = False, progress: bool = True) -> Path:
    """Check every pair, train, save the reward model and `run.json` into `output_dir`; returns it."""
    import torch
    from transformers import set_seed

    from align.data.collate import ConversationEncoder
    from align.models.families import family_of
    from align.models.load import load_model_and_processor
    from align.models.scalar_head import ScalarHeadModel
    from align.train.common import is_main_process, prepare_deepspeed
    from align.train.progress import training_progress
    from align.train.reward.data import RewardCollator, load_reward_data
    from align.train.reward.prompts import resolve_reward_prompt
    from align.train.reward.trainer import RewardModelTrainer, pair_accuracy
    from align.train.run_config import apply_policy_and_report
    from align.train.sft_run import _save_final

    cfg = config
    for key in ("model", "data", "output_dir"):
        if not getattr(cfg, key):
            raise ConfigError(f"{key} is required (--{key.replace('_', '-')} or `{key}:` in the recipe)")
    out = Path(cfg.output_dir)
    settings = config_to_dict(cfg)  # as resolved: the trainers later fill some fields in
    if resume and check_resume(out, settings):
        return out  # this run, finished already
    prepare_deepspeed(cfg.deepspeed)
    main = is_main_process()
    torch.set_flush_denormal(True)
    set_seed(cfg.seed)
    backbone, processor = load_model_and_processor(cfg.model, dtype=cfg.dtype,
                                                   attn_implementation=cfg.attn_implementation)
    family = family_of(backbone.config)
    prompt = resolve_reward_prompt(cfg.reward_prompt)
    data = load_reward_data(cfg.data, processor, family, cfg.image_root, prompt, cfg.fact_captions,
                            cfg.max_length, cfg.too_long, cfg.seed)
    eval_data = None
    if cfg.eval_data:
        eval_data = load_reward_data(cfg.eval_data, processor, family, cfg.image_root, prompt, cfg.fact_captions,
                                     cfg.max_length, cfg.too_long, cfg.seed)
    title = f"reward: {family}, train={cfg.train}, {len(data)} pairs"
    backbone = apply_policy_and_report(backbone, family, cfg, cfg.train, title, show=main and progress)
    model = ScalarHeadModel(backbone, family, {
        "kind": "reward", "base_model": cfg.model, "train": cfg.train, "reward_prompt": prompt,
        "fact_captions": bool(cfg.fact_captions)})
    encoder = ConversationEncoder(processor, family)
    trainer = RewardModelTrainer(
        model=model, args=cfg,
        train_dataset=_rows(len(data), "train"),
        eval_dataset=_rows(len(eval_data), "eval") if eval_data else None,
        data_collator=RewardCollator(encoder, {"train": data, "eval": eval_data}),
        processing_class=processor,
        compute_metrics=pair_accuracy if eval_data else None,
        center_coef=cfg.center_coef,
    )
    checkpoint = last_complete_checkpoint(out) if resume else None
    start_record(out, "reward", settings)
    with training_progress(trainer, "reward", enabled=progress):
        result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = trainer.evaluate() if eval_data is not None else {}
    _save_final(trainer, out)
    if main:
        from align.train.common import write_run_json

        write_run_json(out, "reward", settings, {
            "complete": True, "family": family, "policy": cfg.train, "base_model": cfg.model, "rows": len(data),
            "dropped_rows": data.dropped, "eval_rows": len(eval_data) if eval_data else None,
            "eval_accuracy": metrics.get("eval_accuracy"), "resumed_from": checkpoint,
            "train_loss": result.training_loss, "global_step": result.global_step,
            "log_history": trainer.state.log_history,
        })
    return out


def _rows(n: int, split: str):
    import datasets

    return datasets.Dataset.from_dict({"row": list(range(n)), "split": [split] * n})
