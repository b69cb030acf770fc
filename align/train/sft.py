"""`AlignSFTConfig(SFTConfig)` + `AlignSFTTrainer(SFTTrainer)`: supervised fine-tuning of any supported VLM.

TRL's SFTTrainer does the optimisation, logging, checkpointing and DeepSpeed; align supplies the batches (its
own collator: one processor call per batch, loss on assistant turns only, through any family's encoder) and, for
families where TRL's fused LM head does not fit, the log-probs from the model's own logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig, SFTTrainer

from align.errors import ConfigError
from align.train.resume import CheckpointResumeMixin

TOO_LONG = ("error", "drop")
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
class AlignSFTConfig(SFTConfig):
    """SFTConfig plus what align needs to pick the model, data and trainable parts."""

    model: str | None = field(default=None, metadata={"help": "Base checkpoint: local folder or hub id."})
    data: str | None = field(
        default=None,
        metadata={"help": "SFT data: align SFT records or LLaVA conversation JSON (file or dataset folder)."},
    )
    image_root: str | None = field(default=None, metadata={"help": "Folder relative image paths resolve under."})
    train: str | None = field(
        default=None,
        metadata={"help": "Trainable-part policy, e.g. projector, projector+llm, qformer, lora, lora+projector, "
                          "adapter, all. Default: the family's natural policy."},
    )
    stages: list[dict] = field(
        default_factory=list,
        metadata={"help": "Optional list of stages; each may set: " + ", ".join(STAGE_KEYS) +
                          ". Stage k+1 starts from stage k's output."},
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
    grounding_format: str = field(
        default="auto",
        metadata={"help": "How <ref>/<bbox> markup in the data is written: " + ", ".join(GROUNDING) +
                          " (auto: qwen for Qwen families, shikra otherwise)."},
    )
    task_identifier: str | None = field(
        default=None, metadata={"help": "MiniGPT-v2 task token prefixed to every user turn, e.g. grounding."}
    )
    too_long: str = field(
        default="error",
        metadata={"help": "Rows longer than max_length: error (default; names the row) or drop (counted)."},
    )
    # TRL defaults that are wrong on a CPU and for this trainer's data flow.
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: on when CUDA has it."})
    activation_checkpointing: bool | None = field(
        default=False, metadata={"help": "Recompute activations in backward to save memory."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the row index column."})
    report_to: Any = field(default="none", metadata={"help": "Logging integrations (tensorboard, wandb, none)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})
    dataset_kwargs: dict | None = field(
        default_factory=lambda: {"skip_prepare_dataset": True},
        metadata={"help": "align's collator tokenizes; TRL's dataset preparation is skipped."},
    )

    def __post_init__(self):
        from align.train.common import cuda_available, cuda_bf16_available, resolve_deepspeed

        if self.bf16 is None:
            self.bf16 = cuda_bf16_available() and not self.fp16
        if not cuda_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on a CPU it only warns
            # accelerate finds no backend for a CPU unless told: under torchrun it would count one process and
            # DeepSpeed's batch check fails (train_batch_size 2 != 2 * 1 * 2); with it, gloo and the real world size.
            self.use_cpu = True
        if isinstance(self.deepspeed, str):
            self.deepspeed = resolve_deepspeed(self.deepspeed)  # presets zero2 / zero3 / zero3_offload
        problems = []
        if self.too_long not in TOO_LONG:
            problems.append(f"too_long must be one of {', '.join(TOO_LONG)}, got '{self.too_long}'")
        if self.grounding_format not in GROUNDING:
            problems.append(f"grounding_format must be one of {', '.join(GROUNDING)}, got '{self.grounding_format}'")
        problems += _policy_problems(self.train, "train")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, dict):
                problems.append(f"stages[{i}] must be a mapping of stage keys")
                continue
            unknown = sorted(set(stage) - set(STAGE_KEYS))
            if unknown:
                problems.append(f"stages[{i}]: unknown key(s) {', '.join(unknown)}; valid: {', '.join(STAGE_KEYS)}")
            problems += _policy_problems(stage.get("train"), f"stages[{i}].train")
        if problems:
            raise ConfigError(problems)
        super().__post_init__()


def _policy_problems(policy: str | None, key: str) -> list[str]:
    from align.models.freeze import check_policy

    if policy is None:
        return []
    try:
        check_policy(policy)
    except ConfigError as exc:
        return [f"{key}: {exc}"]
    return []


class AlignSFTTrainer(CheckpointResumeMixin, SFTTrainer):
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
