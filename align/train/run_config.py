"""Fields and checks every align trainer config shares (mixed in before the TRL config class).

`class AlignSFTConfig(RunFields, SFTConfig)`: the fields below override TRL's defaults where those are wrong on a
CPU or for align's data flow (bf16, activation checkpointing, unused-column removal, report_to, logging).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from align.errors import ConfigError

TOO_LONG = ("error", "drop")


@dataclass
class RunFields:
    model: str | None = field(default=None, metadata={"help": "Starting checkpoint: local folder or hub id."})
    data: str | None = field(default=None, metadata={"help": "Training records (file or dataset folder)."})
    image_root: str | None = field(default=None, metadata={"help": "Folder relative image paths resolve under."})
    train: str | None = field(
        default=None,
        metadata={"help": "Trainable-part policy, e.g. projector, projector+llm, qformer, lora, lora+projector, "
                          "adapter, all. Default: the family's natural policy."},
    )
    dtype: str = field(default="float32", metadata={"help": "Weights dtype: float32, bfloat16, float16 or auto."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa or flash_attention_2."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target: str = field(
        default="all-linear", metadata={"help": "LoRA targets: all-linear (the LLM's linear layers) or a regex."}
    )
    lora_vision: bool = field(default=False, metadata={"help": "Also put LoRA on the vision tower."})
    adapter_len: int = field(default=10, metadata={"help": "LLaMA-Adapter prompt length."})
    adapter_layers: int = field(
        default=30, metadata={"help": "LLaMA-Adapter: top decoder layers adapted (capped at the model's depth)."}
    )
    too_long: str = field(
        default="error",
        metadata={"help": "Rows longer than max_length: error (default; names the row) or drop (counted)."},
    )
    # TRL defaults that are wrong on a CPU and for align's data flow.
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: on when CUDA has it."})
    activation_checkpointing: bool | None = field(
        default=False, metadata={"help": "Recompute activations in backward to save memory."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the row index column."})
    report_to: Any = field(default="none", metadata={"help": "Logging integrations (tensorboard, wandb, none)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})

    def apply_device_defaults(self) -> None:
        """Before TrainingArguments' own __post_init__: bf16 where CUDA has it, CPU settings, DeepSpeed presets."""
        from align.train.common import cuda_available, cuda_bf16_available, resolve_deepspeed

        if self.bf16 is None:
            self.bf16 = cuda_bf16_available() and not self.fp16
        launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # `accelerate launch`'s mixed_precision
        if launcher in ("bf16", "fp16") and not getattr(self, launcher):
            why = "this machine has no CUDA" if not cuda_available() else f"this run sets {launcher}=false"
            raise ConfigError(f"the accelerate config sets mixed_precision: {launcher} but {why}; set "
                              f"mixed_precision: 'no' there (align trains in bf16 wherever the GPU has it; `bf16` "
                              "sets it explicitly)")
        if not cuda_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on a CPU it only warns
            # accelerate finds no backend for a CPU unless told: under torchrun it would count one process and
            # DeepSpeed's batch check fails (train_batch_size 2 != 2 * 1 * 2); with it, gloo and the real world size.
            self.use_cpu = True
        if isinstance(self.deepspeed, str):
            self.deepspeed = resolve_deepspeed(self.deepspeed)  # presets zero2 / zero3 / zero3_offload

    def common_problems(self, ranges=None) -> list[str]:
        """Problems every trainer config checks: numeric ranges (align.ranges; `ranges` replaces the default
        TRAINING_RANGES), too_long, the train policy."""
        from align.ranges import TRAINING_RANGES, range_problems

        problems = range_problems(self, TRAINING_RANGES if ranges is None else ranges)
        if self.too_long not in TOO_LONG:
            problems.append(f"too_long must be one of {', '.join(TOO_LONG)}, got '{self.too_long}'")
        problems += policy_problems(self.train, "train")
        return problems


def policy_problems(policy: str | None, key: str) -> list[str]:
    from align.models.freeze import check_policy

    if policy is None:
        return []
    try:
        check_policy(policy)
    except ConfigError as exc:
        return [f"{key}: {exc}"]
    return []


def apply_policy_and_report(model, family: str, cfg: RunFields, policy: str, title: str, show: bool, check=None):
    """Freeze/wrap the model for `policy` and, on the main process, print the trainable-parts table. `check(model)`
    runs before the table, so settings that depend on what trains are refused before anything is printed."""
    from rich.console import Console
    from transformers import set_seed

    from align.models.freeze import AdapterSettings, LoraSettings, apply_train_policy, trainable_parts_table

    # New weights (LoRA's A matrices, an adapter's prompts) are drawn from the run's seed, whatever loading the model
    # drew before: ZeRO-3's partitioned loading draws differently from a plain one, and the runs must start alike.
    set_seed(cfg.seed)
    lora = LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target=cfg.lora_target,
                        include_vision=cfg.lora_vision)
    adapter = AdapterSettings(prompt_length=cfg.adapter_len, layers=cfg.adapter_layers)
    model = apply_train_policy(model, family, policy, lora=lora, adapter=adapter)
    if check is not None:
        check(model)
    if show:
        table = trainable_parts_table(model, family)
        table.title = title
        Console(stderr=True).print(table)
    return model


@dataclass
class RewardFields:
    """The models and rewards of an RL run (`align ppo`, `align grpo`); mixed in before RunFields. The config
    class also has `reward_weights` (PPO's own field, TRL's in GRPO)."""

    ref_model: str | None = field(
        default=None, metadata={"help": "Reference checkpoint; default: the adapter-disabled policy (LoRA) or a "
                                        "frozen copy of `model`."})
    reward_model: str | None = field(
        default=None, metadata={"help": "Reward model folder written by `align reward` (its score joins the "
                                        "reward funcs' with weight reward_model_weight)."})
    reward_model_weight: float = field(default=1.0, metadata={"help": "Weight of the reward model's score."})
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={"help": "Python callables by dotted path ('pkg.mod.func' or 'pkg.mod:func') called as "
                          "f(prompts=, completions=, **row_columns) -> one float per completion (TRL's reward "
                          "function signature). Built in: align.data.shapes_rewards:count, color, position, "
                          "existence, grounding_iou, answer_format; align.eval.shapes_chair:claim_reward."})
    fact_captions: str | None = field(
        default=None, metadata={"help": "Fact-RLHF captions file, needed when the reward model was trained with "
                                        "one; they join its reward prompt when it scores."})

    def reward_problems(self) -> list[str]:
        problems = []
        if not self.reward_model and not self.reward_funcs:
            problems.append("no reward: set reward_model (a folder from `align reward`) and/or reward_funcs "
                            "(dotted paths of Python callables)")
        weights = getattr(self, "reward_weights", None)
        if weights is not None and len(weights) != len(self.reward_funcs):
            problems.append(f"reward_weights has {len(weights)} entries for {len(self.reward_funcs)} reward_funcs "
                            "(the reward model's weight is reward_model_weight)")
        return problems
