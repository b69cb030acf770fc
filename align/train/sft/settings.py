"""`AlignSFTConfig(SFTConfig)`: TRL's SFT settings plus the model, data, trainable parts and stages of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from align.errors import ConfigError
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
    flat_batches: bool = field(
        default=False,
        metadata={"help": "Concatenate each batch's rows into one, positions restarting per row: no compute on "
                          "padding (families that support it: llava, llava_next). TRL's own padding_free does not "
                          "take image data."},
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

