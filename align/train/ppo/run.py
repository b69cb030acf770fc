"""`align ppo`: PPO with a critic from a resolved `AlignPPOConfig`."""

from __future__ import annotations

from pathlib import Path

from align.errors import ModelError
from align.train.ppo.settings import AlignPPOConfig
from align.train.run_state import no_empty_output_on_failure
from align.train.skeleton import TrainingRun, load_starting_model, loadable


@no_empty_output_on_failure
def run_ppo(config: AlignPPOConfig, resume: bool = False, progress: bool = True) -> Path:
    """Load policy, reference, reward model and critic; train; save the policy (and its critic under
    value_model/) and `run.json` into `output_dir`; returns it."""
    import datasets
    from peft import PeftModel

    from align.data.collate import ConversationEncoder
    from align.data.reward_prompts import read_fact_captions
    from align.models.zero3_images import refuse_uncovered_image_mix
    from align.train.ppo.trainer import ActorCritic, AlignPPOTrainer
    from align.train.prompts import check_prompt_lengths, load_prompt_data
    from align.train.rewards import load_reward_funcs, load_reward_model
    from align.train.run_config import apply_policy_and_report

    cfg = config
    run = TrainingRun.begin(cfg, "ppo", resume, progress)
    if run.finished:
        return run.output_dir
    reward_funcs = load_reward_funcs(cfg.reward_funcs)  # before anything loads: a bad path fails at once
    prompts = load_prompt_data(cfg.data, cfg.image_root)
    fact_captions = read_fact_captions(cfg.fact_captions) if cfg.fact_captions else None
    run.prepare(cfg)
    start = loadable(Path(cfg.model)) if Path(cfg.model).is_dir() else cfg.model
    policy, processor, family = load_starting_model(start, cfg)
    refuse_uncovered_image_mix(prompts, family)
    reward_model = load_reward_model(cfg.reward_model, family, fact_captions, cfg.dtype) if cfg.reward_model else None
    title = f"ppo: {family}, train={cfg.train}, {len(prompts)} prompts"
    policy = apply_policy_and_report(policy, family, cfg, cfg.train, title, show=run.show)

    ref_model = None
    if cfg.ref_model or not isinstance(policy, PeftModel):
        ref_model = load_starting_model(cfg.ref_model or start, cfg)[0]
    check_prompt_lengths(prompts, ConversationEncoder(processor, family), cfg.max_prompt_length, run.show)
    critic = _critic(cfg, family, start)
    trainer = AlignPPOTrainer(
        model=ActorCritic(policy, critic), args=cfg,
        train_dataset=datasets.Dataset.from_dict({"row": list(range(len(prompts)))}),
        prompts=prompts, encoder=ConversationEncoder(processor, family), processing_class=processor,
        reward_model=reward_model, reward_funcs=reward_funcs, reward_weights=cfg.reward_weights,
        ref_model=ref_model, fact_captions=fact_captions,
    )
    result, checkpoint = run.train(trainer, "ppo")
    steps = max(result.global_step, 1)
    return run.finish(trainer, {
        "family": family, "policy": cfg.train, "base_model": cfg.model,
        "reference": cfg.ref_model or ("adapter-disabled policy" if ref_model is None else start),
        "reward_model": cfg.reward_model, "reward_funcs": list(cfg.reward_funcs),
        "value_model_init": cfg.value_model or cfg.reward_model or cfg.model, "prompts": len(prompts),
        "resumed_from": checkpoint, "global_step": result.global_step,
        "seconds_per_step": result.metrics.get("train_runtime", 0.0) / steps,
        "reward_curve": trainer.reward_curve, "rollout_seconds": trainer.rollout_seconds,
        "metrics": result.metrics, "log_history": trainer.state.log_history,
    })

def _critic(cfg: AlignPPOConfig, family: str, start: str):
    """The value model: the reward model's backbone (or `value_model`, or the policy's start) with a fresh zero
    head and its own trainable parts (`value_train`, LoRA by default)."""
    from align.models.freeze import LoraSettings, apply_train_policy
    from align.models.load import load_model_and_processor
    from align.models.scalar_head import ScalarHeadModel, is_scalar_head_folder, load_scalar_head_model

    source = cfg.value_model or cfg.reward_model or start
    if is_scalar_head_folder(source):
        critic = load_scalar_head_model(source, dtype=cfg.dtype, head=False)[0]
        critic.info = {"kind": "value", "initialised_from": str(source)}
    else:
        backbone = load_model_and_processor(source, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation)[0]
        critic = ScalarHeadModel(backbone, family, {"kind": "value", "initialised_from": str(source)})
    if critic.family != family:
        raise ModelError(f"value model {source} is a {critic.family} model; the policy is {family}")
    lora = LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target=cfg.lora_target,
                        include_vision=cfg.lora_vision)
    from transformers import set_seed

    set_seed(cfg.seed + 1)  # the critic's new weights, like the policy's, whatever loading drew (ZeRO-3 or not)
    critic.backbone = apply_train_policy(critic.backbone, family, cfg.value_train, lora=lora)
    critic.info["base_model"] = str(source)
    critic.info["train"] = cfg.value_train
    return critic
