"""`align reward`: train a reward model from a resolved `AlignRewardConfig`."""

from __future__ import annotations

from pathlib import Path

from align.train.reward.settings import AlignRewardConfig
from align.train.run_state import no_empty_output_on_failure
from align.train.skeleton import TrainingRun, load_starting_model


@no_empty_output_on_failure
def run_reward(config: AlignRewardConfig, resume: bool = False, progress: bool = True) -> Path:
    """Check every pair, train, save the reward model and `run.json` into `output_dir`; returns it."""
    from align.data.collate import ConversationEncoder
    from align.data.reward_pairs import RewardCollator, load_reward_data
    from align.data.reward_prompts import resolve_reward_prompt
    from align.models.scalar_head import ScalarHeadModel
    from align.models.zero3_images import refuse_uncovered_image_mix
    from align.train.reward.trainer import RewardModelTrainer, pair_accuracy
    from align.train.run_config import apply_policy_and_report

    cfg = config
    run = TrainingRun.begin(cfg, "reward", resume, progress)
    if run.finished:
        return run.output_dir
    run.prepare(cfg)
    backbone, processor, family = load_starting_model(cfg.model, cfg)
    prompt = resolve_reward_prompt(cfg.reward_prompt)
    data = load_reward_data(cfg.data, processor, family, cfg.image_root, prompt, cfg.fact_captions,
                            cfg.max_length, cfg.too_long, cfg.seed)
    eval_data = None
    if cfg.eval_data:
        eval_data = load_reward_data(cfg.eval_data, processor, family, cfg.image_root, prompt, cfg.fact_captions,
                                     cfg.max_length, cfg.too_long, cfg.seed)
    for checked in (data, eval_data or ()):
        refuse_uncovered_image_mix(checked, family)
    title = f"reward: {family}, train={cfg.train}, {len(data)} pairs"
    backbone = apply_policy_and_report(backbone, family, cfg, cfg.train, title, show=run.show)
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
    result, checkpoint = run.train(trainer, "reward")
    metrics = trainer.evaluate() if eval_data is not None else {}
    return run.finish(trainer, {
        "family": family, "policy": cfg.train, "base_model": cfg.model, "rows": len(data),
        "dropped_rows": data.dropped, "eval_rows": len(eval_data) if eval_data else None,
        "eval_accuracy": metrics.get("eval_accuracy"), "resumed_from": checkpoint,
        "train_loss": result.training_loss, "global_step": result.global_step,
        "log_history": trainer.state.log_history,
    })

def _rows(n: int, split: str):
    import datasets

    return datasets.Dataset.from_dict({"row": list(range(n)), "split": [split] * n})
