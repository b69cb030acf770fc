"""`align sft`: one or more stages of supervised fine-tuning; each stage starts from the previous one's output.

A single-stage run writes its model to `output_dir`. A multi-stage run writes stage k to
`output_dir/stages/k-NAME` and the last stage to `output_dir`. A stage that trained an adapter (LoRA) is merged
before the next stage loads it. Every stage leaves `run.json`; with `resume`, finished stages are skipped and the
current one continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from align.errors import ConfigError
from align.resolve import config_to_dict
from align.train.run_state import check_resume, no_empty_output_on_failure
from align.train.sft.settings import AlignSFTConfig
from align.train.skeleton import TrainingRun, load_starting_model, loadable, natural_policy


@dataclasses.dataclass
class StagePlan:
    index: int
    name: str
    config: AlignSFTConfig
    output_dir: Path


def _with(config: AlignSFTConfig, **changes: Any) -> AlignSFTConfig:
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    # Deprecated TrainingArguments aliases are re-derived from their new names in __post_init__.
    values.pop("gradient_checkpointing", None)
    values.pop("gradient_checkpointing_kwargs", None)
    values.update(changes)
    return AlignSFTConfig(**values)


def _typed(stage: dict) -> dict[str, Any]:
    """A stage's overrides coerced to the config's field types (values from `key=value` arrive as strings)."""
    from align.resolve import coerce, type_hints

    hints = type_hints(AlignSFTConfig)
    typed = {}
    for key, value in stage.items():
        if key == "name":
            continue
        try:
            typed[key] = coerce(value, hints.get(key, Any))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"stage '{stage.get('name', '?')}', key '{key}': {exc}") from None
    return typed


def plan_stages(config: AlignSFTConfig) -> list[StagePlan]:
    if config.output_dir is None:
        raise ConfigError("output_dir is required (--output-dir DIR)")
    out = Path(config.output_dir)
    if not config.stages:
        return [StagePlan(1, "sft", config, out)]
    plans = []
    for i, stage in enumerate(config.stages, start=1):
        name = str(stage.get("name") or f"stage{i}")
        overrides = _typed(stage)
        last = i == len(config.stages)
        stage_out = out if last else out / "stages" / f"{i}-{name}"
        try:
            stage_config = _with(config, stages=[], output_dir=str(stage_out), **overrides)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"stages[{i - 1}] ({name}): {exc}") from None
        plans.append(StagePlan(i, name, stage_config, stage_out))
    return plans


@no_empty_output_on_failure
def run_sft(config: AlignSFTConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train every stage; returns the folder of the final model (full checkpoint or PEFT adapter)."""
    if not config.model:
        raise ConfigError("model is required (--model PATH or `model:` in the recipe)")
    plans = plan_stages(config)
    model_path: str = config.model
    for plan in plans:
        if not plan.config.data:
            raise ConfigError(f"stage {plan.index} ({plan.name}): no data (--data PATH, `data:` or the stage's data)")
        if not (resume and check_resume(plan.output_dir, config_to_dict(plan.config))):
            train_stage(plan, model_path, resume=resume, progress=progress, n_stages=len(plans))
        if plan is not plans[-1]:  # the next stage loads this one's model (an adapter merged into its base)
            model_path = loadable(plan.output_dir)
    return plans[-1].output_dir


def train_stage(plan: StagePlan, model_path: str, resume: bool, progress: bool, n_stages: int) -> Path:
    import datasets

    from align.data.collate import ConversationCollator, ConversationEncoder
    from align.models.families import FAMILIES, get_family
    from align.models.zero3_images import refuse_uncovered_image_mix
    from align.train.run_config import apply_policy_and_report
    from align.train.sft.data import load_sft_data
    from align.train.sft.trainer import AlignSFTTrainer

    cfg = plan.config
    run = TrainingRun("sft", plan.output_dir, config_to_dict(cfg), resume, progress)
    run.prepare(cfg)
    model, processor, family = load_starting_model(model_path, cfg)
    policy = cfg.train or natural_policy(family)
    # Rows are checked (images, lengths, assistant turns) before anything trains or is written.
    data = load_sft_data(cfg.data, processor, family, cfg.image_root, cfg.max_length, cfg.too_long,
                         cfg.grounding_format, cfg.task_identifier, progress=run.show)
    refuse_uncovered_image_mix(data, family)
    title = f"stage {plan.index}/{n_stages} '{plan.name}': {family}, train={policy}, {len(data)} rows"
    if data.dropped:
        title += f" ({data.dropped} too long, dropped)"
    model = apply_policy_and_report(model, family, cfg, policy, title, show=run.show)
    if cfg.flat_batches and not get_family(family).flat_batches:
        supported = ", ".join(f.name for f in FAMILIES.values() if f.flat_batches)
        raise ConfigError(f"flat_batches: family {family} does not take packed rows (supported: {supported}); set "
                          "flat_batches=false")

    trainer = AlignSFTTrainer(
        model=model,
        args=cfg,
        # `length` lets train_sampling_strategy=group_by_length batch rows of similar length (less padding).
        train_dataset=datasets.Dataset.from_dict({"row": list(range(len(data))),
                                                  "length": [s.length for s in data.spans]}),
        data_collator=ConversationCollator(ConversationEncoder(processor, family), data.load_example, data.spans,
                                           flat=cfg.flat_batches),
        processing_class=processor,
        family=family,
        # Grouped by length, a step's loss is divided by the label tokens of an average step.
        label_tokens_per_row=sum(e - s for sp in data.spans for s, e in sp.assistant) / len(data.spans),
    )
    result, checkpoint = run.train(trainer, "sft" if n_stages == 1 else f"sft stage {plan.index}/{n_stages}")
    return run.finish(trainer, {
        "stage": plan.index, "stage_name": plan.name, "family": family, "policy": policy,
        "base_model": model_path, "rows": len(data), "dropped_rows": data.dropped,
        "resumed_from": checkpoint, "train_loss": result.training_loss,
        "global_step": result.global_step, "metrics": result.metrics,
        "log_history": trainer.state.log_history,
    })
