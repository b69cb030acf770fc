"""`align grpo`: group-relative policy optimisation from a resolved `AlignGRPOConfig`."""

from __future__ import annotations

from pathlib import Path

from align.train.grpo.settings import AlignGRPOConfig
from align.train.run_state import no_empty_output_on_failure
from align.train.skeleton import TrainingRun, load_starting_model, loadable


@no_empty_output_on_failure
def run_grpo(config: AlignGRPOConfig, resume: bool = False, progress: bool = True) -> Path:
    """Load the policy (and a reference where beta > 0 needs one, and a reward model where asked); train; save the
    policy and `run.json` into `output_dir`; returns it."""
    import datasets
    from peft import PeftModel

    from align.data.collate import ConversationEncoder
    from align.data.reward_prompts import read_fact_captions
    from align.models.zero3_images import refuse_uncovered_image_mix
    from align.train.grpo.trainer import AlignGRPOTrainer
    from align.train.prompts import check_prompt_lengths, load_prompt_data
    from align.train.rewards import check_reward_columns, load_reward_funcs, load_reward_model
    from align.train.run_config import apply_policy_and_report

    cfg = config
    run = TrainingRun.begin(cfg, "grpo", resume, progress)
    if run.finished:
        return run.output_dir
    reward_funcs = load_reward_funcs(cfg.reward_funcs)  # before anything loads: a bad path fails at once
    prompts = load_prompt_data(cfg.data, cfg.image_root)
    check_reward_columns(reward_funcs, prompts.records, prompts.origins)
    fact_captions = read_fact_captions(cfg.fact_captions) if cfg.fact_captions else None
    run.prepare(cfg)
    start = loadable(Path(cfg.model)) if Path(cfg.model).is_dir() else cfg.model
    policy, processor, family = load_starting_model(start, cfg)
    refuse_uncovered_image_mix(prompts, family)
    reward_model = load_reward_model(cfg.reward_model, family, fact_captions, cfg.dtype) if cfg.reward_model else None
    title = f"grpo: {family}, train={cfg.train}, {len(prompts)} prompts x {cfg.num_generations} answers"
    policy = apply_policy_and_report(policy, family, cfg, cfg.train, title, show=run.show)
    ref_model = None
    if cfg.beta != 0.0 and (cfg.ref_model or not isinstance(policy, PeftModel)):
        ref_model = load_starting_model(cfg.ref_model or start, cfg)[0]
    encoder = ConversationEncoder(processor, family)
    check_prompt_lengths(prompts, encoder, cfg.max_prompt_length, run.show)
    trainer = AlignGRPOTrainer(
        model=policy, args=cfg, train_dataset=datasets.Dataset.from_dict({"row": list(range(len(prompts)))}),
        prompts=prompts, encoder=encoder, processing_class=processor, reward_funcs=reward_funcs,
        reward_model=reward_model, ref_model=ref_model, fact_captions=fact_captions, show_progress=run.show,
    )
    result, checkpoint = run.train(trainer, "grpo")
    steps = max(result.global_step, 1)
    return run.finish(trainer, {
        "family": family, "policy": cfg.train, "base_model": cfg.model,
        "reference": None if cfg.beta == 0.0 else
        cfg.ref_model or ("adapter-disabled policy" if ref_model is None else start),
        "reward_model": cfg.reward_model, "reward_funcs": list(cfg.reward_funcs), "prompts": len(prompts),
        "resumed_from": checkpoint, "global_step": result.global_step,
        "seconds_per_step": result.metrics.get("train_runtime", 0.0) / steps,
        "reward_curve": trainer.reward_curve, "rollout_seconds": trainer.rollout_seconds,
        "metrics": result.metrics, "log_history": trainer.state.log_history,
    })
