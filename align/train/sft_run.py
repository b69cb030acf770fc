"""`align sft`: one or more stages of supervised fine-tuning; each stage starts from the previous one's output.

A single-stage run writes its model to `output_dir`. A multi-stage run writes stage k to
`output_dir/stages/k-NAME` and the last stage to `output_dir`. A stage that trained an adapter (LoRA) is merged
before the next stage loads it. Every stage leaves `run.json`; with `resume`, finished stages are skipped and the
current one continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from align.config import config_to_dict
from align.errors import ConfigError
from align.train.common import no_empty_output_on_failure
from align.train.run_state import check_resume, last_complete_checkpoint, start_record
from align.train.sft import AlignSFTConfig


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
    from align.config import coerce, type_hints

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
            model_path = _loadable(plan.output_dir)
    return plans[-1].output_dir


def _loadable(stage_dir: Path) -> str:
    """A folder the next stage can load: the stage's model, or its adapter merged into the base."""
    if not (stage_dir / "adapter_config.json").is_file():
        return str(stage_dir)
    merged = stage_dir / "merged"
    if not (merged / "config.json").is_file():
        from align.models.merge import merge_adapter
        from align.train.common import is_main_process, wait_for_everyone, zero3_off

        if is_main_process():  # one writer; under ZeRO-3 the merge loads whole weights
            with zero3_off():
                merge_adapter(stage_dir, merged)
        wait_for_everyone()
    return str(merged)


def train_stage(plan: StagePlan, model_path: str, resume: bool, progress: bool, n_stages: int) -> Path:
    import datasets
    import torch
    from transformers import set_seed

    from align.data.collate import ConversationCollator, ConversationEncoder
    from align.models.families import family_of
    from align.models.load import load_model_and_processor
    from align.train.common import is_main_process, prepare_deepspeed
    from align.train.progress import training_progress
    from align.train.run_config import apply_policy_and_report
    from align.train.sft import AlignSFTTrainer
    from align.train.sft_data import load_sft_data

    cfg = plan.config
    settings = config_to_dict(cfg)  # as resolved: the trainer later fills some fields in
    prepare_deepspeed(cfg.deepspeed)  # before the model loads (ZeRO-3 partitions it there) and the Trainer
    main = is_main_process()
    torch.set_flush_denormal(True)
    set_seed(cfg.seed)
    model, processor = load_model_and_processor(model_path, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation)
    family = family_of(model.config)
    policy = cfg.train or natural_policy(family)
    # Rows are checked (images, lengths, assistant turns) before anything trains or is written.
    data = load_sft_data(cfg.data, processor, family, cfg.image_root, cfg.max_length, cfg.too_long,
                         cfg.grounding_format, cfg.task_identifier, progress=progress and main)
    title = f"stage {plan.index}/{n_stages} '{plan.name}': {family}, train={policy}, {len(data)} rows"
    if data.dropped:
        title += f" ({data.dropped} too long, dropped)"
    model = apply_policy_and_report(model, family, cfg, policy, title, show=main and progress)

    trainer = AlignSFTTrainer(
        model=model,
        args=cfg,
        # `length` lets train_sampling_strategy=group_by_length batch rows of similar length (less padding).
        train_dataset=datasets.Dataset.from_dict({"row": list(range(len(data))),
                                                  "length": [s.length for s in data.spans]}),
        data_collator=ConversationCollator(ConversationEncoder(processor, family), data.load_example, data.spans),
        processing_class=processor,
        family=family,
    )
    checkpoint = last_complete_checkpoint(plan.output_dir) if resume else None
    start_record(plan.output_dir, "sft", settings)
    label = "sft" if n_stages == 1 else f"sft stage {plan.index}/{n_stages}"
    with training_progress(trainer, label, enabled=progress):
        result = trainer.train(resume_from_checkpoint=checkpoint)
    _save_final(trainer, plan.output_dir)
    if main:
        from align.train.common import write_run_json

        write_run_json(plan.output_dir, "sft", settings, {
            "complete": True, "stage": plan.index, "stage_name": plan.name, "family": family, "policy": policy,
            "base_model": model_path, "rows": len(data), "dropped_rows": data.dropped,
            "resumed_from": checkpoint, "train_loss": result.training_loss,
            "global_step": result.global_step, "metrics": result.metrics,
            "log_history": trainer.state.log_history,
        })
    return plan.output_dir


def _save_final(trainer, output_dir: Path) -> None:
    """Model (or adapter) + processor into a temporary folder, then moved into `output_dir` on the main rank.
    Every rank takes part in the saving: under ZeRO-3 each holds a shard of the weights, gathered here."""
    from align.data.io import remove_stale_temporaries
    from align.train.common import extra_trainables, keep_used_weight_conversions

    remove_stale_temporaries(output_dir / "final")  # `.final.tmp-PID` of a process killed while it saved
    tmp = output_dir / f".final.tmp-{os.getpid() if trainer.args.world_size == 1 else 'dist'}"
    keep_used_weight_conversions(trainer.model)
    trainer.save_model(str(tmp))
    zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    extra = extra_trainables(trainer.model, zero3)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        if extra:
            from safetensors.torch import save_file

            from align.models.freeze import EXTRA_WEIGHTS

            save_file(extra, str(tmp / EXTRA_WEIGHTS))
        for entry in tmp.iterdir():
            target = output_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
        tmp.rmdir()
    trainer.accelerator.wait_for_everyone()


def natural_policy(family: str) -> str:
    from align.models.families import get_family

    return get_family(family).natural_policy
