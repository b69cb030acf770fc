"""`AlignSFTConfig(SFTConfig)` + `AlignSFTTrainer(SFTTrainer)`: supervised fine-tuning of any supported VLM.

TRL's SFTTrainer does the optimisation, logging, checkpointing and DeepSpeed; align supplies the batches (its
own collator: one processor call per batch, loss on assistant turns only, through any family's encoder) and, for
families where TRL's fused LM head does not fit, the log-probs from the model's own logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig, SFTTrainer

from align.errors import ConfigError
from align.train.guards import FiniteGuardMixin
from align.train.resume import CheckpointResumeMixin
from align.train.run_config import RunFields, policy_problems

GROUNDING = ("auto", "shikra", "qwen", "minigptv2", "ferret", "none")

# Keys a stage may set; everything else comes from the top level of the recipe.
STAGE_KEYS = {
    "name": "stage name (used for its output folder)",
    "train": "trainable-part policy of this stage",
    "data": "SFT data of this stage",
    "learning_rate": "peak learning rate",
    "num_train_epochs": "epochs",
    "max_steps": "optimizer steps (overrides epochs when > 0)",
    "per_device_train_batch_size": "batch size per device",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "warmup_steps": "warm-up steps (a float below 1 is a share of all steps)",
    "weight_decay": "AdamW weight decay",
    "max_length": "longest sequence in tokens",
    "task_identifier": "MiniGPT-v2 task token prefixed to user turns",
    "grounding_format": "box convention",
}


@dataclass
class AlignSFTConfig(RunFields, SFTConfig):
    """SFTConfig plus what align needs to pick the model, data and trainable parts (shared fields: RunFields)."""

    stages: list[dict] = field(
        default_factory=list,
        metadata={"help": "Optional list of stages; each may set: " + ", ".join(STAGE_KEYS) +
                          ". Stage k+1 starts from stage k's output."},
    )
    grounding_format: str = field(
        default="auto",
        metadata={"help": "How <ref>/<bbox> markup in the data is written: " + ", ".join(GROUNDING) +
                          " (auto: qwen for Qwen families, shikra otherwise)."},
    )
    task_identifier: str | None = field(
        default=None, metadata={"help": "MiniGPT-v2 task token prefixed to every user turn, e.g. grounding."}
    )
    dataset_kwargs: dict | None = field(
        default_factory=lambda: {"skip_prepare_dataset": True},
        metadata={"help": "align's collator tokenizes; TRL's dataset preparation is skipped."},
    )

    def __post_init__(self):
        self.apply_device_defaults()
        problems = self.common_problems()
        if self.grounding_format not in GROUNDING:
            problems.append(f"grounding_format must be one of {', '.join(GROUNDING)}, got '{self.grounding_format}'")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, dict):
                problems.append(f"stages[{i}] must be a mapping of stage keys")
                continue
            unknown = sorted(set(stage) - set(STAGE_KEYS))
            if unknown:
                problems.append(f"stages[{i}]: unknown key(s) {', '.join(unknown)}; valid: {', '.join(STAGE_KEYS)}")
            problems += policy_problems(stage.get("train"), f"stages[{i}].train")
        if problems:
            raise ConfigError(problems)
        super().__post_init__()


class AlignSFTTrainer(FiniteGuardMixin, CheckpointResumeMixin, SFTTrainer):
    """SFTTrainer with align's collator; the only override swaps the LM head where TRL's fused one does not fit."""

    def __init__(self, *args, family: str, **kwargs):
        super().__init__(*args, **kwargs)
        from peft import PeftModel

        from align.models.families import get_family
        from align.models.lm_head import add_logits_log_probs_head

        self.family = family
        base = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        if not get_family(family).fused_lm_head:
            # TRL patched `forward` with its fused head in __init__; replace it with the logits-based one.
            add_logits_log_probs_head(base, outputs=("log_probs", "entropy", "is_top1"))
        if isinstance(self.model, PeftModel) and "forward" in vars(self.model.base_model):
            # PEFT's adaption-prompt wrapper copied the model's forward when it was built, before the LM head was
            # patched; point it at the patched one or `fused_lm_head` is silently ignored.
            self.model.base_model.forward = base.forward
